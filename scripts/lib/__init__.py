"""What the stages share: paths, atomic writes, checkpoints and manifests, MLflow health and resilience, Ray
start-up, vLLM's CPU build, the tiny offline test model.

The lowest layer above `rewards`: it imports nothing from `data`, `notebooks` or the other `scripts` packages.
Import as `scripts.lib.<module>`; the repo is installed with `pip install -e .` (tests) or on PYTHONPATH
(containers).
"""
