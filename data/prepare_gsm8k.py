"""Prepare GSM8K once for every stage: verl RL parquet, TRL SFT parquet and a manifest.

    python data/prepare_gsm8k.py                                  # hub openai/gsm8k (config main) -> data/gsm8k/
    python data/prepare_gsm8k.py --source /mirror/gsm8k           # air-gapped copy: a directory of split files
    python data/prepare_gsm8k.py --source train.jsonl --test-source test.jsonl
    docker compose exec verl python /workspace/data/prepare_gsm8k.py  # same, inside the stack

Sources (`--source`):

- a Hugging Face hub id (default `openai/gsm8k`, config `--config main`, `--revision` to pin), loaded
  with `datasets` into the shared cache (`HF_HOME`);
- a local directory: files named after their split, `.jsonl` or `.parquet`, with `question` and
  `answer` fields: `train.jsonl` + `test.jsonl` (openai/grade-school-math) or the hub layout
  `train-00000-of-00001.parquet` + `test-00000-of-00001.parquet` (shards are concatenated in name
  order). A directory with no split files but a `<config>/` folder (a `hf download
  openai/gsm8k --repo-type dataset --local-dir DIR` snapshot) is read from that folder;
- a single local `.jsonl` / `.parquet` file: the TRAIN split, whatever its name. The test split
  then comes from `--test-source FILE`; without it `test.parquet` is written with zero rows and
  a warning says so (SFT and RL need only train and val).

Outputs in `--output-dir` (default `data/gsm8k` under the repo, `/workspace/data/gsm8k` in the containers):

- `train.parquet`, `val.parquet`, `test.parquet`: verl's RL schema, one row per problem:
  `data_source` ("openai/gsm8k"), `prompt` ([user message] from data/prompt.py), `ability` ("math"),
  `reward_model` ({"style": "rule", "ground_truth": canonical answer, e.g. "12500", "-5"}),
  `extra_info` ({"split", "index", "question", "answer"}; `index` is the row's position in the
  source split it came from, so val rows point into the source train split).
- `sft_train.parquet`, `sft_val.parquet`: TRL conversational prompt-completion rows, aligned row
  for row with train / val: `prompt` (the same user message), `completion` ([assistant message]
  = the reference solution without `<<...>>` calculator annotations, ending in `#### N`).
- `manifest.json`: source, revision, seed, val size, a sha256 of the input rows, the prompt
  version, row counts and sha256 per file.

`val` is `--val-size` problems held out from the source train split, chosen by a seeded hash of
each question (the same questions for the same seed, however the source rows are ordered). The
test split is never used for model selection.

A rerun whose manifest matches the inputs and the files on disk does nothing and says so;
`--force` rebuilds (byte-identical for the same inputs). A bad input row (missing field, empty
question, no `####` line, non-numeric final answer) is reported with its file, split and index,
and the run exits 1 before anything is written. Files are written under a temporary directory and
renamed into place only when all succeeded, the manifest last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
# `python data/prepare_gsm8k.py` puts data/ (not the repo root) on sys.path; make `data.prompt` and
# `rewards` importable from any working directory. `python -m data.prepare_gsm8k` needs no help.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from data.prompt import DATA_SOURCE, PROMPT_VERSION, sft_completion, user_message  # noqa: E402
from rewards.gsm8k import compute_score, extract_answer  # noqa: E402

logger = logging.getLogger(__name__)

# Bump when the output schema or the split rule changes: a manifest with another version is rebuilt.
FORMAT_VERSION = 1
DEFAULT_SOURCE = "openai/gsm8k"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "data" / "gsm8k"
DEFAULT_VAL_SIZE = 512
DEFAULT_SEED = 42
SOURCE_SPLITS = ("train", "test")
FILE_FORMATS = (".jsonl", ".parquet")
MAX_REPORTED_ERRORS = 20

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
RL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(_MESSAGE)),
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
SFT_SCHEMA = pa.schema([("prompt", pa.list_(_MESSAGE)), ("completion", pa.list_(_MESSAGE))])
OUTPUT_FILES = ("train.parquet", "val.parquet", "test.parquet", "sft_train.parquet", "sft_val.parquet")
MANIFEST = "manifest.json"


class DataError(Exception):
    """Bad input or an unusable source: the message says what, where and what to do."""


@dataclass(frozen=True)
class SourceRow:
    """One raw GSM8K problem as read, with where it came from (for error messages)."""

    split: str
    index: int  # position within its source split
    origin: str  # e.g. "/data/train.jsonl line 3" or "openai/gsm8k@abc123 train row 2"
    record: Any  # the parsed JSON object / parquet row; anything else is reported as bad


@dataclass(frozen=True)
class Problem:
    """A validated problem: what every output row is built from."""

    split: str
    index: int
    question: str
    answer: str
    ground_truth: str
    completion: str


@dataclass
class Source:
    """The raw rows of each source split plus the provenance the manifest records."""

    rows: dict[str, list[SourceRow]]
    description: dict[str, Any]


class _Invalid:
    """A row that could not be parsed; `problem` says why."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


