#!/usr/bin/env bash
# Write .env for this machine from .env.example: the first of the two set-up commands.
#
#   bash scripts/init_env.sh            # then: docker compose up -d
#   BIND_ADDRESS=10.0.0.1 bash scripts/init_env.sh                      # UIs on a private network (docs/operations.md)
#   CLUSTER=head RAY_HEAD_IP=10.0.0.1 bash scripts/init_env.sh          # the head of a multi-machine cluster
#   CLUSTER=worker RAY_HEAD_IP=10.0.0.1 RAY_AUTH_TOKEN=<head's> bash scripts/init_env.sh   # a worker machine
#   ENV_FILE=/tmp/test.env bash scripts/init_env.sh
#
# Fills in what .env.example leaves for the machine to decide, and nothing else:
#   - every empty *_TOKEN / *_PASSWORD / *_SECRET (HF_TOKEN excepted: that one is yours) with a fresh
#     random secret (JUPYTER_TOKEN, RAY_AUTH_TOKEN, ...), so the stack never runs with a default password;
#     RAY_AUTH_TOKEN from the environment when given (a worker must hold the head's);
#   - HOST_UID / HOST_GID: the invoking user (under sudo, the user who ran sudo; as plain root, the owner
#     of this checkout, because JupyterLab refuses to run as root);
#   - N_GPUS from nvidia-smi; with no GPU, N_GPUS=0 and COMPOSE_FILE selects the CPU variant
#     (docker-compose.cpu.yml), so a plain `docker compose up -d` brings that up;
#   - BIND_ADDRESS from the environment (CLUSTER=head: RAY_HEAD_IP), with that address added to
#     MLFLOW_ALLOWED_HOSTS and MLFLOW_CORS_ALLOWED_ORIGINS (MLflow answers 403 to Host names it does not list);
#   - CLUSTER=head|worker: RAY_HEAD_IP, and COMPOSE_FILE naming docker-compose.multinode.yml (head) or
#     docker-compose.worker.yml (worker), so the plain `docker compose` commands of docs/operations.md use them.
# The file is created with mode 0600 and renamed into place only when complete. An existing .env is
# never overwritten: the script lists the keys it lacks or has beyond .env.example and says how to
# regenerate it.
# The folders the containers write (models/, data/, notebooks/) must be theirs: run as root (a checkout cloned
# by root), the script hands them to HOST_UID:HOST_GID, also when .env exists; otherwise it stops with the
# command that does it.
set -euo pipefail

cd "$(dirname "$0")/.."
EXAMPLE=.env.example
ENV_FILE=${ENV_FILE:-.env}

