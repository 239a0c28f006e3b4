"""GSM8K -> verl RL parquet, TRL SFT parquet and manifest.json for every stage (docs/data.md).

Sources are read with `datasets.load_dataset`, as verl's examples/data_preprocess/gsm8k.py does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data.prompt import DATA_SOURCE, PROMPT_VERSION, sft_completion, user_message
from rewards.gsm8k import compute_score, extract_answer
from scripts.lib.atomic import atomic_dir
from scripts.lib.paths import DATA_DIR

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the output schema or the split rule changes: a manifest with another is rebuilt
DEFAULT_SOURCE = "openai/gsm8k"
SPLITS = ("train", "test")
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}  # file suffix -> datasets builder
MAX_REPORTED_ERRORS = 20
MANIFEST = "manifest.json"

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
RL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", _MESSAGES),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [("split", pa.string()), ("index", pa.int64()), ("question", pa.string()), ("answer", pa.string())]
            ),
        ),
    ]
)
SFT_SCHEMA = pa.schema([("prompt", _MESSAGES), ("completion", _MESSAGES)])
OUTPUT_FILES = ("train.parquet", "val.parquet", "test.parquet", "sft_train.parquet", "sft_val.parquet")

# A source row: (where it is, e.g. "/data/train.jsonl line 3", the record as read, or an error string)
Row = tuple[str, dict[str, Any] | str]


class DataError(Exception):
    """Bad input or an unusable source: the message says what, where and what to do."""


def find_split_files(directory: Path, config: str, cache: str) -> dict[str, list[Path]]:
    """The files of each split as `datasets` maps them (train*, test*, shards); `<config>/` of a hub snapshot."""
    import datasets

    data_dir = config if (directory / config).is_dir() else None  # openai/gsm8k has main/ and socratic/: one
    where = directory / (data_dir or "")
    try:
        builder = datasets.load_dataset_builder(str(directory), data_dir=data_dir, cache_dir=cache)
        files = {str(split): [Path(f) for f in paths] for split, paths in builder.config.data_files.items()}
    except FileNotFoundError:  # no data files at all
        builder, files = None, {}
    except ValueError as exc:  # train.jsonl beside test.parquet; a dataset card naming configs but no --config dir
        raise DataError(f"--source {directory}: {exc}") from None
    found = sorted(p.name for p in where.iterdir())
    if "train" not in files or builder.name not in FORMATS.values():
        raise DataError(
            f"--source {directory}: no train split file in {where} (expected train.jsonl, train.parquet or "
            f"train-00000-of-00001.parquet; found {', '.join(found) or 'nothing'})"
        )
    read = {path.name for paths in files.values() for path in paths if path.parent == where}
    if skipped := [n for n in found if n.startswith(SPLITS) and Path(n).suffix in FORMATS and n not in read]:
        raise DataError(  # datasets reads the most common format and silently skips the others
            f"{where}: {', '.join(skipped)} beside the {builder.name} split files (a second copy?); keep one "
            "format, or pass --source FILE --test-source FILE"
        )
    return {split: files.get(split, []) for split in SPLITS}


def _json_lines(path: Path) -> list[Row]:
    """Each non-blank line of a JSON-lines file, parsed, so that a broken line is named (datasets fails whole)."""
    rows: list[Row] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append((f"{path} line {lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    rows.append((f"{path} line {lineno}", f"not valid JSON ({e.msg} at column {e.colno})"))
    return rows


def read_file(path: Path, split: str, cache: str) -> list[Row]:
    """The rows of one local file, read with `datasets.load_dataset` (json or parquet builder)."""
    import datasets

    try:
        ds = datasets.load_dataset(FORMATS[path.suffix], data_files=str(path), split="train", cache_dir=cache)
    except Exception as exc:  # pyarrow cannot type the file: a broken line, or mixed types in a column
        if FORMATS[path.suffix] == "json":
            return _json_lines(path)
        raise DataError(f"{path}: cannot read it as parquet ({exc})") from None
    records = questions_and_answers(ds, f"{path} (split {split})")
    if path.suffix == ".jsonl":  # datasets skips blank lines: name each row by its line
        return [(where, record) for (where, _), record in zip(_json_lines(path), records, strict=True)]
    return [(f"{path} row {i}", record) for i, record in enumerate(records)]


def questions_and_answers(ds, what: str) -> list[dict[str, Any]]:
    """The question and answer of every row of a `datasets.Dataset`; DataError naming `what` without them."""
    if missing := [c for c in ("question", "answer") if c not in ds.column_names]:
        raise DataError(
            f"{what}: missing field(s) {', '.join(map(repr, missing))} in every row "
            f"(columns: {', '.join(ds.column_names)}); GSM8K files need 'question' and 'answer'"
        )
    return ds.select_columns(["question", "answer"]).to_list()


def load_local(source: Path, test_source: Path | None, config: str) -> tuple[dict[str, list[Row]], dict[str, Any]]:
    """Rows per split from a directory (or hub snapshot) of split files or a single train file."""
    source = source.resolve()
    if not (source.is_dir() or source.is_file() and source.suffix in FORMATS):
        raise DataError(f"--source {source}: neither a directory nor a .jsonl, .json or .parquet file")
    if test_source is not None and not (test_source.is_file() and test_source.suffix in FORMATS):
        raise DataError(f"--test-source {test_source}: no such .jsonl, .json or .parquet file")
    with tempfile.TemporaryDirectory(prefix="gsm8k-read-") as cache:  # local files: no lasting datasets cache
        files = find_split_files(source, config, cache) if source.is_dir() else {"train": [source], "test": []}
        if test_source is not None:
            if files["test"]:
                raise DataError(f"--test-source {test_source} conflicts with the test files in {source}; pass one")
            files["test"] = [test_source.resolve()]
        if not files["test"]:
            logger.warning("no test split in %s: test.parquet will have 0 rows (pass --test-source FILE)", source)
        rows = {split: [row for p in paths for row in read_file(p, split, cache)] for split, paths in files.items()}
    base = source if source.is_dir() else source.parent
    description = {
        "source_kind": "local",
        "source": str(source),
        "source_files": {split: [os.path.relpath(p, base) for p in paths] for split, paths in files.items()},
        "test_source": str(test_source.resolve()) if test_source is not None else None,
        "config": None,
        "revision": None,
    }
    return rows, description


def load_hub(source: str, config: str, revision: str | None) -> tuple[dict[str, list[Row]], dict[str, Any]]:
    """Rows per split of a hub dataset, through the HF cache (HF_HOME); offline, only from that cache."""
    import datasets

    try:
        loaded = datasets.load_dataset(source, config, revision=revision)
    except Exception as exc:  # offline without a cache, a wrong id/config/revision: all end here
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        raise DataError(
            f"cannot load {source!r} (config {config!r}, revision {revision or 'main'!r}) from the Hugging Face hub "
            f"or the HF cache under HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')} ({exc}). "
            + ("HF_HUB_OFFLINE is set, so the hub is not contacted. " if offline else "")
            + "Check the id, --config and --revision; run once with network access to fill the cache; or pass a "
            "local copy: --source DIR (e.g. from `hf download openai/gsm8k --repo-type dataset --local-dir DIR`) "
            "or --source train.jsonl --test-source test.jsonl"
        ) from None
    rows = {}
    for split in SPLITS:
        records = questions_and_answers(loaded[split], f"{source} (split {split})")
        rows[split] = [(f"{source} {split} row {i}", r) for i, r in enumerate(records)]
    description = {
        "source_kind": "hub",
        "source": source,
        "source_files": None,
        "test_source": None,
        "config": config,
        "revision": revision,
    }
    return rows, description


def load_source(source: str, test_source: str | None, config: str, revision: str | None):
    """A local path when `source` exists on disk, otherwise a hub dataset id."""
    path = Path(source).expanduser()
    if path.exists():
        if revision is not None:
            logger.warning("--revision %s ignored: --source %s is a local path", revision, source)
        return load_local(path, Path(test_source).expanduser() if test_source else None, config)
    if source.endswith(tuple(FORMATS)) or source.startswith(("/", ".", "~")) or source.count("/") != 1:
        raise DataError(f"--source {source}: no such file or directory (a hub id looks like owner/name)")
    if test_source is not None:
        raise DataError(f"--test-source is for a local --source file; the hub dataset {source} has a test split")
    return load_hub(source, config, revision)


def to_example(record: dict[str, Any] | str) -> dict[str, str] | str:
    """The validated problem (question, answer, ground_truth, completion), or why the record is bad."""
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        return f"not a JSON object with 'question' and 'answer' (got {type(record).__name__})"
    for field in ("question", "answer"):
        if record.get(field) is None:
            return f"missing field {field!r}"
        if not isinstance(record[field], str):
            return f"field {field!r} is not a string (got {type(record[field]).__name__})"
    if not record["question"].strip():
        return "empty question"
    try:
        completion = sft_completion(record["answer"])
    except ValueError as e:
        return str(e)
    truth = extract_answer(record["answer"], "strict")
    # The SFT target must score 1.0 in the strict reward RL uses: checked on every row.
    if truth is None or compute_score(DATA_SOURCE, completion, truth, mode="strict")["acc"] != 1.0:
        return f"the SFT target does not score 1.0 against ground truth {truth!r} in the strict reward"
    return {**record, "ground_truth": truth, "completion": completion}


def validate(rows: dict[str, list[Row]]) -> dict[str, list[dict[str, Any]]]:
    """Examples per split, each with its `index` in the source split; DataError lists every bad row."""
    examples: dict[str, list[dict[str, Any]]] = {split: [] for split in rows}
    errors = []
    for split, split_rows in rows.items():
        for index, (where, record) in enumerate(split_rows):
            example = to_example(record)
            if isinstance(example, str):
                errors.append(f"  {where} (split {split}, index {index}): {example}")
            else:
                examples[split].append({**example, "index": index})
    if errors:
        more = [f"  ... and {len(errors) - MAX_REPORTED_ERRORS} more"] if len(errors) > MAX_REPORTED_ERRORS else []
        shown = "\n".join(errors[:MAX_REPORTED_ERRORS] + more)
        raise DataError(f"{len(errors)} bad input row(s); fix or drop them and rerun (nothing was written):\n{shown}")
    return examples


def input_sha256(examples: dict[str, list[dict[str, Any]]]) -> str:
    """A hash of the input rows (split, index, question, answer), independent of file format and location."""
    rows = [[split, e["index"], e["question"], e["answer"]] for split in sorted(examples) for e in examples[split]]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def split_train_val(train: Sequence[dict[str, Any]], val_size: int, seed: int) -> tuple[list, list]:
    """Hold out the `val_size` problems with the smallest sha256(seed, question); both keep source order.

    A hash, not an RNG: the choice is the same across library versions and however a copy orders its rows.
    """
    if not 0 <= val_size < len(train):
        raise DataError(
            f"--val-size {val_size} must be at least 0 and less than the {len(train)} train rows "
            "(training needs at least one)"
        )

    def key(e: dict[str, Any]) -> tuple[str, int]:
        return hashlib.sha256(f"{seed}\0{e['question']}".encode()).hexdigest(), e["index"]

    held_out = {e["index"] for e in sorted(train, key=key)[:val_size]}
    return [e for e in train if e["index"] not in held_out], [e for e in train if e["index"] in held_out]


def build_tables(splits: dict[str, list[dict[str, Any]]]) -> dict[str, pa.Table]:
    """The five output tables, keyed by file name, from the train / val / test examples."""
    tables = {}
    for split, examples in splits.items():
        rl = [
            {
                "data_source": DATA_SOURCE,
                "prompt": [user_message(e["question"])],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": e["ground_truth"]},
                "extra_info": {"split": split, "index": e["index"], "question": e["question"], "answer": e["answer"]},
            }
            for e in examples
        ]
        tables[f"{split}.parquet"] = pa.Table.from_pylist(rl, RL_SCHEMA)
        if split != "test":
            completions = [[{"role": "assistant", "content": e["completion"]}] for e in examples]
            sft = [{"prompt": r["prompt"], "completion": c} for r, c in zip(rl, completions, strict=True)]
            tables[f"sft_{split}.parquet"] = pa.Table.from_pylist(sft, SFT_SCHEMA)
    return {name: tables[name] for name in OUTPUT_FILES}


def write_outputs(output_dir: Path, tables: dict[str, pa.Table], inputs: dict[str, Any]) -> None:
    """Write the parquet files and the manifest into a new folder that then replaces `output_dir` as a whole."""
    ours = {*OUTPUT_FILES, MANIFEST}
    foreign = sorted(p.name for p in output_dir.iterdir() if p.name not in ours) if output_dir.is_dir() else []
    if foreign:
        raise DataError(
            f"{output_dir} holds files data prep did not write ({', '.join(foreign[:5])}); it replaces the whole "
            "folder, so pick an empty or new --output-dir"
        )
    try:
        with atomic_dir(output_dir, replace=True) as tmp:
            for name, table in tables.items():
                pq.write_table(table, tmp / name, compression="zstd")  # no timestamps: same rows, same bytes
            manifest = {
                **inputs,
                "rows": {name: table.num_rows for name, table in tables.items()},
                "sha256": {name: hashlib.sha256((tmp / name).read_bytes()).hexdigest() for name in tables},
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    except OSError as e:
        raise DataError(
            f"cannot write {output_dir}: {e}. Check free space and that this user ({os.getuid()}:{os.getgid()}) may "
            "write there: in the stack jupyter and verl both run as HOST_UID:HOST_GID from .env, which must own "
            "data/ (run as root, `bash scripts/init_env.sh` hands data/, models/ and notebooks/ to them)"
        ) from e


def is_up_to_date(output_dir: Path, inputs: dict[str, Any]) -> bool:
    """True when manifest.json records these inputs and every output file still has its recorded sha256."""
    try:
        manifest = json.loads((output_dir / MANIFEST).read_text(encoding="utf-8"))
        files = {name: hashlib.sha256((output_dir / name).read_bytes()).hexdigest() for name in OUTPUT_FILES}
    except (OSError, ValueError):  # no manifest, or an output file missing
        return False
    return manifest.get("sha256") == files and all(manifest.get(key) == value for key, value in inputs.items())


def prepare(
    source: str = DEFAULT_SOURCE,
    output_dir: Path = DATA_DIR,
    *,
    val_size: int = 512,
    seed: int = 42,
    test_source: str | None = None,
    config: str = "main",
    revision: str | None = None,
    force: bool = False,
) -> bool:
    """Build the outputs (docs/data.md). Returns False when they were already up to date."""
    rows, description = load_source(source, test_source, config, revision)
    examples = validate(rows)
    logger.info("validated %d rows: every SFT target scores 1.0 in the strict reward", sum(map(len, rows.values())))
    inputs = {
        **description,
        "data_source": DATA_SOURCE,
        "format_version": FORMAT_VERSION,
        "input_sha256": input_sha256(examples),
        "prompt_version": PROMPT_VERSION,
        "seed": seed,
        "val_size": val_size,
    }
    if not force and is_up_to_date(output_dir, inputs):
        logger.info("%s is up to date (manifest.json matches these inputs); --force rebuilds", output_dir)
        return False
    train, val = split_train_val(examples["train"], val_size, seed)
    tables = build_tables({"train": train, "val": val, "test": examples["test"]})
    write_outputs(output_dir, tables, inputs)
    counts = ", ".join(f"{name.removesuffix('.parquet')} {t.num_rows}" for name, t in tables.items())
    logger.info("wrote %s: %s rows + %s", output_dir, counts, MANIFEST)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="GSM8K -> verl RL parquet (train/val/test) + TRL SFT parquet (sft_train/sft_val) + manifest.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="hub id, a directory of split files, or one file")
    parser.add_argument("--test-source", help="test split file when --source is a single file")
    parser.add_argument("--config", default="main", help="hub dataset config (also the sub-folder looked for locally)")
    parser.add_argument("--revision", help="hub revision to pin (commit sha, tag or branch)")
    parser.add_argument("--output-dir", type=Path, default=DATA_DIR, help="where the outputs land")
    parser.add_argument("--val-size", type=int, default=512, help="problems held out from train as val")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/val split")
    parser.add_argument("--force", action="store_true", help="rebuild even if manifest.json matches the inputs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        prepare(**vars(args))
    except DataError as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
