#!/usr/bin/env bash
# The CPU variant's air-gapped base image (Debian bookworm minbase + Python 3.11), built with no registry:
# debootstrap a root filesystem from a Debian mirror and import it into the container engine.
#
#   bash scripts/engine/cpu_base_image.sh          # as root -> gsm8k-posttrain/cpu-base:bookworm (docker or podman)
#   CPU_BASE_IMAGE=my/base:tag ENGINE=podman bash scripts/engine/cpu_base_image.sh
#
# By default docker-compose.cpu.yml builds FROM Docker Hub's python:3.11-slim-bookworm; with
# CPU_BASE_IMAGE=gsm8k-posttrain/cpu-base:bookworm in .env (or the environment) it builds FROM this image instead,
# for machines without a registry (docs/cpu.md). Its Python 3.11 is the one the CPU locks
# (services/*/requirements-cpu.lock, services/mlflow/requirements.lock) are resolved for, and it holds every
# package docker-compose.cpu.yml's OS_PACKAGES lists, so the images' apt step (services/os_packages.sh) skips and
# the build stays offline. Needs root and a Debian mirror (MIRROR; default: the first one apt on this machine
# uses, else deb.debian.org); about two minutes. Skips the work when the engine already has the image built from
# the same package list (FORCE=1 rebuilds).
set -euo pipefail

CPU_BASE_IMAGE=${CPU_BASE_IMAGE:-gsm8k-posttrain/cpu-base:bookworm}
SUITE=${SUITE:-bookworm}
ENGINE=${ENGINE:-$(command -v docker >/dev/null && docker info >/dev/null 2>&1 && echo docker || echo podman)}
# What the images need from Debian: docker-compose.cpu.yml's OS_PACKAGES (why each: there), comma-separated.
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
[[ "$(id -u)" == 0 ]] || die "debootstrap needs root: run this as root (e.g. with sudo), or leave CPU_BASE_IMAGE" \
    "unset and build FROM the registry's python:3.11-slim-bookworm (docs/cpu.md)"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"

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
