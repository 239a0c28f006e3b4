#!/usr/bin/env bash
# PPO (GAE critic) on GSM8K with verl: FSDP2 actor + vLLM rollout, tracked in MLflow. The product's command for
# `bash run_rl.sh ppo` (any algorithm of verl_configs/: run_rl.sh).
#
#   docker compose exec verl bash run_ppo.sh                     # 4 GPUs, from the latest SFT checkpoint
#   docker compose exec verl bash run_ppo.sh --dry-run           # compose + validate only, no GPU needed
#   N_GPUS=1 REWARD=gsm8k_flexible bash scripts/run_ppo.sh trainer.total_epochs=1   # env knobs + Hydra overrides
#
# Hyperparameters: verl_configs/ppo_gsm8k.yaml; env knobs (PYTHON: the one with verl): docs/rl.md.
exec bash "$(dirname "${BASH_SOURCE[0]}")/run_rl.sh" ppo "$@"
