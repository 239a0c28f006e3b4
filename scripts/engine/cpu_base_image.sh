#!/usr/bin/env bash
# Build the CPU variant's base image (Debian bookworm minbase + Python 3.11) locally, with no registry:
# debootstrap a root filesystem from a Debian mirror and import it into the container engine.
#
#   sudo bash scripts/engine/cpu_base_image.sh            # -> gsm8k-posttrain/cpu-base:bookworm (docker or podman)
#   CPU_BASE_IMAGE=my/base:tag ENGINE=podman sudo -E bash scripts/engine/cpu_base_image.sh
#   SOURCE=registry bash scripts/engine/cpu_base_image.sh   # a laptop with Docker (macOS too): from Docker Hub
#
# docker-compose.cpu.yml builds every image FROM it (build arg BASE_IMAGE). Its Python 3.11 is the one the CPU
# locks (services/*/requirements-cpu.lock, services/mlflow/requirements.lock) are resolved for.
# SOURCE=debootstrap (the default where debootstrap is installed): needs root and a Debian mirror (MIRROR;
# default: the first one apt on this machine uses, else deb.debian.org); no registry. About two minutes.
# SOURCE=registry (the default elsewhere): `docker build` from Docker Hub's debian:bookworm-slim, the same
# packages added with apt. Skips the work when the engine already has the image (FORCE=1 rebuilds).
set -euo pipefail

CPU_BASE_IMAGE=${CPU_BASE_IMAGE:-gsm8k-posttrain/cpu-base:bookworm}
SUITE=${SUITE:-bookworm}
ENGINE=${ENGINE:-$(command -v docker >/dev/null && docker info >/dev/null 2>&1 && echo docker || echo podman)}
# What the images need from Debian: Python with venv, TLS roots for pip/HF, ps/pgrep for Ray and the tests;
# for vLLM's CPU build, libnuma (its _C extension links it) and a C++ compiler with Python's headers (torch.compile
# builds some of its ops with inductor on CPU even in eager mode, e.g. vllm/v1/sample/ops/logprobs.py).
PACKAGES=${PACKAGES:-python3,python3-venv,python3-dev,ca-certificates,procps,libnuma1,g++}

die() {
    echo "cpu_base_image.sh: $*" >&2
    exit 2
}

# The image records its package list (label), so an image built from another list is rebuilt, not kept.
LABEL="gsm8k-posttrain.packages=${PACKAGES}"
built=$("${ENGINE}" image inspect --format '{{ index .Config.Labels "gsm8k-posttrain.packages" }}' "${CPU_BASE_IMAGE}" \
    2>/dev/null || true)
if [[ "${FORCE:-0}" != 1 && "${built}" == "${PACKAGES}" ]]; then
    echo "cpu_base_image.sh: ${CPU_BASE_IMAGE} already in ${ENGINE} (FORCE=1 rebuilds)"
    exit 0
fi
SOURCE=${SOURCE:-$(command -v debootstrap >/dev/null && echo debootstrap || echo registry)}
if [[ "${SOURCE}" == registry ]]; then
    echo "cpu_base_image.sh: debian:bookworm-slim + ${PACKAGES//,/ } from Docker Hub"
    "${ENGINE}" build -t "${CPU_BASE_IMAGE}" - <<DOCKERFILE
FROM docker.io/library/debian:bookworm-slim
LABEL ${LABEL}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES//,/ } \\
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["bash"]
DOCKERFILE
    exit 0
fi
[[ "$(id -u)" == 0 ]] || die "debootstrap needs root: run it with sudo (or SOURCE=registry)"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap (or SOURCE=registry)"

if [[ -z "${MIRROR:-}" ]]; then
    MIRROR=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
        grep -oE 'https?://[^ ]+' | head -n1 || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

root=$(mktemp -d)
trap 'rm -rf "${root}"' EXIT
echo "cpu_base_image.sh: debootstrap ${SUITE} minbase + ${PACKAGES} from ${MIRROR}"
debootstrap --variant=minbase --include="${PACKAGES}" "${SUITE}" "${root}" "${MIRROR}" >"${root}.log" 2>&1 ||
    { tail -n 30 "${root}.log" >&2; die "debootstrap failed (log above)"; }
rm -f "${root}.log"
# Smaller image: no apt lists or caches (a Dockerfile that needs apt runs apt-get update itself).
rm -rf "${root}"/var/lib/apt/lists/* "${root}"/var/cache/apt/*.bin "${root}"/var/cache/apt/archives/*.deb
tar --numeric-owner -C "${root}" -c . |
    "${ENGINE}" import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' --change "LABEL ${LABEL}" - \
        "${CPU_BASE_IMAGE}" >/dev/null
echo "cpu_base_image.sh: imported ${CPU_BASE_IMAGE} into ${ENGINE}"
