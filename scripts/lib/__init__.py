"""Code the entry points share (paths, atomic writes, MLflow health, manifests, statistics, evaluation).

Import as `scripts.lib.<module>`; the repo is installed with `pip install -e .` (tests) or on PYTHONPATH
(containers). Scripts under scripts/ import from here, never from each other.
"""