die() {
    echo "init_env.sh: $*" >&2
    exit 2
}
keys_of() { sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$1" | sort -u; }

[[ -f "${EXAMPLE}" ]] || die "${EXAMPLE} not found in $(pwd)"

# share_folders UID GID: jupyter and verl run as UID:GID and write models/, data/ and notebooks/ (data prep, the
# notebook, checkpoints): whatever in them belongs to another user (root, on a checkout cloned as root) is
# handed over as root, or the script stops with the command.
SHARED=(models data notebooks)
share_folders() {
    local foreign
    foreign=$(find "${SHARED[@]}" ! -user "$1" \( ! -group "$2" -o ! -perm -g+w \) -print -quit 2>/dev/null || true)
    [[ -n "${foreign}" ]] || return 0
    if [[ "$(id -u)" != 0 ]]; then
        die "${foreign} belongs to $(stat -c %U "${foreign}"), but the containers run as $1:$2 (HOST_UID:HOST_GID) and" \
            "must write there: sudo chown -R $1:$2 ${SHARED[*]}"
    fi
    chown -R "$1:$2" "${SHARED[@]}"
    echo "init_env.sh: ${SHARED[*]/%//} now belong to $1:$2 (HOST_UID:HOST_GID), the user jupyter and verl run as."
}

if [[ -e "${ENV_FILE}" ]]; then
    echo "init_env.sh: ${ENV_FILE} exists; left as it is."
    missing=$(comm -23 <(keys_of "${EXAMPLE}") <(keys_of "${ENV_FILE}") | xargs)
    extra=$(comm -13 <(keys_of "${EXAMPLE}") <(keys_of "${ENV_FILE}") | xargs)
    [[ -z "${missing}" ]] || echo "  keys in ${EXAMPLE} but not in ${ENV_FILE} (their defaults apply): ${missing}"
    [[ -z "${extra}" ]] || echo "  keys in ${ENV_FILE} but not in ${EXAMPLE}: ${extra}"
    echo "  To regenerate: mv ${ENV_FILE} ${ENV_FILE}.old && bash scripts/init_env.sh"
    host_uid=$(sed -n 's/^HOST_UID=//p' "${ENV_FILE}" | tail -n1)
    host_gid=$(sed -n 's/^HOST_GID=//p' "${ENV_FILE}" | tail -n1)
    [[ "${host_uid:-0}" == 0 ]] || share_folders "${host_uid}" "${host_gid:-${host_uid}}"
    exit 0
fi

secret() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# Who owns the files the containers write: the person at the keyboard, never root.
uid=$(id -u) gid=$(id -g)
if [[ -n "${SUDO_UID:-}" && "${SUDO_UID}" != 0 ]]; then
    uid=${SUDO_UID} gid=${SUDO_GID:-${SUDO_UID}}
elif [[ "${uid}" == 0 ]]; then
    uid=$(stat -c %u .) gid=$(stat -c %g .)
    if [[ "${uid}" == 0 ]]; then
        uid=1000 gid=1000
        echo "init_env.sh: you are root and root owns this checkout: the containers will write as 1000:1000" \
            "(JupyterLab does not run as root); set HOST_UID/HOST_GID in ${ENV_FILE} to another user if you like" \
            "(then: sudo chown -R <uid>:<gid> models data notebooks)."
    fi
fi
share_folders "${uid}" "${gid}"

n_gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
    n_gpus=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU ' || true)
fi

declare -A value=(
    [HOST_UID]=${uid}
    [HOST_GID]=${gid}
    [N_GPUS]=${n_gpus}
)
example_value() { sed -n "s/^$1=//p" "${EXAMPLE}" | head -n1; }

# The machine's role: one stack (default), or the head / a worker of a multi-machine Ray cluster.
cluster=${CLUSTER:-}
ip_pattern='^[0-9]{1,3}(\.[0-9]{1,3}){3}$'
case "${cluster}" in
"") ;;
head | worker)
    [[ "${RAY_HEAD_IP:-}" =~ ${ip_pattern} ]] ||
        die "CLUSTER=${cluster} needs RAY_HEAD_IP=<the head's cluster-network IP, e.g. 10.0.0.1>, got '${RAY_HEAD_IP:-}'"
    value[RAY_HEAD_IP]=${RAY_HEAD_IP}
    ;;
*) die "CLUSTER must be head or worker (or unset for a single machine), got '${cluster}'" ;;
esac
if [[ "${cluster}" == worker ]]; then
    [[ -n "${RAY_AUTH_TOKEN:-}" ]] ||
        die "CLUSTER=worker needs RAY_AUTH_TOKEN=<RAY_AUTH_TOKEN from the head's .env>: the head refuses nodes without it"
fi
[[ -z "${RAY_AUTH_TOKEN:-}" ]] || value[RAY_AUTH_TOKEN]=${RAY_AUTH_TOKEN}

# Where the UIs are published; MLflow must accept that address as a Host header (and browser origin).
bind_address=${BIND_ADDRESS:-}
[[ "${cluster}" == head && -z "${bind_address}" ]] && bind_address=${RAY_HEAD_IP}
if [[ -n "${bind_address}" ]]; then
    [[ "${bind_address}" =~ ${ip_pattern} ]] ||
        die "BIND_ADDRESS must be an IPv4 address of this machine (e.g. 10.0.0.1), got '${bind_address}'"
    value[BIND_ADDRESS]=${bind_address}
    case "${bind_address}" in
    127.* | 0.0.0.0) ;; # loopback is in the defaults; 0.0.0.0 has no one name: add yours (doctor.sh says so)
    *)
        value[MLFLOW_ALLOWED_HOSTS]="$(example_value MLFLOW_ALLOWED_HOSTS),${bind_address},${bind_address}:*"
        value[MLFLOW_CORS_ALLOWED_ORIGINS]="$(example_value MLFLOW_CORS_ALLOWED_ORIGINS),http://${bind_address}:*"
        ;;
    esac
