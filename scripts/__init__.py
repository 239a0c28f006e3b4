"""The pipeline's stages after data prep: `rl` (verl launch), `eval` (evaluation, report), `bench`, and `lib`,
what the stages share. Entry points run as modules (`python -m scripts.eval.evaluate`); shell entry points
(`run_ppo.sh`, `speedrun.sh`, ...) sit at this level, where `docker compose exec verl bash run_ppo.sh` finds them.
"""
