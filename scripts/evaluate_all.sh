#!/usr/bin/env bash
# Evaluate base, SFT, PPO and GRPO on the GSM8K test split, then write the comparison report.
#
#   docker compose exec verl bash evaluate_all.sh             # vLLM on a GPU, all 1319 test problems
#   LIMIT=50 BACKEND=hf bash scripts/evaluate_all.sh          # quick look on a laptop (transformers, CPU)
#   FORCE=1 bash scripts/evaluate_all.sh --max-new-tokens 1024   # arguments go to every evaluate.py call
#
# Models, each skipped with the reason when it is not there:
#   base  BASE_MODEL (default Qwen/Qwen2.5-0.5B-Instruct, from the HF cache)
#   sft   SFT_MODEL, else `path` in models/sft/latest.json (the SFT notebook's manifest)
#   ppo   PPO_MODEL, else the newest checkpoint of the verl experiment PPO_EXPERIMENT (a folder name under
#         models/rl/ or a path; default: the most recently written models/rl/ppo-* folder, the name
#         run_ppo.sh gives it): global_step_N/actor/huggingface, N from latest_checkpointed_iteration.txt
#   grpo  the same with GRPO_MODEL / GRPO_EXPERIMENT / models/rl/grpo-*
#
# Outputs: models/eval/<label>.json (evaluate.py: accuracy, intervals, every generation), then
# models/eval/report/{report.md,report.json,accuracy.png} (scripts/report.py), also logged as one MLflow
# run in experiment EVAL_EXPERIMENT (default gsm8k-eval) when MLFLOW_TRACKING_URI is set.
# A label whose JSON already exists, made from the same model, data and LIMIT, is not evaluated again
# (so an interrupted run resumes); FORCE=1 re-evaluates everything, which changed arguments need.
# A label whose model is gone but whose JSON exists stays in the report.
#
# Environment (all optional): DATA_DIR (default <repo>/data/gsm8k; prepared if test.parquet is missing),
# BACKEND (auto|vllm|hf, default auto), LIMIT (first N problems; default all), FORCE (1 = re-evaluate),
# MODELS (default "base sft ppo grpo"), MODELS_DIR (default <repo>/models), SFT_MANIFEST, RL_DIR,
# EVAL_DIR (default $MODELS_DIR/eval), REPORT_DIR (default $EVAL_DIR/report), PYTHON (default python3).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
MODELS_DIR="${MODELS_DIR:-${REPO_ROOT}/models}"
DATA_DIR="${DATA_DIR:-${REPO_ROOT}/data/gsm8k}"
EVAL_DIR="${EVAL_DIR:-${MODELS_DIR}/eval}"
REPORT_DIR="${REPORT_DIR:-${EVAL_DIR}/report}"
SFT_MANIFEST="${SFT_MANIFEST:-${MODELS_DIR}/sft/latest.json}"
RL_DIR="${RL_DIR:-${MODELS_DIR}/rl}"
BASE_MODEL="${BASE_MODEL:-Qwen/Qwen2.5-0.5B-Instruct}"
BACKEND="${BACKEND:-auto}"
LIMIT="${LIMIT:-}"
FORCE="${FORCE:-0}"
MODELS="${MODELS:-base sft ppo grpo}"
EVAL_EXPERIMENT="${EVAL_EXPERIMENT:-gsm8k-eval}"

# Set by resolve_model: the model to evaluate, or why there is none.
MODEL=""
WHY=""

