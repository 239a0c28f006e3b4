#!/usr/bin/env bash
# Shared by run_ppo.sh and run_grpo.sh (sourced after they set ALGO): one exec of scripts/rl_launch.py
# (`python -m scripts.rl_launch`), which reads the environment knobs below (once, as its flags' defaults),
# picks the model, prepares data, runs the preflight, composes + validates verl_configs/${ALGO}_gsm8k.yaml
# and execs verl's main_ppo (with N_GPUS=0 on CPU: verl_configs/cpu.yaml + scripts/rl_cpu.py).
#
# Environment (all optional):
#   MODEL_PATH       model dir or hub id        (default: models/sft/latest.json's SFT checkpoint,
#                                                else BASE_MODEL, else Qwen/Qwen2.5-0.5B-Instruct)
#   N_GPUS           GPUs per node              (default: 4; 0: CPU, verl_configs/cpu.yaml)
#   NNODES           Ray nodes                  (default: 1; >1 needs worker nodes joined to the head)
#   DATA_DIR         GSM8K parquet dir          (default: <repo>/data/gsm8k; prepared if missing)
#   EXPERIMENT       MLflow run + ckpt folder   (default: <algo>-<model folder name>)
#   CHECKPOINT_DIR   absolute checkpoint dir    (default: <repo>/models/rl/$EXPERIMENT)
#   MLFLOW_TRACKING_URI                         (default: http://mlflow:5000, the compose service)
#   RAY_NUM_CPUS     CPUs for a Ray that main_ppo starts itself (default: max(nproc, verl's budget
#                    3 x GPUs + TransferQueue storage units + 1); CPU runs: cpu.yaml's 16)
#   GSM8K_SOURCE     data prep source           (default: the openai/gsm8k hub dataset)
#   PYTHON           interpreter with verl      (default: python3; outside the stack on CPU: .venv-verl/bin/python)
# Arguments: --dry-run, --skip-preflight, then Hydra overrides (key=value, +key=value, ++key=value).

if [[ -z "${ALGO:-}" ]]; then
    echo "_launch_rl.sh is sourced by run_ppo.sh / run_grpo.sh (ALGO unset)" >&2
    exit 2
fi

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The repo root on PYTHONPATH (the containers already set /workspace): `scripts.rl_launch` imports the
# repo's packages, and verl's Ray workers inherit it to import scripts/rl_cpu.py on CPU.
PYTHONPATH="${REPO_ROOT}${PYTHONPATH:+:${PYTHONPATH}}" exec "${PYTHON:-python3}" -m scripts.rl_launch --algo "${ALGO}" "$@"
