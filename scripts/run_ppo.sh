#!/usr/bin/env bash
# PPO (GAE critic) on GSM8K with verl: FSDP2 actor + vLLM rollout, tracked in MLflow.
#
#   docker compose exec verl bash run_ppo.sh                     # 4 GPUs, from the latest SFT checkpoint
#   docker compose exec verl bash run_ppo.sh --dry-run           # compose + validate only, no GPU needed
#   N_GPUS=1 REWARD=gsm8k_flexible bash scripts/run_ppo.sh trainer.total_epochs=1   # env knobs + Hydra overrides
#
# Hyperparameters: verl_configs/ppo_gsm8k.yaml; env knobs (PYTHON: the one with verl): docs/rl.md.
set -euo pipefail

# The repo root on PYTHONPATH (the containers set /workspace): Ray's workers import scripts/rl/cpu_plugin.py from it on CPU.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}" exec "${PYTHON:-python3}" -m scripts.rl.launch --algo ppo "$@"
