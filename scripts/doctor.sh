#!/usr/bin/env bash
# Host checks for the GPU server the stack runs on: one PASS / WARN / FAIL line per check, then a summary.
#
#   bash scripts/doctor.sh                     # before `docker compose up -d`, and whenever something is off
#   ENV_FILE=/path/to/.env bash scripts/doctor.sh
#
# Checks: .env (tokens, UID/GID, bind address, cluster compose files), NVIDIA driver (R580+ for CUDA 13), GPU
# count vs N_GPUS, Docker, Compose, NVIDIA Container Toolkit, /dev/shm and RAM, free disk, ports, MLflow health,
# and that models/ and data/ stay writable by both containers' user (HOST_UID:HOST_GID, never root).
# On the CPU stack (docker-compose.cpu.yml in COMPOSE_FILE, or N_GPUS=0) the driver, GPU and toolkit checks pass
# as not needed. Compose is the plugin (`docker compose`) or the standalone `docker-compose`, whichever is here.
# Exits 1 when any check FAILs, 0 otherwise. Reads .env without executing it and never prints secrets.
set -euo pipefail

cd "$(dirname "$0")/.."
ENV_FILE=${ENV_FILE:-.env}
MIN_DRIVER=${MIN_DRIVER:-580}
MIN_COMPOSE=${MIN_COMPOSE:-2.24.0}
MIN_DISK_GB=${MIN_DISK_GB:-100}

n_pass=0 n_warn=0 n_fail=0
report() {
    local verdict=$1
    shift
    printf '%-4s %s\n' "${verdict}" "$*"
    case "${verdict}" in
    PASS) n_pass=$((n_pass + 1)) ;;
    WARN) n_warn=$((n_warn + 1)) ;;
    *) n_fail=$((n_fail + 1)) ;;
    esac
}
have() { command -v "$1" >/dev/null 2>&1; }
# version_ge A B: A >= B (dotted versions)
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }
# size_gib 64g -> 64 (Compose sizes: b, k, m, g suffixes)
size_gib() {
    local value=${1,,} number unit
    number=${value%%[a-z]*}
    unit=${value#"${number}"}
    case "${unit}" in
    g | gb) echo "${number}" ;;
    m | mb) echo $((number / 1024)) ;;
    t | tb) echo $((number * 1024)) ;;
    *) echo 0 ;;
    esac
}

