#!/usr/bin/env bash
# PPO (GAE critic) on GSM8K with verl: FSDP2 actor + vLLM rollout, tracked in MLflow.
#
#   docker compose exec verl bash run_ppo.sh                     # 4 GPUs, from the latest SFT checkpoint
#   docker compose exec verl bash run_ppo.sh --dry-run           # compose + validate only, no GPU needed
#   N_GPUS=1 bash scripts/run_ppo.sh trainer.total_epochs=1      # env knobs + Hydra overrides
#
# Hyperparameters: verl_configs/ppo_gsm8k.yaml (+ gsm8k_base.yaml). Env knobs: scripts/_launch_rl.sh.
# Checkpoints: models/rl/<experiment>/global_step_N/ (HF weights in actor/huggingface); rerunning the
# same command resumes from the last one and logs into the same MLflow run.
set -euo pipefail

ALGO=ppo
# shellcheck source-path=SCRIPTDIR source=_launch_rl.sh
source "$(dirname "${BASH_SOURCE[0]}")/_launch_rl.sh"
