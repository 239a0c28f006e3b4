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
# copies it to TARGET). Otherwise it runs `python -m verl.model_merger merge --backend fsdp`. Either way
# TARGET is written whole beside itself and swapped in: never half-written, even under kill -9.
# A LoRA run (actor_rollout_ref.model.lora_rank > 0) gets its adapter merged into the base with peft
# (scripts/lib/lora.py): verl saves the PEFT state dict as hf_model, and its merger the base and the
# adapter apart (TARGET/lora_adapter), neither of which loads as the trained model.
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
target="$(realpath -m -- "${target:-${hf_dir}}")" # absolute: the merge below runs from the repo root
if compgen -G "${hf_dir}/*.safetensors" >/dev/null; then
    # a LoRA run's PEFT state dict becomes the merged model (in place, once); anything else is left as it is
    merge_lora='import sys, pathlib; from scripts.lib.lora import merge_verl_checkpoint; merge_verl_checkpoint(pathlib.Path(sys.argv[1]))'
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && "${python}" -c "${merge_lora}" "${src}")
    if [[ "${target}" -ef "${hf_dir}" ]]; then
        # Nothing to write; only the temporary copy an export killed right after its swap may be left to clear.
        clear='import sys, pathlib; from scripts.lib.atomic import clear_stale; clear_stale(pathlib.Path(sys.argv[1]))'
        (cd "$(dirname "${BASH_SOURCE[0]}")/.." && "${python}" -c "${clear}" "${hf_dir}")
        echo "Hugging Face weights already saved with the checkpoint (hf_model): ${hf_dir}"
        exit 0
    fi
    [[ ! -e "${target}" ]] || die "${target} already exists: remove it or pick another TARGET"
fi
# Copy the saved weights, or merge the FSDP shards with verl's merger, into a temporary folder beside TARGET
# that then replaces it in one rename (scripts/lib/atomic.py): an interrupted export leaves TARGET as it was.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
"${python}" - "${src}" "${hf_dir}" "${target}" <<'PY'
import shutil, subprocess, sys
from pathlib import Path
from scripts.lib.atomic import atomic_dir
src, hf_dir, target = sys.argv[1:]
with atomic_dir(target, replace=True) as tmp:
    if any(Path(hf_dir).glob("*.safetensors")):
        shutil.copytree(hf_dir, tmp, dirs_exist_ok=True)
    else:
        merge = ["-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", src, "--target_dir", tmp]
        subprocess.run([sys.executable, *merge], check=True)
        if not any(tmp.glob("*.safetensors")):
            sys.exit(f"error: verl.model_merger wrote no weights into {tmp}")
        if (tmp / "lora_adapter").is_dir():  # the base and a LoRA adapter apart: merged with peft
            from scripts.lib.lora import merged_model

            merged = merged_model(tmp, tmp / "lora_adapter")
            for old in tmp.glob("*.safetensors"):
                old.unlink()
            merged.save_pretrained(tmp)
PY
echo "Hugging Face model: ${target}"
