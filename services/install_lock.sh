#!/usr/bin/env bash
# Build-time step of every image (services/*/Dockerfile): install a lock exactly into the virtualenv /opt/venv,
# then check it is installed exactly (services/locks.py verify).
#
#   install_lock.sh [--shared-umask] LOCK [NAME==VERSION ...]    # the pins the base image must provide
#
# The venv is layered over the base image's Python (--system-site-packages): on the GPU bases torch, vLLM and
# flash-attn stay as the base built them (the GPU locks leave them out), and every package the lock lists is
# installed exactly, shadowing older copies in the base. Source: the wheelhouse the build was given
# (/tmp/wheelhouse, build arg WHEELHOUSE; scripts/engine/wheelhouse.sh fills it, offline), else PyPI.
# --shared-umask: every Python process of the venv, however started (`docker compose exec verl python ...`,
# Ray workers, kernels), creates group-writable files: a .pth file sets umask 0002 at interpreter start.
set -euo pipefail

shared_umask=0
if [[ "${1:-}" == --shared-umask ]]; then
    shared_umask=1
    shift
fi
lock=${1:?usage: install_lock.sh [--shared-umask] LOCK [NAME==VERSION ...]}
shift
venv=${VIRTUAL_ENV:-/opt/venv}

# python3: the base's, first on PATH: /usr/local/bin/python3 on python:*-slim (with pip), /usr/bin/python3 on Debian.
if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m venv --without-pip --system-site-packages "${venv}" # pip from the base
else
    python3 -m venv --system-site-packages "${venv}" # pip from ensurepip (Debian's python3-venv)
fi

# ensurepip (Python 3.11) puts a setuptools of its own into the venv, and --ignore-installed below would leave its
# metadata beside the lock's, so which version `import` sees is left to directory order: the lock's pin decides.
if grep -q '^setuptools==' "${lock}"; then
    "${venv}/bin/python" -m pip uninstall --yes --quiet setuptools 2>/dev/null || true
fi

source=()
if compgen -G '/tmp/wheelhouse/*.whl' >/dev/null; then
    source=(--no-index --find-links /tmp/wheelhouse)
    echo "install_lock.sh: installing ${lock} offline from the wheelhouse"
else
    echo "install_lock.sh: installing ${lock} from PyPI"
fi
PIP_CONFIG_FILE=/dev/null "${venv}/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
    --no-deps --require-hashes --ignore-installed "${source[@]}" -r "${lock}"

if ((shared_umask)); then
    site=$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
    printf 'import os; os.umask(0o002)\n' >"${site}/00-shared-umask.pth"
fi

base=()
(($# == 0)) || base=(--base "$@")
"${venv}/bin/python" /opt/stack/locks.py verify "${lock}" "${base[@]}"
