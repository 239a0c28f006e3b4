"""Is a prepared GSM8K folder ready for a stage? One check that SFT, RL and evaluation all call.

A folder is ready when the stage's parquet files are there and were built with the prompt data/prompt.py makes
now (data prep records PROMPT_VERSION in manifest.json). The error names the folder, what is wrong and the
command that fixes it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from data.prompt import PROMPT_VERSION

# The files each stage reads (data/prepare_gsm8k.py writes them all).
SFT_FILES = ("sft_train.parquet", "sft_val.parquet", "val.parquet")
RL_FILES = ("train.parquet", "val.parquet")
EVAL_FILES = ("test.parquet",)


class DataNotReady(ValueError):
    """The prepared data is missing or stale; the message says which folder, what and how to rebuild it."""


def prepare_command(data_dir: Path, force: bool = False) -> str:
    return f"python -m data.prepare_gsm8k --output-dir {data_dir}" + (" --force" if force else "")


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
        f"{prepare_command(data_dir, force=True)}"
    )


def check_data(data_dir: Path, files: Sequence[str]) -> dict[str, int]:
    """Rows per file of `files` in `data_dir`; raises DataNotReady if any is missing or the prompt is stale."""
    data_dir = Path(data_dir)
    missing = [name for name in files if not (data_dir / name).is_file()]
    if missing:
        raise DataNotReady(
            f"GSM8K data is missing in {data_dir}: {', '.join(missing)}; prepare it (downloads openai/gsm8k into "
            f"the HF cache, or GSM8K_SOURCE=<dir of parquet files>): {prepare_command(data_dir)}"
        )
    if why := stale_prompt(data_dir):
        raise DataNotReady(why)
    import pyarrow.parquet as pq

    return {name: pq.ParquetFile(data_dir / name).metadata.num_rows for name in files}