# A path written inside the containers (/workspace/...) as seen from this checkout, when only that exists.
host_path() {
    local path="$1"
    if [[ ! -e "${path}" && "${path}" == /workspace/* && -e "${REPO_ROOT}/${path#/workspace/}" ]]; then
        path="${REPO_ROOT}/${path#/workspace/}"
    fi
    echo "${path}"
}

has_weights() {
    compgen -G "$1/*.safetensors" >/dev/null || compgen -G "$1/pytorch_model*.bin" >/dev/null
}

# The newest verl experiment folder $RL_DIR/<algo>-* (most recently written), listing the others.
newest_experiment() {
    local algo="$1" best="" candidate
    local -a found=()
    for candidate in "${RL_DIR}/${algo}"-*; do
        [[ -d "${candidate}" ]] || continue
        found+=("${candidate}")
        if [[ -z "${best}" || "${candidate}" -nt "${best}" ]]; then
            best="${candidate}"
        fi
    done
    if ((${#found[@]} > 1)); then
        echo "${algo}: ${#found[@]} experiments in ${RL_DIR} (${found[*]##*/}); using the newest, ${best##*/}" \
            "(set ${algo^^}_EXPERIMENT to pick another)" >&2
    fi
    echo "${best}"
}

# MODEL = the Hugging Face weights of the newest checkpoint in verl experiment folder $1.
rl_checkpoint_model() {
    local exp="$1" step dir
    if [[ -f "${exp}/latest_checkpointed_iteration.txt" ]]; then
        step="$(tr -d '[:space:]' <"${exp}/latest_checkpointed_iteration.txt")"
    else # verl skips the tracker with async_save: take the highest global_step_N
        step="$(find "${exp}" -maxdepth 1 -type d -name 'global_step_*' | sed 's/.*global_step_//' | sort -n | tail -n 1)"
    fi
    if [[ ! "${step}" =~ ^[0-9]+$ ]]; then
        WHY="no checkpoint in ${exp} yet (no latest_checkpointed_iteration.txt or global_step_N folder)"
        return 1
    fi
    dir="${exp}/global_step_${step}/actor/huggingface"
    if ! has_weights "${dir}"; then
        WHY="the step-${step} checkpoint has no Hugging Face weights in ${dir} (hf_model not in"
        WHY+=" actor.checkpoint.save_contents); make them with: bash scripts/export_checkpoint.sh ${exp}"
        return 1
    fi
    MODEL="$(cd "${dir}" && pwd)"
}

# MODEL = what to evaluate for label $1, or WHY not; returns 1 when there is nothing.
resolve_model() {
    local label="$1" override path experiment
    MODEL=""
    WHY=""
    case "${label}" in
    base)
        MODEL="${BASE_MODEL}"
        if [[ -d "${MODEL}" ]]; then MODEL="$(cd "${MODEL}" && pwd)"; fi
        ;;
    sft)
        if [[ -n "${SFT_MODEL:-}" ]]; then
            path="${SFT_MODEL}"
        elif [[ -f "${SFT_MANIFEST}" ]]; then
            path="$("${PYTHON}" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("path") or "")' \
                "${SFT_MANIFEST}")" || true
            if [[ -z "${path}" ]]; then
                WHY="${SFT_MANIFEST} has no \"path\"; rerun notebooks/sft_training.ipynb or set SFT_MODEL"
                return 1
            fi
            if [[ "${path}" != /* ]]; then path="${REPO_ROOT}/${path}"; fi
            path="$(host_path "${path}")"
        else
            WHY="no SFT manifest at ${SFT_MANIFEST}; run notebooks/sft_training.ipynb or set SFT_MODEL"
            return 1
        fi
        if [[ ! -f "${path}/config.json" ]]; then
            WHY="no model at ${path} (no config.json)"
            return 1
        fi
        MODEL="$(cd "${path}" && pwd)"
        ;;
    ppo | grpo)
        override="${label^^}_MODEL"
        if [[ -n "${!override:-}" ]]; then
            MODEL="${!override}"
            if [[ -d "${MODEL}" ]]; then MODEL="$(cd "${MODEL}" && pwd)"; fi
            return 0
        fi
        override="${label^^}_EXPERIMENT"
        experiment="${!override:-}"
        if [[ -n "${experiment}" && "${experiment}" != */* ]]; then experiment="${RL_DIR}/${experiment}"; fi
        if [[ -z "${experiment}" ]]; then experiment="$(newest_experiment "${label}")"; fi
        if [[ -z "${experiment}" ]]; then
            WHY="no ${RL_DIR}/${label}-* experiment; train with scripts/run_${label}.sh or set ${label^^}_EXPERIMENT"
            return 1
        fi
        if [[ ! -d "${experiment}" ]]; then
            WHY="${override}: no folder ${experiment}"
            return 1
        fi
        rl_checkpoint_model "${experiment}" || return 1
        ;;
    *)
        WHY="unknown label (MODELS may hold base, sft, ppo, grpo)"
        return 1
        ;;
    esac
}

