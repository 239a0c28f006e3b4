#!/usr/bin/env bash
# Any RL algorithm of verl_configs/ (the folder is the list: <algo>_gsm8k.yaml) on GSM8K with verl, tracked in MLflow.
#
#   docker compose exec verl bash run_rl.sh rloo                     # 4 GPUs, from the latest SFT checkpoint
#   docker compose exec verl bash run_rl.sh dapo --dry-run           # compose + validate only, no GPU needed
#   N_GPUS=1 REWARD=gsm8k_flexible bash scripts/run_rl.sh gspo trainer.total_epochs=1   # env knobs + Hydra overrides
#
# Hyperparameters: verl_configs/<algo>_gsm8k.yaml; env knobs (PYTHON: the one with verl): docs/rl.md.
set -euo pipefail

algo=${1:-}  # the launcher refuses a name without a config, listing the ones there are
shift || true
# The repo root on PYTHONPATH (the containers set /workspace): Ray's workers import scripts/rl/cpu_plugin.py on CPU.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}" exec "${PYTHON:-python3}" -m scripts.rl.launch --algo "${algo}" "$@"
