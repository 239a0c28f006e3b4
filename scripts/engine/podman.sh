#!/usr/bin/env bash
# A container engine for the stack's engine tests on a machine without Docker: Debian's podman serving the
# Docker API on a unix socket, driven by the real Compose binary. Idempotent; prints DOCKER_HOST last.
#
#   export DOCKER_HOST=$(sudo bash scripts/engine/podman.sh)   # what `make test-stack` does (stdout: only this)
#
# On a machine where `docker info` already answers (a real Docker Engine, or DOCKER_HOST set), it does nothing
# and prints that engine's DOCKER_HOST (empty: the default socket), so the same tests run against it unchanged.
# Otherwise (root, apt): installs podman, runc and debootstrap; configures podman for hosts without systemd and
# with hybrid cgroups (runtime runc: crun refuses them; no default ulimits: raising RLIMIT_NOFILE/NPROC is not
# permitted in CI containers); starts `podman system service` on SOCKET and scripts/engine/healthchecks.sh
# (podman runs healthchecks from systemd timers, absent here, so `depends_on: service_healthy` would wait
# forever). Logs and pid files: /run/gsm8k-posttrain/.
set -euo pipefail

SOCKET=${SOCKET:-/run/podman/podman.sock}
STATE=/run/gsm8k-posttrain
HERE=$(cd "$(dirname "$0")" && pwd)

say() { echo "podman.sh: $*" >&2; }
die() {
    say "$*"
    exit 2
}
running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
# A service started from a checkout that was deleted since keeps a dead working directory, and conmon then fails
# every container start ("Failed to get working directory"; the API says "write child: broken pipe"): stop it.
stale() { [[ "$(readlink "/proc/$(cat "$1")/cwd")" == *" (deleted)" ]]; }
for pid_file in "${STATE}/podman-service.pid" "${STATE}/healthchecks.pid"; do
    if running "${pid_file}" && stale "${pid_file}"; then
        say "restarting $(basename "${pid_file}" .pid): its working directory was deleted"
        kill "$(cat "${pid_file}")" 2>/dev/null || true
        for _ in $(seq 1 20); do running "${pid_file}" || break; sleep 0.5; done
    fi
done

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    say "an engine already answers (docker info): using it"
    echo "${DOCKER_HOST:-}"
    exit 0
fi
[[ "$(id -u)" == 0 ]] || die "no container engine answers, and installing podman needs root: run with sudo, or start Docker"

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing podman, runc, debootstrap (apt)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >&2
fi

mkdir -p /etc/containers/containers.conf.d "${STATE}" "$(dirname "${SOCKET}")"
cat >/etc/containers/containers.conf.d/50-gsm8k-posttrain.conf <<'CONF'
# scripts/engine/podman.sh: podman without systemd, on hybrid cgroups, in a container that may not raise rlimits
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF

if ! running "${STATE}/podman-service.pid"; then
    say "starting podman system service on ${SOCKET}"
    rm -f "${SOCKET}"
    # From /, not from this checkout: the service outlives it (see stale above).
    (cd / && exec setsid nohup podman system service --time=0 "unix://${SOCKET}" >"${STATE}/podman-service.log" 2>&1) &
    echo $! >"${STATE}/podman-service.pid"
fi
if ! running "${STATE}/healthchecks.pid"; then
    cp "${HERE}/healthchecks.sh" "${STATE}/healthchecks.sh" # a copy that outlives this checkout, run from /
    (cd / && exec setsid nohup bash "${STATE}/healthchecks.sh" >"${STATE}/healthchecks.log" 2>&1) &
    echo $! >"${STATE}/healthchecks.pid"
fi

for _ in $(seq 1 60); do
    if DOCKER_HOST="unix://${SOCKET}" docker info >/dev/null 2>&1 || { ! command -v docker >/dev/null && [[ -S "${SOCKET}" ]]; }; then
        say "podman $(podman version --format '{{.Server.Version}}' 2>/dev/null || echo '?') answers on ${SOCKET}"
        echo "unix://${SOCKET}"
        exit 0
    fi
    sleep 1
done
die "podman system service did not answer on ${SOCKET} within 60 s: see ${STATE}/podman-service.log"
