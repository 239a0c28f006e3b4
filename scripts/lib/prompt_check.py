"""Is prepared data still in step with data/prompt.py? Data prep records PROMPT_VERSION in manifest.json."""

from __future__ import annotations

import json
from pathlib import Path

from data.prompt import PROMPT_VERSION


def stale_prompt(data_dir: Path) -> str | None:
    """Why `data_dir` was built with another prompt than data/prompt.py makes now, or None when it was not.

    A folder without a readable manifest (or one that records no version) is not called stale.
    """
    try:
        recorded = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8")).get("prompt_version")
    except (OSError, ValueError, AttributeError):
        return None
    if recorded is None or recorded == PROMPT_VERSION:
        return None
    return (
        f"{data_dir} was prepared with prompt {recorded!r}, data/prompt.py is now {PROMPT_VERSION!r}; rebuild it: "
        f"python data/prepare_gsm8k.py --output-dir {data_dir} --force"
    )
