"""Where things are: the repo root and container <-> host path spelling (the default model: scripts/lib/model_presets).

Inside the jupyter and verl containers the repo is mounted at /workspace; on the host it is wherever it was
cloned. Files written in a container (manifests, result JSONs) may hold /workspace paths.

    >>> to_host("/workspace/models/x", root=Path("/repo"), exists=lambda p: p == Path("/repo/models/x"))
    PosixPath('/repo/models/x')
    >>> display_path("/workspace/models/sft/r1", root=Path("/repo"))
    'models/sft/r1'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINER_ROOT = Path("/workspace")
MODELS_DIR = REPO_ROOT / "models"  # SFT checkpoints, RL experiments (rl/), evaluation results (eval/)
DATA_DIR = REPO_ROOT / "data" / "gsm8k"
VERL_CONFIGS = REPO_ROOT / "verl_configs"  # one <algo>_gsm8k.yaml per RL algorithm, on gsm8k_base.yaml
PIPELINE_ALGOS = ("ppo", "grpo")  # what the pipeline trains and evaluates unless ALGOS says otherwise


def algorithms(config_dir: Path = VERL_CONFIGS) -> list[str]:
    """The RL algorithms this checkout can run: the folder is the list (verl_configs/<algo>_gsm8k.yaml)."""
    return sorted(p.name.removesuffix("_gsm8k.yaml") for p in config_dir.glob("*_gsm8k.yaml"))


def parse_algos(value: str, config_dir: Path = VERL_CONFIGS) -> list[str]:
    """ALGOS (`ppo,grpo,rloo` or space-separated) as a list; an unknown name is a ValueError naming the choices."""
    algos = [a for a in value.replace(",", " ").split() if a] or list(PIPELINE_ALGOS)
    if unknown := [a for a in algos if a not in algorithms(config_dir)]:
        raise ValueError(
            f"ALGOS names {', '.join(unknown)}: no verl_configs/<algo>_gsm8k.yaml; "
            f"choose from {', '.join(algorithms(config_dir))}"
        )
    return algos


def sft_manifest(models_dir: Path = MODELS_DIR) -> Path:
    """The manifest the SFT notebook writes and RL and evaluation read: <models_dir>/sft/latest.json."""
    return models_dir / "sft" / "latest.json"


SFT_MANIFEST = sft_manifest()


def under_repo(path: str | os.PathLike[str], root: Path = REPO_ROOT) -> Path:
    """`path` with `~` expanded; a relative path is taken under the repo root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


def to_host(
    path: str | os.PathLike[str], root: Path = REPO_ROOT, exists: Callable[[Path], bool] = Path.exists
) -> Path:
    """A /workspace/... path as this checkout spells it, when only that one exists; otherwise unchanged."""
    path = Path(path)
    if path.is_relative_to(CONTAINER_ROOT) and not exists(path):
        host = root / path.relative_to(CONTAINER_ROOT)
        if exists(host):
            return host
    return path


def same_path(a: object, b: object, root: Path = REPO_ROOT) -> bool:
    """True when two path strings name the same place, reading /workspace/... as the repo root."""

    def host(p: object) -> object:
        if isinstance(p, str) and p.startswith(f"{CONTAINER_ROOT}/"):
            return str(root / Path(p).relative_to(CONTAINER_ROOT))
        return p

    return host(a) == host(b)


def display_path(path: str, root: Path = REPO_ROOT) -> str:
    """`path` relative to the repo when it lies inside it (host or container spelling), else unchanged."""
    for prefix in (str(root), str(CONTAINER_ROOT)):
        if path.startswith(prefix + "/"):
            return path[len(prefix) + 1 :]
    return path