# --------------------------------------------------------------------------------------------- reading


def _split_of(name: str, splits: Sequence[str]) -> str | None:
    """The split a file belongs to by name: `train.jsonl`, `train-00000-of-00001.parquet` -> "train"."""
    stem, ext = os.path.splitext(name)
    if ext not in FILE_FORMATS:
        return None
    for split in splits:
        if re.fullmatch(rf"{split}(?:[-_.].*)?", stem):
            return split
    return None


def _split_files(directory: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {split: [] for split in SOURCE_SPLITS}
    for path in sorted(directory.iterdir()):
        split = _split_of(path.name, SOURCE_SPLITS)
        if split is not None and path.is_file():
            found[split].append(path)
    for split, paths in found.items():
        formats = {p.suffix for p in paths}
        if len(formats) > 1:
            names = ", ".join(p.name for p in paths)
            raise DataError(
                f"{directory}: the {split} split is in both .jsonl and .parquet files ({names}); "
                "keep one copy, or pass the files you mean with --source FILE --test-source FILE"
            )
    return found


def _read_jsonl(path: Path, split: str, start: int) -> list[SourceRow]:
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                origin = f"{path} line {lineno}"
                try:
                    record: Any = json.loads(line)
                except json.JSONDecodeError as e:
                    record = _Invalid(f"not valid JSON ({e.msg} at column {e.colno})")
                rows.append(SourceRow(split, start + len(rows), origin, record))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}); expected JSON lines with 'question' and 'answer'") from e
    return rows


def _read_parquet(path: Path, split: str, start: int) -> list[SourceRow]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read it as parquet ({e})") from e
    missing = [c for c in ("question", "answer") if c not in table.column_names]
    if missing:
        raise DataError(
            f"{path} (split {split}): missing field(s) {', '.join(map(repr, missing))} in every row "
            f"(columns: {', '.join(table.column_names)}); GSM8K files need 'question' and 'answer'"
        )
    records = table.select(["question", "answer"]).to_pylist()
    return [SourceRow(split, start + i, f"{path} row {i}", r) for i, r in enumerate(records)]


def _read_files(paths: Iterable[Path], split: str) -> list[SourceRow]:
    rows: list[SourceRow] = []
    for path in paths:
        reader = _read_jsonl if path.suffix == ".jsonl" else _read_parquet
        rows.extend(reader(path, split, len(rows)))
        logger.info("read %s: %d %s rows so far", path, len(rows), split)
    return rows


def _check_file(path: Path, flag: str) -> Path:
    if not path.is_file():
        raise DataError(f"{flag} {path}: no such file")
    if path.suffix not in FILE_FORMATS:
        raise DataError(f"{flag} {path}: expected a .jsonl or .parquet file (or, for --source, a directory of them)")
    return path


def load_local(source: Path, test_source: Path | None = None, config: str = "main") -> Source:
    """Read a local GSM8K copy: a directory of split files or a single train file (see the module docstring)."""
    source = source.resolve()
    if source.is_dir():
        directory = source
        files = _split_files(directory)
        if not any(files.values()) and (directory / config).is_dir():
            directory = directory / config  # a hub snapshot: <repo>/main/train-00000-of-00001.parquet
            files = _split_files(directory)
        if not files["train"]:
            present = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
            raise DataError(
                f"--source {source}: no train split file (expected train.jsonl, train.parquet or "
                f"train-00000-of-00001.parquet; found {present})"
            )
        if test_source is not None and files["test"]:
            raise DataError(
                f"--test-source {test_source} conflicts with the test files in {directory} "
                f"({', '.join(p.name for p in files['test'])}); pass one or the other"
            )
    else:
        _check_file(source, "--source")
        if _split_of(source.name, ("test",)):
            logger.warning("--source %s is a single file, so it is read as the TRAIN split despite its name", source)
        directory = source.parent
        files = {"train": [source], "test": []}
    if test_source is not None:
        files["test"] = [_check_file(test_source.resolve(), "--test-source")]
    if not files["test"]:
        logger.warning(
            "no test split in %s: test.parquet will have 0 rows (pass --test-source FILE to add one)", source
        )
    rows = {split: _read_files(paths, split) for split, paths in files.items()}
    base = source if source.is_dir() else directory
    description = {
        "source_kind": "local",
        "source": str(source),
        "source_files": {split: [os.path.relpath(p, base) for p in paths] for split, paths in files.items()},
        "test_source": str(test_source.resolve()) if test_source is not None else None,
        "config": None,
        "revision": None,
        "resolved_revision": None,
    }
    return Source(rows, description)


