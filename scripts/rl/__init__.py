"""RL with verl: `launch` (the one entry point behind run_ppo.sh / run_grpo.sh), `config` (compose and check
verl configs), `preflight` (what a launch checks first), `cpu_plugin` (verl + vLLM on a machine without GPUs)."""
