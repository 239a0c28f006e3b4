#!/usr/bin/env bash
# Run this container's Ray node in the foreground (the verl container's command).
#
#   ray-node.sh head                   # docker-compose.yml: the Ray head, dashboard on RAY_DASHBOARD_PORT
#   ray-node.sh worker HEAD_IP:6379    # docker-compose.worker.yml: join the head from another machine
#   ray-node.sh head --object-store-memory=50000000000    # extra args go to `ray start` as they are
#
# Env: N_GPUS (GPUs Ray advertises; must be visible here), RAY_NUM_CPUS (default: all cores),
# RAY_PORT (6379), RAY_DASHBOARD_HOST (0.0.0.0: the port is published on loopback only),
# RAY_DASHBOARD_PORT (8265), RAY_NODE_IP (the address other nodes reach this one at; multi-node only),
# MLFLOW_TRACKING_URI (required: Ray workers inherit this environment, and verl's MLflow logger runs in one),
# RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (required: Ray's token authentication; every node, `ray status`,
# `ray job` and the dashboard must present the same token, so a client without it is refused).
set -euo pipefail

# Everything Ray's workers write (checkpoints, logs) is group-writable: see docker-compose.yml.
umask 0002

die() {
    echo "ray-node.sh: $*" >&2
    exit 2
}

mode=${1:-head}
shift || true
: "${MLFLOW_TRACKING_URI:?MLFLOW_TRACKING_URI is not set: Ray workers would train untracked (set it in docker-compose.yml)}"
export MLFLOW_TRACKING_URI
# Never an unauthenticated Ray: anything that reaches its ports could run code as this user.
[[ "${RAY_AUTH_MODE:-}" == token ]] ||
    die "RAY_AUTH_MODE must be 'token', got '${RAY_AUTH_MODE:-}': Ray without authentication runs anyone's code (set in docker-compose.yml)"
[[ -n "${RAY_AUTH_TOKEN:-}" ]] ||
    die "RAY_AUTH_TOKEN is empty: set it in .env (bash scripts/init_env.sh writes one; on a worker, the head's)"
export RAY_AUTH_MODE RAY_AUTH_TOKEN
N_GPUS=${N_GPUS:-1}
RAY_NUM_CPUS=${RAY_NUM_CPUS:-$(nproc)}
[[ "${N_GPUS}" =~ ^[0-9]+$ ]] || die "N_GPUS must be a whole number, got '${N_GPUS}' (see .env)"
[[ "${RAY_NUM_CPUS}" =~ ^[0-9]+$ ]] || die "RAY_NUM_CPUS must be a whole number, got '${RAY_NUM_CPUS}' (see .env)"

# Ray would advertise GPUs it cannot use and jobs would wait for them forever: check what is visible.
if ((N_GPUS > 0)); then
    command -v nvidia-smi >/dev/null ||
        die "N_GPUS=${N_GPUS} but no GPU is visible (no nvidia-smi): is the NVIDIA Container Toolkit installed? Run scripts/doctor.sh"
    visible=$(nvidia-smi --list-gpus | grep -c '^GPU ' || true)
    ((visible >= N_GPUS)) ||
        die "N_GPUS=${N_GPUS} but only ${visible} GPU(s) visible: set N_GPUS in .env to the GPUs this container gets"
fi

args=(--block --num-cpus="${RAY_NUM_CPUS}" --num-gpus="${N_GPUS}" --disable-usage-stats)
[[ -n "${RAY_NODE_IP:-}" ]] && args+=(--node-ip-address="${RAY_NODE_IP}")
case "${mode}" in
head)
    args=(--head --port="${RAY_PORT:-6379}"
        --dashboard-host="${RAY_DASHBOARD_HOST:-0.0.0.0}" --dashboard-port="${RAY_DASHBOARD_PORT:-8265}"
        "${args[@]}")
    ;;
worker)
    head_address=${1:-}
    [[ -n "${head_address}" ]] || die "usage: ray-node.sh worker HEAD_IP:PORT (set RAY_HEAD_IP in .env)"
    shift
    args=(--address="${head_address}" "${args[@]}")
    ;;
*)
    die "unknown mode '${mode}': use head or worker"
    ;;
esac

echo "ray-node.sh: ${mode}: ${N_GPUS} GPU(s), ${RAY_NUM_CPUS} CPU(s), MLflow at ${MLFLOW_TRACKING_URI}"
exec ray start "${args[@]}" "$@"
