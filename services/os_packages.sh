#!/usr/bin/env bash
# Build-time step of every image (services/*/Dockerfile): make sure the base has the Debian packages the image
# needs beyond it, installing with apt only the ones it lacks. A base that has them all builds offline: the GPU
# bases (the list is empty there), and the air-gapped CPU base (scripts/engine/cpu_base_image.sh installs the
# same list); the registry CPU base (python:3.11-slim-bookworm) gets procps, libnuma1 and g++ from apt.
#
#   os_packages.sh PACKAGE ...            # install the missing ones (root, apt-get, a Debian mirror)
#   os_packages.sh --check PACKAGE ...    # only say which are missing: exit 1 if any
#
# The Python packages are checked by what install_lock.sh needs from the `python3` on PATH, whichever base it
# comes from (Debian's /usr/bin/python3, or python:*-slim's own build in /usr/local/bin, which dpkg knows nothing
# of): python3 = an interpreter; python3-venv = a venv with pip (the base's pip, else ensurepip); python3-dev =
# Python.h where that interpreter's sysconfig looks for it (torch.compile builds some of vLLM's CPU ops).
# Every other name is a Debian package dpkg must list as installed.
set -euo pipefail

check_only=0
if [[ "${1:-}" == --check ]]; then
    check_only=1
    shift
fi

present() {
    case "$1" in
    python3) command -v python3 >/dev/null ;;
    python3-venv) python3 -m pip --version >/dev/null 2>&1 || python3 -c 'import ensurepip, venv' 2>/dev/null ;;
    python3-dev)
        python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(sysconfig.get_path("include") + "/Python.h"))' \
            2>/dev/null
        ;;
    *) [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]] ;;
    esac
}

missing=()
for package in "$@"; do
    present "${package}" || missing+=("${package}")
done
if ((${#missing[@]} == 0)); then
    (($# == 0)) || echo "os_packages.sh: the base has all of $*: nothing to install"
    exit 0
fi
if ((check_only)); then
    echo "os_packages.sh: missing from this system: ${missing[*]}"
    exit 1
fi

echo "os_packages.sh: installing ${missing[*]} (apt-get)"
fail() {
    echo "os_packages.sh: the base lacks ${missing[*]}, and $*. An offline (air-gapped) build needs a base that" \
        "has them: scripts/engine/cpu_base_image.sh builds one (FORCE=1 rebuilds it with its current list)." >&2
    exit 2
}
[[ "$(id -u)" == 0 ]] || fail "installing them needs root"
command -v apt-get >/dev/null || fail "this base has no apt-get (not Debian or Ubuntu)"
apt-get update -qq || fail "apt-get update failed (no Debian mirror reachable?)"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
    fail "apt-get install failed"
rm -rf /var/lib/apt/lists/*
for package in "${missing[@]}"; do
    present "${package}" ||
        fail "after apt-get installed ${package} the check still fails (is another python3 first on PATH?)"
done