# --- settings: .env.example gives the defaults, .env overrides (parsed, never sourced) -------------------
declare -A cfg=()
load_env() {
    local line key value
    [[ -f "$1" ]] || return 0
    while IFS= read -r line || [[ -n "${line}" ]]; do
        [[ "${line}" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key=${BASH_REMATCH[1]}
        value=${BASH_REMATCH[2]}
        value=${value%\"}
        value=${value#\"}
        value=${value%\'}
        value=${value#\'}
        cfg[${key}]=${value}
    done <"$1"
}
load_env .env.example
load_env "${ENV_FILE}"
get() { echo "${cfg[$1]:-${2:-}}"; }

N_GPUS=$(get N_GPUS 4)
HOST_UID=$(get HOST_UID 1000)
HOST_GID=$(get HOST_GID 1000)
BIND_ADDRESS=$(get BIND_ADDRESS 127.0.0.1)
probe_address=${BIND_ADDRESS}
[[ "${probe_address}" == 0.0.0.0 ]] && probe_address=127.0.0.1
# The CPU stack (docs/cpu.md) needs no driver, GPU or container toolkit.
cpu_stack=false
[[ "$(get COMPOSE_FILE)" == *docker-compose.cpu.yml* || "${N_GPUS}" == 0 ]] && cpu_stack=true

# --- .env -----------------------------------------------------------------------------------------------
if [[ ! -f "${ENV_FILE}" ]]; then
    report FAIL ".env: ${ENV_FILE} not found: bash scripts/init_env.sh writes one"
else
    # check_token NAME WHAT_IT_GUARDS: set, and long enough to be a random secret
    check_token() {
        local value
        value=$(get "$1")
        if [[ -z "${value}" ]]; then
            report FAIL ".env: $1 is empty: the stack refuses to start ($2; generate one: openssl rand -hex 32)"
        elif ((${#value} < 16)); then
            report WARN ".env: $1 is only ${#value} characters: use a long random one (openssl rand -hex 32)"
        else
            report PASS ".env: $1 set (${#value} characters; $2)"
        fi
    }
    check_token JUPYTER_TOKEN "JupyterLab asks for it"
    check_token RAY_AUTH_TOKEN "Ray refuses clients without it; on a worker, the head's"
    if [[ -n "$(get GPU_DEVICES)" ]]; then
        report WARN ".env: GPU_DEVICES is no longer read: the containers get the first N_GPUS GPUs (docs/operations.md, \"Choosing GPUs\", to pick others); delete the line"
    fi
    compose_file=$(get COMPOSE_FILE)
    if [[ -n "$(get RAY_HEAD_IP)" && "${compose_file}" != *docker-compose.multinode.yml* && "${compose_file}" != *docker-compose.worker.yml* ]]; then
        report WARN ".env: RAY_HEAD_IP is set but COMPOSE_FILE names neither docker-compose.multinode.yml nor docker-compose.worker.yml: a plain \`docker compose up -d\` starts a single-machine stack (CLUSTER=head|worker bash scripts/init_env.sh writes it)"
    fi
    if [[ "$(stat -c %a "${ENV_FILE}")" =~ [1-7]$ ]]; then
        report WARN ".env: readable by every user on this machine (it holds tokens): chmod 600 ${ENV_FILE}"
    fi
    if [[ "${HOST_UID}" == 0 ]]; then
        report FAIL ".env: HOST_UID=0: jupyter and verl refuse to run as root; set HOST_UID/HOST_GID to a non-root user's ids (id -u / id -g as the checkout's owner; on a root-only machine: useradd -m researcher && chown -R researcher: .)"
    elif [[ "${HOST_UID}:${HOST_GID}" == "$(id -u):$(id -g)" ]]; then
        report PASS ".env: HOST_UID:HOST_GID = ${HOST_UID}:${HOST_GID}, you"
    else
        report WARN ".env: HOST_UID:HOST_GID = ${HOST_UID}:${HOST_GID} but you are $(id -u):$(id -g): files the containers write will not be yours (set both to \`id -u\` / \`id -g\`)"
    fi
fi
allowed_hosts=",$(get MLFLOW_ALLOWED_HOSTS),"
case "${BIND_ADDRESS}" in
127.* | localhost | ::1) report PASS "bind address: ${BIND_ADDRESS} (reach the UIs through an SSH tunnel)" ;;
0.0.0.0) report WARN "bind address: 0.0.0.0 publishes Jupyter and MLflow on every network of this machine; MLflow answers only the names in MLFLOW_ALLOWED_HOSTS: add each one you browse it by" ;;
*)
    report WARN "bind address: ${BIND_ADDRESS}: Jupyter and MLflow are reachable from that network; make sure it is trusted. Tunnels go to ${BIND_ADDRESS}, not 127.0.0.1: ssh -N -L 8888:${BIND_ADDRESS}:8888 -L 5000:${BIND_ADDRESS}:5000 ..."
    if [[ "${allowed_hosts}" != *",${BIND_ADDRESS}:*,"* ]]; then
        report FAIL "mlflow allowed hosts: MLFLOW_ALLOWED_HOSTS lacks ${BIND_ADDRESS}:* (BIND_ADDRESS): MLflow answers 403 to the workers and to browsers at that address; add \",${BIND_ADDRESS},${BIND_ADDRESS}:*\" (BIND_ADDRESS=${BIND_ADDRESS} bash scripts/init_env.sh writes it)"
    fi
    ;;
esac

# --- NVIDIA driver and GPUs -----------------------------------------------------------------------------
if ${cpu_stack}; then
    if [[ "$(get COMPOSE_FILE)" != *docker-compose.cpu.yml* ]]; then
        report WARN "GPUs: N_GPUS=0 but COMPOSE_FILE does not add docker-compose.cpu.yml: the GPU images and GPU reservations are used; set COMPOSE_FILE=docker-compose.yml:docker-compose.cpu.yml in .env"
    else
        report PASS "driver, GPUs: not needed (CPU stack: docker-compose.cpu.yml, N_GPUS=${N_GPUS})"
    fi
elif ! have nvidia-smi; then
    report FAIL "driver: nvidia-smi not found: install the NVIDIA driver (R${MIN_DRIVER}+ for CUDA 13)"
    report FAIL "GPUs: cannot count them without nvidia-smi (N_GPUS=${N_GPUS})"
else
    driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)
    if [[ -z "${driver}" ]]; then
        report FAIL "driver: nvidia-smi found but it reports no driver (is the kernel module loaded?)"
    elif ((${driver%%.*} >= MIN_DRIVER)); then
        report PASS "driver: ${driver} (R${MIN_DRIVER}+ runs the CUDA 13 verl image)"
    else
        report FAIL "driver: ${driver} is older than R${MIN_DRIVER}: the verl image (CUDA 13, torch 2.11) will not start; upgrade the driver"
    fi
    gpu_count=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU ' || true)
    if ((gpu_count == 0)); then
        report FAIL "GPUs: none found by nvidia-smi"
    elif ! [[ "${N_GPUS}" =~ ^[0-9]+$ ]]; then
        report FAIL "GPUs: N_GPUS=${N_GPUS} is not a whole number: set it in .env to how many GPUs the containers get"
    elif ((N_GPUS > gpu_count)); then
        report FAIL "GPUs: N_GPUS=${N_GPUS} but this machine has ${gpu_count} GPU(s): Docker cannot reserve them; set N_GPUS=${gpu_count} or fewer in .env"
    elif ((N_GPUS < gpu_count)); then
        report WARN "GPUs: using the first ${N_GPUS} of ${gpu_count} (N_GPUS=${N_GPUS}; docs/operations.md, \"Choosing GPUs\", to pick others)"
    else
        report PASS "GPUs: ${gpu_count} found, N_GPUS=${N_GPUS}"
    fi
fi

# --- Docker, Compose, NVIDIA Container Toolkit ----------------------------------------------------------
docker_ok=false
if ! have docker; then
    report FAIL "docker: not installed (Docker Engine + the compose plugin)"
elif ! docker info >/dev/null 2>&1; then
    report FAIL "docker: the engine is not reachable as $(id -un) (is it running? are you in the docker group?)"
else
    docker_ok=true
    report PASS "docker: engine $(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo '?') reachable"
fi
# The Compose plugin, else the standalone binary (e.g. PyPI's docker-compose next to podman's Docker API).
compose_cmd=()
if have docker && docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
elif have docker-compose; then
    compose_cmd=(docker-compose)
fi
if ((${#compose_cmd[@]} == 0)); then
    report FAIL "compose: neither \`docker compose\` nor \`docker-compose\` available: install the Docker Compose plugin v${MIN_COMPOSE}+"
else
    compose=$("${compose_cmd[@]}" version --short 2>/dev/null || true)
    compose=${compose#v}
    if [[ -z "${compose}" ]]; then
        report FAIL "compose: \`${compose_cmd[*]} version\` fails: reinstall Docker Compose v${MIN_COMPOSE}+"
    elif version_ge "${compose}" "${MIN_COMPOSE}"; then
        report PASS "compose: ${compose} (${compose_cmd[*]})"
    else
        report FAIL "compose: ${compose} is older than ${MIN_COMPOSE} (needed for optional depends_on and !reset)"
    fi
fi
if ${cpu_stack}; then
    report PASS "container toolkit: not needed (CPU stack)"
elif ! have nvidia-ctk && ! have nvidia-container-runtime && ! have nvidia-container-cli; then
    report FAIL "container toolkit: NVIDIA Container Toolkit not installed (containers would see no GPU)"
elif ${docker_ok}; then
    runtimes=$(docker info --format '{{json .Runtimes}}' 2>/dev/null || true)
    if [[ "${runtimes}" == *nvidia* ]] || [[ -e /etc/cdi/nvidia.yaml ]] || [[ -e /var/run/cdi/nvidia.yaml ]]; then
        report PASS "container toolkit: installed and known to Docker"
    else
        report FAIL "container toolkit: installed but Docker does not know it: sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"
    fi
else
    report WARN "container toolkit: installed; cannot check Docker's runtimes without the engine"
fi

# --- memory, /dev/shm, disk -----------------------------------------------------------------------------
mem_gib=$(awk '/^MemTotal:/ {print int($2 / 1048576)}' /proc/meminfo 2>/dev/null || echo 0)
shm_need=$(($(size_gib "$(get VERL_SHM_SIZE 64g)") + $(size_gib "$(get JUPYTER_SHM_SIZE 16g)")))
if ((mem_gib >= 2 * shm_need)); then
    report PASS "memory: ${mem_gib} GiB RAM for ${shm_need} GiB of container /dev/shm (VERL_SHM_SIZE + JUPYTER_SHM_SIZE)"
else
    report WARN "memory: ${mem_gib} GiB RAM; the containers' /dev/shm may take ${shm_need} GiB of it: lower VERL_SHM_SIZE / JUPYTER_SHM_SIZE"
fi
host_shm=$(df -P -k /dev/shm 2>/dev/null | awk 'NR == 2 {print int($2 / 1048576)}' || true)
if [[ -z "${host_shm}" ]]; then
    report WARN "/dev/shm: not mounted on the host (the containers get their own, sized by *_SHM_SIZE)"
elif ((host_shm >= 16)); then
    report PASS "/dev/shm: ${host_shm} GiB on the host (the containers get their own, sized by *_SHM_SIZE)"
else
    report WARN "/dev/shm: ${host_shm} GiB on the host: NCCL / vLLM runs outside the containers want 16 GiB+"
fi
disk_dir=.
if ${docker_ok}; then
    docker_root=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || true)
    [[ -n "${docker_root}" && -d "${docker_root}" ]] && disk_dir=${docker_root}
fi
for dir in "${disk_dir}" .; do
    free_gb=$(df -P -k "${dir}" | awk 'NR == 2 {print int($4 / 1048576)}')
    label=$([[ "${dir}" == . ]] && echo "repo (checkpoints in models/)" || echo "${dir} (images, volumes)")
    if ((free_gb >= MIN_DISK_GB)); then
        report PASS "disk: ${free_gb} GiB free for ${label}"
    elif ((free_gb >= MIN_DISK_GB / 2)); then
        report WARN "disk: ${free_gb} GiB free for ${label}; ${MIN_DISK_GB} GiB+ recommended (images ~40 GiB, RL checkpoints)"
    else
        report FAIL "disk: ${free_gb} GiB free for ${label}; ${MIN_DISK_GB} GiB+ needed (images ~40 GiB, RL checkpoints)"
    fi
    [[ "${disk_dir}" == . ]] && break
done

# --- ports and MLflow -----------------------------------------------------------------------------------
# The stack's own running services (their containers publish its ports), read with the settings doctor reads.
running=""
if ${docker_ok} && ((${#compose_cmd[@]} > 0)); then
    env_file_arg=()
    [[ -f "${ENV_FILE}" ]] && env_file_arg=(--env-file "${ENV_FILE}")
    running=$("${compose_cmd[@]}" "${env_file_arg[@]}" ps --services --status running 2>/dev/null || true)
fi
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
for entry in "jupyter JUPYTER_PORT 8888" "mlflow MLFLOW_PORT 5000" "verl RAY_DASHBOARD_PORT 8265"; do
    read -r service var default <<<"${entry}"
    port=$(get "${var}" "${default}")
    address=${probe_address}
    [[ "${service}" == verl ]] && address=127.0.0.1
    if ! listening "${address}" "${port}"; then
        report PASS "port ${port} (${service}, ${var}): free on ${address}"
    elif grep -qx "${service}" <<<"${running}"; then
        report PASS "port ${port} (${service}, ${var}): served by the running ${service} container"
    else
        report FAIL "port ${port} (${service}, ${var}): already in use by another program: stop it or change ${var} in .env"
    fi
done
mlflow_url="http://${probe_address}:$(get MLFLOW_PORT 5000)/health"
health=$(curl -fsS --max-time 5 "${mlflow_url}" 2>/dev/null || true)
if [[ "${health}" == *OK* ]]; then
    report PASS "mlflow: ${mlflow_url} answers OK"
elif grep -qx mlflow <<<"${running}"; then
    report FAIL "mlflow: container running but ${mlflow_url} does not answer: docker compose logs mlflow"
else
    report WARN "mlflow: not running (start the stack: docker compose up -d)"
fi

# --- shared paths: writable by you and the containers (both run as HOST_UID:HOST_GID) ---------------------
for dir in models data; do
    if [[ ! -d "${dir}" ]]; then
        report FAIL "shared path ${dir}/: missing (it is part of the repo: git checkout -- ${dir})"
        continue
    fi
    owner=$(stat -c '%u:%g' "${dir}")
    if [[ "${owner%%:*}" != "${HOST_UID}" ]] && ! [[ "${owner##*:}" == "${HOST_GID}" && -n "$(find "${dir}" -maxdepth 0 -perm -g+w)" ]]; then
        report FAIL "shared path ${dir}/: owned by ${owner}, not writable by HOST_UID ${HOST_UID} or group ${HOST_GID}: sudo chown -R ${HOST_UID}:${HOST_GID} ${dir}"
        continue
    fi
    # Files someone else owns that HOST_UID cannot change through the group (e.g. written before umask 0002).
    stuck=$(find "${dir}" -xdev ! -user "${HOST_UID}" \( ! -group "${HOST_GID}" -o ! -perm -g+w \) 2>/dev/null | head -n 1000 | wc -l)
    if ((stuck > 0)); then
        report WARN "shared path ${dir}/: ${stuck} file(s) not writable by ${HOST_UID}:${HOST_GID} (written before the umask/group set-up?): sudo chgrp -R ${HOST_GID} ${dir} && sudo chmod -R g+w ${dir}"
    elif [[ ! -w "${dir}" ]]; then
        report WARN "shared path ${dir}/: fine for the containers, but not writable by you ($(id -un)): run as HOST_UID ${HOST_UID}"
    else
        report PASS "shared path ${dir}/: writable by ${HOST_UID}:${HOST_GID} (jupyter and verl)"
    fi
done

echo "doctor: ${n_pass} PASS, ${n_warn} WARN, ${n_fail} FAIL"
((n_fail == 0))
