#!/usr/bin/env bash
# The CPU variant's wheels as a local image, so its image builds install every lock offline: for machines
# whose containers cannot reach PyPI (air-gapped servers, CI behind a TLS proxy) and for fast rebuilds.
#
#   bash scripts/engine/wheelhouse.sh                          # verl-cpu jupyter-cpu mlflow -> gsm8k-posttrain/wheelhouse:cpu
#   WHEELHOUSE=my/wheels:tag bash scripts/engine/wheelhouse.sh mlflow
#
# NAME is an image lock as services/locks.py names it: services/<image>/requirements.lock, or
# services/<image>/requirements-cpu.lock for <image>-cpu. `pip download --require-hashes` fetches every file a
# lock pins and checks its hash; files are cached per lock content under WHEEL_CACHE (default
# /var/cache/gsm8k-posttrain/wheels; ~/.cache/gsm8k-posttrain/wheels when not root), so an unchanged lock
# downloads nothing. The files of all the locks named are then imported (`docker import` / `podman import`) as
# one image with the wheels at its root. With WHEELHOUSE=<that image> in .env (or the environment),
# docker-compose.cpu.yml passes it as the WHEELHOUSE build arg and the Dockerfiles mount it for the install only
# (it never becomes a layer of an image); without, the images install from PyPI (docs/cpu.md). An image that already
# holds exactly these locks is kept. Packages published only as source come as sdists: setuptools and wheel are
# added so pip can build them offline. PyTorch's CPU wheel comes from /opt/wheels when present, else its index.
set -euo pipefail

cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-gsm8k-posttrain/wheelhouse:cpu}
ENGINE=${ENGINE:-$(command -v docker >/dev/null && docker info >/dev/null 2>&1 && echo docker || echo podman)}
if [[ -z "${WHEEL_CACHE:-}" ]]; then
    if [[ "$(id -u)" == 0 ]]; then
        WHEEL_CACHE=/var/cache/gsm8k-posttrain/wheels
    else
        WHEEL_CACHE=${XDG_CACHE_HOME:-${HOME}/.cache}/gsm8k-posttrain/wheels
    fi
fi
# Build backends for the sdists in the locks, by version (not hash-locked: they only run during the build).
BUILD_TOOLS=("setuptools==80.9.0" "wheel==0.45.1")

die() {
    echo "wheelhouse.sh: $*" >&2
    exit 2
}

lock_of() {
    case "$1" in
    *-cpu) echo "services/${1%-cpu}/requirements-cpu.lock" ;;
    *) echo "services/$1/requirements.lock" ;;
    esac
}

(($# > 0)) || set -- verl-cpu jupyter-cpu mlflow
torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu)
compgen -G '/opt/wheels/torch-*+cpu-*.whl' >/dev/null && torch_source=(--find-links /opt/wheels)

folders=()
keys=""
for name in "$@"; do
    lock=$(lock_of "${name}")
    [[ -f "${lock}" ]] || die "${name}: no ${lock}"
    key=$(sha256sum "${lock}" | cut -c1-16)
    keys+="${name}-${key} "
    cached="${WHEEL_CACHE}/${name}-${key}"
    folders+=("${cached}")
    if [[ -f "${cached}/.complete" ]]; then
        echo "wheelhouse.sh: ${name}: cached (${cached})"
        continue
    fi
    echo "wheelhouse.sh: ${name}: downloading the files of ${lock} into ${cached}"
    mkdir -p "${WHEEL_CACHE}"
    tmp=$(mktemp -d "${WHEEL_CACHE}/.${name}.XXXXXX")
    trap 'rm -rf "${tmp}"' EXIT
    start=${SECONDS}
    "${PYTHON}" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
        "${torch_source[@]}" -r "${lock}" -d "${tmp}"
    if compgen -G "${tmp}/*.tar.gz" >/dev/null || compgen -G "${tmp}/*.zip" >/dev/null; then
        "${PYTHON}" -m pip download --quiet --disable-pip-version-check --no-deps "${BUILD_TOOLS[@]}" -d "${tmp}"
    fi
    touch "${tmp}/.complete"
    rm -rf "${cached}"
    mv "${tmp}" "${cached}"
    trap - EXIT
    echo "wheelhouse.sh: ${name}: $(find "${cached}" -type f ! -name .complete | wc -l) files," \
        "$(du -sh "${cached}" | cut -f1), $((SECONDS - start)) s"
done

keys=${keys% }
have=$("${ENGINE}" image inspect --format '{{index .Config.Labels "gsm8k-posttrain.wheelhouse"}}' \
    "${WHEELHOUSE}" 2>/dev/null || true)
if [[ "${have}" == "${keys}" ]]; then
    echo "wheelhouse.sh: ${WHEELHOUSE} already holds ${keys}"
    exit 0
fi
# One folder of hard links (files the locks share, e.g. torch, appear once), imported as an image.
union=$(mktemp -d "${WHEEL_CACHE}/.union.XXXXXX")
trap 'rm -rf "${union}"' EXIT
for folder in "${folders[@]}"; do
    cp -al "${folder}/." "${union}/" 2>/dev/null || cp -a "${folder}/." "${union}/"
done
rm -f "${union}/.complete"
start=${SECONDS}
tar -C "${union}" -c . | "${ENGINE}" import --change "LABEL gsm8k-posttrain.wheelhouse=\"${keys}\"" - \
    "${WHEELHOUSE}" >/dev/null
echo "wheelhouse.sh: ${WHEELHOUSE}: $(find "${union}" -type f | wc -l) files, $(du -sh "${union}" | cut -f1)," \
    "imported into ${ENGINE} in $((SECONDS - start)) s"