def load_hub(source: str, config: str = "main", revision: str | None = None) -> Source:
    """Load `source` (a hub dataset id) with `datasets` into the HF cache (HF_HOME); offline, only from that cache."""
    import datasets  # heavy: only the hub path needs it

    try:
        # load_dataset() in steps, to learn the commit the data came from (builder.hash) for the manifest.
        builder = datasets.load_dataset_builder(source, config, revision=revision)
        builder.download_and_prepare()  # shows download progress; a no-op when already cached
        splits = {split: builder.as_dataset(split=split) for split in SOURCE_SPLITS}
    except ConnectionError as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise DataError(
            f"cannot load {source!r} (config {config!r}, revision {revision or 'main'!r}) from the Hugging Face "
            f"hub, and it is not in the HF cache under HF_HOME={cache} ({e}). "
            + ("HF_HUB_OFFLINE is set, so the hub is not contacted. " if offline else "")
            + "Either run once with network access (HF_HUB_OFFLINE unset) to fill the cache, or pass a local "
            "copy: --source DIR (train/test .jsonl or .parquet files, e.g. from `hf download "
            "openai/gsm8k --repo-type dataset --local-dir DIR`) or --source train.jsonl --test-source test.jsonl"
        ) from e
    except (datasets.exceptions.DatasetNotFoundError, ValueError, FileNotFoundError) as e:
        raise DataError(
            f"cannot load {source!r} (config {config!r}, revision {revision or 'main'!r}) from the Hugging Face "
            f"hub: {e}. Check the dataset id, --config and --revision, or pass a local copy with --source DIR"
        ) from e
    resolved = builder.hash if isinstance(builder.hash, str) and re.fullmatch(r"[0-9a-f]{40}", builder.hash) else None
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision) and resolved and resolved != revision:
        raise DataError(
            f"asked for {source}@{revision} but the HF cache holds {resolved} (offline, datasets loads the newest "
            "cached revision); run with network access to fetch the pinned one"
        )
    tag = f"{source}@{(resolved or revision or 'main')[:12]}"
    rows = {}
    for split, ds in splits.items():
        missing = [c for c in ("question", "answer") if c not in ds.column_names]
        if missing:
            raise DataError(f"{tag} split {split}: no {', '.join(map(repr, missing))} column ({ds.column_names})")
        ds = ds.select_columns(["question", "answer"])
        rows[split] = [SourceRow(split, i, f"{tag} {split} row {i}", r) for i, r in enumerate(ds)]
        logger.info("loaded %s %s: %d rows", tag, split, len(rows[split]))
    description = {
        "source_kind": "hub",
        "source": source,
        "source_files": None,
        "test_source": None,
        "config": config,
        "revision": revision,
        "resolved_revision": resolved,
    }
    return Source(rows, description)


def load_source(
    source: str, test_source: str | None = None, config: str = "main", revision: str | None = None
) -> Source:
    """Local path if `source` exists on disk, otherwise a hub dataset id."""
    path = Path(source).expanduser()
    if path.exists():
        if revision is not None:
            logger.warning("--revision %s ignored: --source %s is a local path", revision, source)
        return load_local(path, Path(test_source).expanduser() if test_source else None, config)
    looks_like_path = source.endswith(FILE_FORMATS) or source.startswith(("/", ".", "~")) or source.count("/") != 1
    if looks_like_path:
        raise DataError(f"--source {source}: no such file or directory (a hub id looks like owner/name)")
    if test_source is not None:
        raise DataError(f"--test-source is for a local --source file; the hub dataset {source} has a test split")
    return load_hub(source, config, revision)


# ------------------------------------------------------------------------------------------ validating


