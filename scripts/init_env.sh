#!/usr/bin/env bash
# Write .env for this machine from .env.example: the first of the two set-up commands.
#
#   bash scripts/init_env.sh            # then: docker compose up -d
#   ENV_FILE=/tmp/test.env bash scripts/init_env.sh
#
# Fills in what .env.example leaves for the machine to decide, and nothing else:
#   - every empty *_TOKEN / *_PASSWORD / *_SECRET (HF_TOKEN excepted: that one is yours) with a fresh
#     random secret, so the stack never runs with a default password;
#   - HOST_UID / HOST_GID: the invoking user (under sudo, the user who ran sudo; as plain root, the owner
#     of this checkout, because JupyterLab refuses to run as root);
#   - N_GPUS / GPU_DEVICES from nvidia-smi; with no GPU, N_GPUS=0 and COMPOSE_FILE selects the CPU
#     variant (docker-compose.cpu.yml), so a plain `docker compose up -d` brings that up.
# The file is created with mode 0600 and renamed into place only when complete. An existing .env is
# never overwritten: the script lists the keys it lacks or has beyond .env.example and says how to
# regenerate it.
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

if [[ -e "${ENV_FILE}" ]]; then
    echo "init_env.sh: ${ENV_FILE} exists; left as it is."
    missing=$(comm -23 <(keys_of "${EXAMPLE}") <(keys_of "${ENV_FILE}") | xargs)
    extra=$(comm -13 <(keys_of "${EXAMPLE}") <(keys_of "${ENV_FILE}") | xargs)
    [[ -z "${missing}" ]] || echo "  keys in ${EXAMPLE} but not in ${ENV_FILE} (their defaults apply): ${missing}"
    [[ -z "${extra}" ]] || echo "  keys in ${ENV_FILE} but not in ${EXAMPLE}: ${extra}"
    echo "  To regenerate: mv ${ENV_FILE} ${ENV_FILE}.old && bash scripts/init_env.sh"
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
            "(JupyterLab does not run as root); set HOST_UID/HOST_GID in ${ENV_FILE} to another user if you like."
    fi
fi

n_gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
    n_gpus=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU ' || true)
fi
gpu_devices=$(seq -s, 0 $((n_gpus - 1)) 2>/dev/null || true)

declare -A value=(
    [HOST_UID]=${uid}
    [HOST_GID]=${gid}
    [N_GPUS]=${n_gpus}
    [GPU_DEVICES]=${gpu_devices}
)
((n_gpus > 0)) || value[COMPOSE_FILE]=docker-compose.yml:docker-compose.cpu.yml

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
variant="GPU: ${n_gpus} GPU(s), devices ${gpu_devices}"
((n_gpus > 0)) || variant="CPU variant (no GPU found by nvidia-smi)"
cat <<EOF
init_env.sh: wrote ${ENV_FILE} (mode 0600): ${variant}; files owned by ${uid}:${gid}.
Next: docker compose up -d
Then open (through an SSH tunnel from your laptop, see README):
  JupyterLab  http://localhost:${jupyter_port:-8888}/lab?token=${token}
  MLflow      http://localhost:${mlflow_port:-5000}
EOF
