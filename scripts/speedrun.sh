#!/usr/bin/env bash
# The whole pipeline, unattended, from the host: data -> SFT notebook -> PPO -> GRPO (or ALGOS) -> evaluation
# report, then a report card in the terminal and one MLflow "pipeline" run linking every stage's run.
#
#   bash scripts/speedrun.sh              # after `bash scripts/init_env.sh && docker compose up -d`
#   QUICK=1 bash scripts/speedrun.sh      # the whole path in minutes: 20 SFT steps, 2 RL steps each,
#                                         # 50 test problems (numbers are for trying it out, not for reading)
#   FROM=ppo bash scripts/speedrun.sh     # redo ppo and everything after it (stages: data sft ppo grpo eval)
#   ALGOS=ppo,grpo,rloo bash scripts/speedrun.sh   # the RL stages: any of verl_configs/<algo>_gsm8k.yaml
#
# Each stage runs in the container that owns it (`docker compose exec`, as the stack's user), with its log in
# models/speedrun/<stage>.log. A stage whose output is complete (its marker models/speedrun/<stage>.done
# and the files it made) is skipped, so rerunning after a failure continues where it stopped; a failing stage
# stops the run, naming the stage, its log and the command that resumes.
#
# Knobs (environment): QUICK=1; FROM=<stage>; ALGOS (default ppo,grpo); COMPOSE (default `docker compose`: the stack of this checkout,
# .env's COMPOSE_FILE included); extra arguments per stage: DATA_ARGS (prepare_gsm8k.py), SFT_ARGS (papermill
# `-p name value` pairs), RL_ARGS (Hydra overrides for every RL run), EVAL_ENV (`NAME=value ...` for
# scripts.eval.run_all). Roughly, on 4x H100: data 1 min, SFT 15 min, PPO and GRPO hours (15 epochs), eval 20 min.
set -euo pipefail

cd "$(dirname "$0")/.."
read -ra compose <<<"${COMPOSE:-docker compose}"
ALGOS=${ALGOS:-ppo,grpo}
read -ra algos <<<"${ALGOS//,/ }"
STAGES=(data sft "${algos[@]}" eval)
OUT=models/speedrun
QUICK=${QUICK:-0}
FROM=${FROM:-}
read -ra data_args <<<"${DATA_ARGS:-}"
read -ra sft_args <<<"${SFT_ARGS:-}"
read -ra rl_args <<<"${RL_ARGS:-}"
read -ra eval_env <<<"${EVAL_ENV:-}"
if [[ "${QUICK}" == 1 ]]; then
    sft_args=(-p max_steps 20 -p eval_samples 32 -p logging_steps 5 "${sft_args[@]}")
    rl_args=(trainer.total_training_steps=2 trainer.save_freq=2 trainer.test_freq=2 "${rl_args[@]}")
    eval_env=(LIMIT=50 "${eval_env[@]}")
fi

die() {
    echo "speedrun.sh: $*" >&2
    exit 1
}
for algo in "${algos[@]}"; do
    [[ -f "verl_configs/${algo}_gsm8k.yaml" ]] ||
        die "ALGOS names ${algo}, which has no verl_configs/${algo}_gsm8k.yaml; the algorithms: $(
            cd verl_configs && for f in *_gsm8k.yaml; do printf '%s ' "${f%_gsm8k.yaml}"; done
        )"
done
if [[ -n "${FROM}" && ! " ${STAGES[*]} " == *" ${FROM} "* ]]; then
    die "FROM=${FROM} is not a stage; stages: ${STAGES[*]}"
fi
experiment() { echo "$1-speedrun"; } # an RL stage's experiment: models/rl/<algo>-speedrun
# The stack's user makes the folder (the notebook writes its executed copy there), whoever runs this script.
"${compose[@]}" exec -T verl mkdir -p "/workspace/${OUT}" ||
    die "the stack does not answer (${compose[*]} exec verl): bring it up first with docker compose up -d"

# The files a stage leaves when it is complete: its marker is trusted only while these exist.
outputs() {
    case "$1" in
    data) echo data/gsm8k/train.parquet data/gsm8k/test.parquet ;;
    sft) echo models/sft/latest.json ;;
    eval) echo models/eval/report/report.json ;;
    *) echo "models/rl/$(experiment "$1")/latest_checkpointed_iteration.txt" ;;
    esac
}

complete() {
    local file
    [[ -f "${OUT}/$1.done" ]] || return 1
    for file in $(outputs "$1"); do
        [[ -f "${file}" ]] || return 1
    done
}

# The command that runs a stage in its container (into the array `cmd`). Data prep reads the stack's GSM8K source
# (.env's GSM8K_DATASET) and the notebook starts from its MODEL preset (or BASE_MODEL), as RL and evaluation do.
stage_command() {
    local kv
    # shellcheck disable=SC2016 # ${GSM8K_SOURCE}, ${BASE_MODEL}, ${MODEL} and $@ expand in the containers
    case "$1" in
    data) cmd=(exec -T verl sh -c 'exec python -m data.prepare_gsm8k --source "${GSM8K_SOURCE}" "$@"' \
        prepare "${data_args[@]}") ;;
    sft) cmd=(exec -T -w /workspace/notebooks jupyter sh -c 'exec papermill sft_training.ipynb "$0" \
        --log-output -p model "${BASE_MODEL:-${MODEL:-}}" "$@"' "/workspace/${OUT}/sft_training.ipynb" "${sft_args[@]}") ;;
    eval)
        cmd=(exec -T -e "ALGOS=${algos[*]}")
        for algo in "${algos[@]}"; do cmd+=(-e "${algo^^}_EXPERIMENT=$(experiment "${algo}")"); done
        for kv in "${eval_env[@]}"; do cmd+=(-e "${kv}"); done
        cmd+=(verl python -m scripts.eval.run_all)
        ;;
    *) cmd=(exec -T -e "EXPERIMENT=$(experiment "$1")" verl bash run_rl.sh "$1" "${rl_args[@]}") ;;
    esac
}

redo=0
for stage in "${STAGES[@]}"; do
    [[ "${stage}" == "${FROM}" ]] && redo=1
    if ((!redo)) && complete "${stage}"; then
        echo "speedrun.sh: ${stage}: complete, skipped ($(outputs "${stage}"))"
        continue
    fi
    rm -f "${OUT}/${stage}.done"
    stage_command "${stage}"
    log="${OUT}/${stage}.log"
    echo "speedrun.sh: ${stage}: ${compose[*]} ${cmd[*]}  (log: ${log})"
    start=$(date +%s)
    if ! "${compose[@]}" "${cmd[@]}" >"${log}" 2>&1; then
        tail -n 20 "${log}" >&2
        die "stage '${stage}' failed after $(($(date +%s) - start)) s; log: ${log}
  fix the cause, then resume with: bash scripts/speedrun.sh   (completed stages are skipped)"
    fi
    printf '{"stage": "%s", "seconds": %d, "finished": "%s"}\n' \
        "${stage}" "$(($(date +%s) - start))" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"${OUT}/${stage}.done"
done

# The report card: accuracy with CIs, capability check, wall time and GPU hours per stage; MLflow pipeline run.
"${compose[@]}" exec -T verl python -m scripts.eval.report_card --algos "${algos[*]}" --quick "${QUICK}"