def _problem_of(row: SourceRow) -> tuple[Problem | None, str | None]:
    record = row.record
    if isinstance(record, _Invalid):
        return None, record.problem
    if not isinstance(record, dict):
        return None, f"not a JSON object with 'question' and 'answer' (got {type(record).__name__})"
    for field in ("question", "answer"):
        if record.get(field) is None:
            return None, f"missing field {field!r}"
        if not isinstance(record[field], str):
            return None, f"field {field!r} is not a string (got {type(record[field]).__name__})"
    question, answer = record["question"], record["answer"]
    if not question.strip():
        return None, "empty question"
    try:
        completion = sft_completion(answer)
    except ValueError as e:
        return None, str(e)
    ground_truth = extract_answer(answer, "strict")
    # The SFT target must score 1.0 in the strict reward RL uses; check every row, not just the tests' sample.
    if ground_truth is None or compute_score(DATA_SOURCE, completion, ground_truth, mode="strict")["acc"] != 1.0:
        return None, f"the SFT target does not score 1.0 against ground truth {ground_truth!r} in the strict reward"
    return Problem(row.split, row.index, question, answer, ground_truth, completion), None


def validate(rows: dict[str, list[SourceRow]]) -> dict[str, list[Problem]]:
    """Every row checked; raises DataError listing each bad row with its file, split and index."""
    problems: dict[str, list[Problem]] = {}
    errors = []
    for split, split_rows in rows.items():
        problems[split] = []
        for row in split_rows:
            problem, error = _problem_of(row)
            if error is not None:
                errors.append(f"  {row.origin} (split {row.split}, index {row.index}): {error}")
            else:
                problems[split].append(problem)
    if errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        if len(errors) > len(shown):
            shown.append(f"  ... and {len(errors) - len(shown)} more")
        raise DataError(
            f"{len(errors)} bad input row(s); fix or drop them and rerun (nothing was written):\n" + "\n".join(shown)
        )
    return problems


