#!/usr/bin/env bash
# Turn a verl FSDP actor checkpoint into a Hugging Face model directory (from_pretrained / vLLM ready).
#
#   bash scripts/export_checkpoint.sh models/rl/ppo-qwen2.5-0.5b-instruct            # latest step
#   bash scripts/export_checkpoint.sh models/rl/<experiment>/global_step_100          # one step
#   bash scripts/export_checkpoint.sh models/rl/<experiment>/global_step_100/actor /tmp/hf-model
#   docker compose exec verl bash export_checkpoint.sh /workspace/models/rl/<experiment>
#
# CHECKPOINT is an experiment folder (its newest complete step: scripts/lib/checkpoints.py), a
# global_step_N folder, or its actor/ folder. TARGET defaults to <global_step_N>/actor/huggingface,
# where verl writes Hugging Face weights itself when actor.checkpoint.save_contents has hf_model
# (the verl_configs default): then nothing needs merging and this only says where the model is (or
# copies it to TARGET). Otherwise it runs `python -m verl.model_merger merge --backend fsdp` into a
# temporary folder and moves the result into place, so TARGET is never half-written.
# Env: PYTHON (default python3), the interpreter with verl installed.
set -euo pipefail

usage="usage: bash scripts/export_checkpoint.sh CHECKPOINT [TARGET]"
src="${1:?${usage}}"
target="${2:-}"
python="${PYTHON:-python3}"

die() {
    echo "error: $*" >&2
    exit 1
}

[[ -d "${src}" ]] || die "${src} is not a directory. ${usage}"
src="$(cd "${src}" && pwd)"
if compgen -G "${src}/global_step_*" >/dev/null; then # an experiment folder: its newest complete checkpoint
    find_step='import sys, pathlib; from scripts.lib.checkpoints import latest_step; print(latest_step(pathlib.Path(sys.argv[1])))'
    step="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && "${python}" -c "${find_step}" "${src}")"
    src="${src}/global_step_${step}"
    echo "latest checkpoint: ${src}"
fi
if [[ -d "${src}/actor" ]]; then
    src="${src}/actor"
fi
[[ -f "${src}/fsdp_config.json" ]] ||
    die "${src} is not an FSDP actor checkpoint (no fsdp_config.json): pass models/rl/<experiment>, a global_step_N folder or its actor/ folder"

hf_dir="${src}/huggingface"
target="${target:-${hf_dir}}"
if compgen -G "${hf_dir}/*.safetensors" >/dev/null; then
    if [[ "${target}" -ef "${hf_dir}" ]]; then
        echo "Hugging Face weights already saved with the checkpoint (hf_model): ${hf_dir}"
        exit 0
    fi
    [[ ! -e "${target}" ]] || die "${target} already exists: remove it or pick another TARGET"
    mkdir -p "$(dirname "${target}")"
    cp -r "${hf_dir}" "${target}.partial.$$"
    mv "${target}.partial.$$" "${target}"
    echo "Hugging Face model: ${target} (copied from ${hf_dir})"
    exit 0
fi

# Merge the FSDP shards into a temporary folder next to TARGET, then swap it into place.
mkdir -p "$(dirname "${target}")"
partial="$(mktemp -d "${target%/}.partial.XXXXXX")"
trap 'rm -rf "${partial}"' EXIT
"${python}" -m verl.model_merger merge --backend fsdp --local_dir "${src}" --target_dir "${partial}"
compgen -G "${partial}/*.safetensors" >/dev/null || die "verl.model_merger wrote no weights into ${partial}"
if [[ -e "${target}" ]]; then
    mv "${target}" "${partial}.old"
    mv "${partial}" "${target}"
    rm -rf "${partial}.old"
else
    mv "${partial}" "${target}"
fi
trap - EXIT
echo "Hugging Face model: ${target}"