fi

# Which compose files a plain `docker compose` uses.
files=docker-compose.yml
((n_gpus > 0)) || files+=:docker-compose.cpu.yml
[[ "${cluster}" == head ]] && files+=:docker-compose.multinode.yml
[[ "${cluster}" == worker ]] && files=docker-compose.worker.yml
[[ "${files}" == docker-compose.yml ]] || value[COMPOSE_FILE]=${files}

tmp=$(mktemp "${ENV_FILE}.XXXXXX")
trap 'rm -f "${tmp}"' EXIT
chmod 0600 "${tmp}"
seen=()
while IFS= read -r line || [[ -n "${line}" ]]; do
    if [[ "${line}" =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
        key=${BASH_REMATCH[1]} current=${BASH_REMATCH[2]}
        seen+=("${key}")
        if [[ -v "value[${key}]" ]]; then
            line="${key}=${value[${key}]}"
        elif [[ -z "${current}" && "${key}" =~ _(TOKEN|PASSWORD|SECRET)$ && "${key}" != HF_TOKEN ]]; then
            line="${key}=$(secret)"
        fi
    fi
    printf '%s\n' "${line}"
done <"${EXAMPLE}" >"${tmp}"
for key in "${!value[@]}"; do # settings .env.example does not list (COMPOSE_FILE on a machine without GPUs)
    [[ " ${seen[*]} " == *" ${key} "* ]] || printf '%s=%s\n' "${key}" "${value[${key}]}" >>"${tmp}"
done
mv "${tmp}" "${ENV_FILE}"
trap - EXIT

token=$(sed -n 's/^JUPYTER_TOKEN=//p' "${ENV_FILE}")
jupyter_port=$(sed -n 's/^JUPYTER_PORT=//p' "${ENV_FILE}")
mlflow_port=$(sed -n 's/^MLFLOW_PORT=//p' "${ENV_FILE}")
published=$(sed -n 's/^BIND_ADDRESS=//p' "${ENV_FILE}")
[[ -z "${published}" || "${published}" == 0.0.0.0 ]] && published=127.0.0.1
variant="GPU: the first ${n_gpus} GPU(s)"
((n_gpus > 0)) || variant="CPU variant (no GPU found by nvidia-smi)"
[[ -z "${cluster}" ]] || variant+="; Ray cluster ${cluster}, head ${RAY_HEAD_IP}"
echo "init_env.sh: wrote ${ENV_FILE} (mode 0600): ${variant}; files owned by ${uid}:${gid}."
if [[ "${cluster}" == worker ]]; then
    cat <<EOF
Next: docker compose --profile setup run --rm setup   # the model into this worker's cache
      docker compose up -d                            # joins the Ray head at ${RAY_HEAD_IP}
EOF
    exit 0
fi
cat <<EOF
Next: docker compose up -d
Then, from your laptop: ssh -N -L ${jupyter_port:-8888}:${published}:${jupyter_port:-8888} -L ${mlflow_port:-5000}:${published}:${mlflow_port:-5000} you@this-server
and open:
  JupyterLab  http://localhost:${jupyter_port:-8888}/lab?token=${token}
  MLflow      http://localhost:${mlflow_port:-5000}
EOF
if [[ "${cluster}" == head ]]; then
    echo "Workers: CLUSTER=worker RAY_HEAD_IP=${RAY_HEAD_IP} RAY_AUTH_TOKEN=<RAY_AUTH_TOKEN in ${ENV_FILE}> bash scripts/init_env.sh"
fi
