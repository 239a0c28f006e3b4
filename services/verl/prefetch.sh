#!/usr/bin/env bash
# One-shot set-up (the `setup` compose service): download the base model and GSM8K into the shared Hugging
# Face cache, then prepare data/gsm8k/ and cache the capability check's benchmark data, so training and
# evaluation can run with HF_HUB_OFFLINE=1 afterwards.
#
#   docker compose --profile setup run --rm setup                              # what the README runs
#   docker compose --profile setup run --rm setup prefetch.sh --val-size 256   # extra args go to data/prepare_gsm8k.py
#
# (Arguments after the service name replace its command, so extra arguments follow `prefetch.sh`.)
#
# Env: MODEL (a preset of verl_configs/models/, default qwen2.5-0.5b) and BASE_MODEL (a hub id in its place), which
# pick the model as RL does (scripts/lib/model_presets), MODEL_REVISION, GSM8K_DATASET (openai/gsm8k),
# GSM8K_REVISION, DATA_DIR (/workspace/data/gsm8k), HF_HOME (/cache/huggingface), HF_TOKEN (only for gated models).
set -euo pipefail

# Files land in the shared cache and the bind-mounted repo: keep them group-writable (docker-compose.yml).
umask 0002

GSM8K_DATASET=${GSM8K_DATASET:-openai/gsm8k}
DATA_DIR=${DATA_DIR:-/workspace/data/gsm8k}
REPO_ROOT=${REPO_ROOT:-/workspace}

if [[ "${HF_HUB_OFFLINE:-0}" =~ ^(1|true|True|yes)$ ]]; then
    echo "prefetch.sh: HF_HUB_OFFLINE=${HF_HUB_OFFLINE} but this step downloads: run it with HF_HUB_OFFLINE=0" >&2
    exit 2
fi

cd "${REPO_ROOT}"  # python -m finds the repo's packages here
model=$(python -m scripts.lib.model_presets)  # MODEL's preset, or BASE_MODEL; an unknown MODEL stops here
model_args=()
[[ -n "${MODEL_REVISION:-}" ]] && model_args+=(--revision "${MODEL_REVISION}")
data_args=()
[[ -n "${GSM8K_REVISION:-}" ]] && data_args+=(--revision "${GSM8K_REVISION}")

echo "== 1/4 model ${model}${MODEL_REVISION:+@${MODEL_REVISION}} -> ${HF_HOME:-~/.cache/huggingface}"
if [[ -d "${model}" ]]; then
    echo "a local folder: nothing to download"
else
    hf download "${model}" "${model_args[@]}"
fi

echo "== 2/4 dataset ${GSM8K_DATASET}${GSM8K_REVISION:+@${GSM8K_REVISION}}"
hf download --repo-type dataset "${GSM8K_DATASET}" "${data_args[@]}"

echo "== 3/4 data prep -> ${DATA_DIR}"
python -m data.prepare_gsm8k --source "${GSM8K_DATASET}" "${data_args[@]}" \
    --output-dir "${DATA_DIR}" "$@"

echo "== 4/4 capability check data (scripts/eval/capability.yaml: ARC-Challenge, HellaSwag, MMLU)"
python -m scripts.eval.capability --prefetch

echo "Done. Training can now run offline: set HF_HUB_OFFLINE=1 in .env, then docker compose up -d"