# Prints why result file $1 is not an evaluation of model $2 on data $3 with LIMIT $4; nothing if it is.
# Paths written inside the containers (/workspace/...) count as this checkout's.
stale_reason() {
    "${PYTHON}" - "$@" "${REPO_ROOT}" <<'PY'
import json
import sys

import pyarrow.parquet as pq

path, model, data, limit, repo = sys.argv[1:6]


def same(a, b):
    def host(p):
        return repo + p[len("/workspace"):] if isinstance(p, str) and p.startswith("/workspace/") else p

    return host(a) == host(b)


try:
    result = json.loads(open(path).read())
except (OSError, ValueError) as exc:
    print(f"{path} is unreadable ({exc})")
    sys.exit()
rows = pq.ParquetFile(data).metadata.num_rows
expected = min(rows, int(limit)) if limit else rows
if not same(result.get("model"), model):
    print(f"it was made from {result.get('model')}, not {model}")
elif not same(result.get("data"), data):
    print(f"it was made on {result.get('data')}, not {data}")
elif result.get("n") != expected:
    print(f"it covers {result.get('n')} problems, not {expected}")
PY
}

DATA="${DATA_DIR}/test.parquet"
if [[ ! -f "${DATA}" ]]; then
    echo "no ${DATA}: preparing GSM8K into ${DATA_DIR} first"
    "${PYTHON}" "${REPO_ROOT}/data/prepare_gsm8k.py" --output-dir "${DATA_DIR}" ${GSM8K_SOURCE:+--source "${GSM8K_SOURCE}"}
fi
DATA="$(cd "$(dirname "${DATA}")" && pwd)/test.parquet"

mkdir -p "${EVAL_DIR}"
reported=()
skipped=()
for label in ${MODELS}; do
    out="${EVAL_DIR}/${label}.json"
    if ! resolve_model "${label}"; then
        if [[ -f "${out}" ]]; then
            echo "== ${label}: ${WHY}; reporting the existing ${out}"
            reported+=("${label}")
        else
            echo "== ${label}: skipped: ${WHY}"
            skipped+=("${label}")
        fi
        continue
    fi
    if [[ -f "${out}" && "${FORCE}" != 1 ]]; then
        reason="$(stale_reason "${out}" "${MODEL}" "${DATA}" "${LIMIT}")"
        if [[ -z "${reason}" ]]; then
            echo "== ${label}: ${out} is up to date for ${MODEL} (FORCE=1 re-evaluates)"
            reported+=("${label}")
            continue
        fi
        echo "== ${label}: re-evaluating, ${out} is stale: ${reason}"
    fi
    echo "== ${label}: evaluating ${MODEL} on ${DATA}${LIMIT:+ (first ${LIMIT})} with backend ${BACKEND}"
    args=(--model "${MODEL}" --data "${DATA}" --backend "${BACKEND}" --output "${out}")
    if [[ -n "${LIMIT}" ]]; then args+=(--limit "${LIMIT}"); fi
    started=${SECONDS}
    "${PYTHON}" "${REPO_ROOT}/scripts/evaluate.py" "${args[@]}" "$@"
    echo "== ${label}: done in $((SECONDS - started)) s -> ${out}"
    reported+=("${label}")
done

if ((${#reported[@]} == 0)); then
    echo "error: no model to report on (skipped: ${skipped[*]}); see the reasons above" >&2
    exit 1
fi
files=()
for label in "${reported[@]}"; do files+=("${EVAL_DIR}/${label}.json"); done
report_args=(--labels "$(
    IFS=,
    echo "${reported[*]}"
)" --output-dir "${REPORT_DIR}")
if [[ -n "${MLFLOW_TRACKING_URI:-}" ]]; then report_args+=(--mlflow-experiment "${EVAL_EXPERIMENT}"); fi
"${PYTHON}" "${REPO_ROOT}/scripts/report.py" "${files[@]}" "${report_args[@]}"
if ((${#skipped[@]} > 0)); then
    echo "not in the report (see the reasons above): ${skipped[*]}"
fi
