"""Find what training left behind: the SFT checkpoint its manifest names, and the newest RL checkpoint.

SFT: models/sft/latest.json `{"path": "models/sft/<run>", ...}` (relative to the repo root, or absolute).
RL: verl's `<experiment>/global_step_N/actor/` (Hugging Face weights in `huggingface/` with `hf_model`; a LoRA run's
merged there by scripts/lib/lora.py) and,
once a save completes, `<experiment>/latest_checkpointed_iteration.txt` with N (else the highest N counts).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from scripts.lib.paths import REPO_ROOT, SFT_MANIFEST, to_host, under_repo

TRACKER = "latest_checkpointed_iteration.txt"


def read_sft_manifest(manifest: Path = SFT_MANIFEST, root: Path = REPO_ROOT) -> dict[str, Any] | None:
    """The manifest's fields, `path` made an absolute path that exists here; None when there is no manifest.

    Raises ValueError naming the manifest when it is not JSON, has no `path`, or the path holds no model.
    """
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        path = to_host(under_repo(data["path"], root), root)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f'{manifest} is not an SFT manifest (no readable "path": {exc!r})') from None
    if not (path / "config.json").is_file():
        raise ValueError(f"{manifest} names {path}, which holds no model (no config.json)")
    return {**data, "path": path}


def check_model(model: str) -> None:
    """Fail in milliseconds, before anything loads, when `model` cannot be a model.

    A local folder must hold config.json; anything else must look like a hub id (`org/name`), and with
    HF_HUB_OFFLINE=1 be in the Hugging Face cache already. FileNotFoundError says which and what to do.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{model} holds no model (no config.json): give a saved Hugging Face model folder")
        return
    if path.exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1 or not model.strip():
        raise FileNotFoundError(f"model {model!r}: no such folder, and not a Hugging Face hub id (org/name)")
    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(model, "config.json"), str):
        raise FileNotFoundError(
            f"model {model!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1: "
            "fill it once with `docker compose --profile setup run --rm setup`, or give a local model folder"
        )


def latest_step(experiment: Path) -> int | None:
    """The step of the newest complete checkpoint in a verl experiment folder, or None when there is none."""
    try:
        return int((experiment / TRACKER).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        pass
    found = (re.fullmatch(r"global_step_(\d+)", p.name) for p in experiment.glob("global_step_*") if p.is_dir())
    return max((int(m[1]) for m in found if m), default=None)


def has_weights(folder: Path) -> bool:
    """True when `folder` holds Hugging Face weights (safetensors or pytorch_model*.bin)."""
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def newest_experiment(rl_dir: Path, algo: str) -> tuple[Path | None, list[Path]]:
    """(the most recently written `<rl_dir>/<algo>-*` folder or None, all of them)."""
    found = sorted(p for p in rl_dir.glob(f"{algo}-*") if p.is_dir())
    return max(found, key=lambda p: p.stat().st_mtime, default=None), found


def rl_hf_model(experiment: Path) -> Path:
    """The Hugging Face weights of the newest checkpoint in `experiment`; ValueError says why there are none.

    A LoRA run's (verl saves the PEFT state dict there, which `from_pretrained` would load as a random model) is
    merged in place first, once (scripts/lib/lora.py)."""
    step = latest_step(experiment)
    if step is None:
        raise ValueError(f"no checkpoint in {experiment} yet (no {TRACKER} or global_step_N folder)")
    folder = experiment / f"global_step_{step}" / "actor" / "huggingface"
    if not has_weights(folder):
        raise ValueError(
            f"the step-{step} checkpoint has no Hugging Face weights in {folder} (hf_model not in "
            f"actor.checkpoint.save_contents); make them with: bash scripts/export_checkpoint.sh {experiment}"
        )
    from scripts.lib import lora

    if (folder.parent / lora.META).is_file():  # a LoRA run's checkpoint
        return lora.merge_verl_checkpoint(folder.parent)
    return folder