def input_sha256(problems: dict[str, list[Problem]]) -> str:
    """A hash of the input rows (split, index, question, answer), independent of file format and location."""
    digest = hashlib.sha256()
    for split in sorted(problems):
        for p in problems[split]:
            digest.update(json.dumps([split, p.index, p.question, p.answer], ensure_ascii=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------- splitting


def split_train_val(train: Sequence[Problem], val_size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Hold out `val_size` problems: those whose sha256(seed, question) is smallest. Both keep source order.

    A hash rather than an RNG: the choice never changes across Python / NumPy versions, and depends on
    the questions, not on how a copy of the dataset happens to order its rows.
    """
    if not 0 <= val_size < len(train):
        raise DataError(
            f"--val-size {val_size} must be at least 0 and less than the {len(train)} train rows "
            "(training needs at least one)"
        )

    def key(p: Problem) -> tuple[str, int]:
        return hashlib.sha256(f"{seed}\0{p.question}".encode()).hexdigest(), p.index

    held_out = {p.index for p in sorted(train, key=key)[:val_size]}
    return [p for p in train if p.index not in held_out], [p for p in train if p.index in held_out]


# ---------------------------------------------------------------------------------------------- writing


def rl_row(problem: Problem, split: str) -> dict[str, Any]:
    """One row of verl's RL schema (see the module docstring)."""
    return {
        "data_source": DATA_SOURCE,
        "prompt": [user_message(problem.question)],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": problem.ground_truth},
        "extra_info": {"split": split, "index": problem.index, "question": problem.question, "answer": problem.answer},
    }


def sft_row(problem: Problem) -> dict[str, Any]:
    """One TRL conversational prompt-completion row."""
    return {
        "prompt": [user_message(problem.question)],
        "completion": [{"role": "assistant", "content": problem.completion}],
    }


def build_tables(splits: dict[str, list[Problem]]) -> dict[str, pa.Table]:
    """The five output tables, keyed by file name, from the train / val / test problems."""
    tables = {f"{s}.parquet": pa.Table.from_pylist([rl_row(p, s) for p in splits[s]], RL_SCHEMA) for s in splits}
    for s in ("train", "val"):
        tables[f"sft_{s}.parquet"] = pa.Table.from_pylist([sft_row(p) for p in splits[s]], SFT_SCHEMA)
    return {name: tables[name] for name in OUTPUT_FILES}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _remove_if_empty(output_dir: Path, created: bool, tmp: Path) -> None:
    if created and not any(p for p in output_dir.iterdir() if p != tmp):
        shutil.rmtree(output_dir, ignore_errors=True)


def write_outputs(output_dir: Path, tables: dict[str, pa.Table], manifest: dict[str, Any]) -> None:
    """Write every file under a temporary directory, then rename them into `output_dir`, the manifest last."""
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-prepare-", dir=output_dir))
    except OSError as e:
        raise DataError(f"cannot write {output_dir}: {e}; check that this user may write there") from e
    try:
        manifest = {**manifest, "rows": {}, "sha256": {}}
        for name, table in tables.items():
            # pyarrow writes no timestamps: the same rows and pyarrow version give the same bytes.
            pq.write_table(table, tmp / name, compression="zstd")
            manifest["rows"][name] = table.num_rows
            manifest["sha256"][name] = _sha256_file(tmp / name)
        (tmp / MANIFEST).write_text(_manifest_json(manifest), encoding="utf-8")
        # A directory with data files but no manifest (a crash mid-rename) is never taken as up to date.
        (output_dir / MANIFEST).unlink(missing_ok=True)
        for name in (*tables, MANIFEST):
            os.replace(tmp / name, output_dir / name)
    except OSError as e:
        _remove_if_empty(output_dir, created, tmp)
        raise DataError(
            f"cannot write {output_dir}: {e}. Check free space and that the directory is writable by this user "
            "(in the stack the verl container runs as root and jupyter as UID 1000)"
        ) from e
    except BaseException:
        _remove_if_empty(output_dir, created, tmp)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_up_to_date(output_dir: Path, inputs: dict[str, Any]) -> bool:
    """True when manifest.json records these inputs and every output file still has its recorded sha256."""
    try:
        manifest = json.loads((output_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if any(manifest.get(key) != value for key, value in inputs.items()):
        return False
    recorded = manifest.get("sha256") or {}
    if set(recorded) != set(OUTPUT_FILES):
        return False
    return all((output_dir / n).is_file() and _sha256_file(output_dir / n) == h for n, h in recorded.items())


# ------------------------------------------------------------------------------------------------- main


def prepare(
    source: str = DEFAULT_SOURCE,
    output_dir: Path = DEFAULT_OUTPUT_DIR,
    *,
    val_size: int = DEFAULT_VAL_SIZE,
    seed: int = DEFAULT_SEED,
    test_source: str | None = None,
    config: str = "main",
    revision: str | None = None,
    force: bool = False,
) -> bool:
    """Build the outputs (see the module docstring). Returns False when they were already up to date."""
    started = time.monotonic()
    loaded = load_source(source, test_source, config, revision)
    problems = validate(loaded.rows)
    n_rows = sum(len(v) for v in problems.values())
    logger.info("validated %d rows: every SFT target scores 1.0 in the strict reward", n_rows)
    inputs = {
        **loaded.description,
        "data_source": DATA_SOURCE,
        "format_version": FORMAT_VERSION,
        "input_sha256": input_sha256(problems),
        "prompt_version": PROMPT_VERSION,
        "seed": seed,
        "val_size": val_size,
    }
    if not force and is_up_to_date(output_dir, inputs):
        logger.info(
            "%s is up to date (manifest.json matches these inputs): nothing to do; --force rebuilds", output_dir
        )
        return False
    train, val = split_train_val(problems["train"], val_size, seed)
    logger.info("held out %d of %d train rows as val (seed %d)", len(val), len(problems["train"]), seed)
    tables = build_tables({"train": train, "val": val, "test": problems["test"]})
    write_outputs(output_dir, tables, inputs)
    counts = ", ".join(f"{name.removesuffix('.parquet')} {t.num_rows}" for name, t in tables.items())
    logger.info("wrote %s in %.1fs: %s rows + %s", output_dir, time.monotonic() - started, counts, MANIFEST)
    return True


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="GSM8K -> verl RL parquet (train/val/test) + TRL SFT parquet (sft_train/sft_val) + manifest.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="hub dataset id, or a local directory of train*/test* .jsonl/.parquet files, or one such file "
        "(read as the train split)",
    )
    parser.add_argument("--test-source", help="test split file (.jsonl/.parquet) when --source is a single file")
    parser.add_argument("--config", default="main", help="hub dataset config (also the sub-folder looked for locally)")
    parser.add_argument(
        "--revision", help="hub revision to pin: a commit sha, tag or branch; unset: the latest on main"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help="where the outputs land",
    )
    parser.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE, help="problems held out from train as val")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the train/val split")
    parser.add_argument("--force", action="store_true", help="rebuild even if manifest.json matches the inputs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        prepare(
            args.source,
            args.output_dir,
            val_size=args.val_size,
            seed=args.seed,
            test_source=args.test_source,
            config=args.config,
            revision=args.revision,
            force=args.force,
        )
    except DataError as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
