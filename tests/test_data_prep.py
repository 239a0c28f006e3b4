"""data/prepare_gsm8k.py as a user runs it: schema, split, ground truths, bad input, reruns, source layouts.

Every run is the real CLI in a subprocess, offline, on the 32-problem fixture (24 train + 8 test rows).
The verl and TRL loaders are exercised in tests/test_data_loaders.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.prompt import DATA_SOURCE, PROMPT_VERSION, sft_completion, user_message
from rewards.gsm8k import compute_score
from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "data" / "prepare_gsm8k.py"
PARQUETS = ("train.parquet", "val.parquet", "test.parquet", "sft_train.parquet", "sft_val.parquet")
COUNTS = {"train.parquet": 20, "val.parquet": 4, "test.parquet": 8, "sft_train.parquet": 20, "sft_val.parquet": 4}
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def run_prep(*args: str | Path, cwd: Path = REPO_ROOT, module: bool = False, env: dict | None = None):
    entry = ["-m", "data.prepare_gsm8k"] if module else [str(SCRIPT)]
    return subprocess.run(
        [sys.executable, *entry, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def parquet_bytes(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in PARQUETS}


def final_answer(reference: str) -> str:
    return reference.rsplit("####", 1)[1].strip()


# ----------------------------------------------------------------------------------------- the outputs


def test_every_file_has_the_schema_and_row_count(gsm8k_data_dir, gsm8k_rows):
    assert sorted(p.name for p in gsm8k_data_dir.iterdir()) == sorted([*PARQUETS, "manifest.json"])
    for name in ("train.parquet", "val.parquet", "test.parquet"):
        schema = pq.read_schema(gsm8k_data_dir / name)
        assert schema.names == ["data_source", "prompt", "ability", "reward_model", "extra_info"], name
        assert schema.field("prompt").type == MESSAGES
        assert [f.name for f in schema.field("reward_model").type] == ["style", "ground_truth"]
        assert [f.name for f in schema.field("extra_info").type] == ["split", "index", "question", "answer"]
        assert schema.field("extra_info").type.field("index").type == pa.int64()
    for name in ("sft_train.parquet", "sft_val.parquet"):
        schema = pq.read_schema(gsm8k_data_dir / name)
        assert schema.names == ["prompt", "completion"] and schema.field("completion").type == MESSAGES
    assert {name: pq.read_metadata(gsm8k_data_dir / name).num_rows for name in PARQUETS} == COUNTS

    source = {"train": gsm8k_rows[:24], "test": gsm8k_rows[24:]}
    for split in ("train", "val", "test"):
        for row in read(gsm8k_data_dir / f"{split}.parquet"):
            info = row["extra_info"]
            original = source["test" if split == "test" else "train"][info["index"]]
            assert info["split"] == split
            assert (info["question"], info["answer"]) == (original["question"], original["answer"])
            assert row["data_source"] == DATA_SOURCE == "openai/gsm8k"
            assert row["ability"] == "math" and row["reward_model"]["style"] == "rule"
            assert row["prompt"] == [user_message(original["question"])]
            assert '"####"' in row["prompt"][0]["content"]  # the instruction asks for the `####` format


def test_manifest_records_the_inputs(gsm8k_data_dir, gsm8k_source_dir):
    manifest = json.loads((gsm8k_data_dir / "manifest.json").read_text())
    assert manifest["source_kind"] == "local" and manifest["source"] == str(gsm8k_source_dir.resolve())
    assert manifest["source_files"] == {"train": ["train.jsonl"], "test": ["test.jsonl"]}
    assert (manifest["seed"], manifest["val_size"], manifest["prompt_version"]) == (0, 4, PROMPT_VERSION)
    assert manifest["revision"] is None and re.fullmatch(r"[0-9a-f]{64}", manifest["input_sha256"])
    assert manifest["rows"] == COUNTS
    assert manifest["sha256"] == {n: hashlib.sha256((gsm8k_data_dir / n).read_bytes()).hexdigest() for n in PARQUETS}


@pytest.mark.slow
def test_val_is_held_out_from_train_and_fixed_by_the_seed(gsm8k_data_dir, gsm8k_source_dir, gsm8k_rows, tmp_path):
    train = [r["extra_info"]["index"] for r in read(gsm8k_data_dir / "train.parquet")]
    val = [r["extra_info"]["index"] for r in read(gsm8k_data_dir / "val.parquet")]
    assert not set(train) & set(val) and sorted(train + val) == list(range(24))
    assert train == sorted(train) and val == sorted(val)  # both keep the source order

    val_questions = {r["extra_info"]["question"] for r in read(gsm8k_data_dir / "val.parquet")}
    # Same seed on a copy whose rows are in another order: the same questions are held out.
    shuffled = write_jsonl(tmp_path / "shuffled" / "train.jsonl", gsm8k_rows[:24][::-1])
    assert run_prep("--source", shuffled, "--output-dir", tmp_path / "a", "--val-size", 4, "--seed", 0).returncode == 0
    assert {r["extra_info"]["question"] for r in read(tmp_path / "a" / "val.parquet")} == val_questions
    # Another seed holds out other problems.
    other = run_prep("--source", gsm8k_source_dir, "--output-dir", tmp_path / "b", "--val-size", 4, "--seed", 1)
    assert other.returncode == 0, other.stderr
    assert {r["extra_info"]["question"] for r in read(tmp_path / "b" / "val.parquet")} != val_questions


@pytest.mark.parametrize(
    "final, truth",
    [
        ("72", "72"),  # plain
        ("12,500", "12500"),  # thousands separator dropped
        ("1,008", "1008"),  # one separator
        ("-5", "-5"),  # negative stays negative
        ("2.5", "2.5"),  # decimal kept
    ],
)
def test_ground_truths_are_canonical(gsm8k_data_dir, final, truth):
    rows = [r for s in ("train", "val", "test") for r in read(gsm8k_data_dir / f"{s}.parquet")]
    truths = [r["reward_model"]["ground_truth"] for r in rows if final_answer(r["extra_info"]["answer"]) == final]
    assert truths == [truth]
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", r["reward_model"]["ground_truth"]) for r in rows)


def test_every_sft_target_scores_one_in_the_strict_reward(gsm8k_data_dir):
    checked = 0
    for split in ("train", "val"):
        rl_rows, sft_rows = read(gsm8k_data_dir / f"{split}.parquet"), read(gsm8k_data_dir / f"sft_{split}.parquet")
        assert len(rl_rows) == len(sft_rows)
        for rl, sft in zip(rl_rows, sft_rows, strict=True):  # sft_<split> is aligned row for row with <split>
            truth = rl["reward_model"]["ground_truth"]
            assert sft["prompt"] == rl["prompt"]
            [message] = sft["completion"]
            assert message["role"] == "assistant"
            assert "<<" not in message["content"] and message["content"].endswith(f"\n#### {truth}")
            assert compute_score(DATA_SOURCE, message["content"], truth, mode="strict")["score"] == 1.0
            checked += 1
    for rl in read(gsm8k_data_dir / "test.parquet"):  # test has no SFT file; its references agree too
        completion = sft_completion(rl["extra_info"]["answer"])
        assert (
            compute_score(DATA_SOURCE, completion, rl["reward_model"]["ground_truth"], mode="strict")["score"] == 1.0
        )
        checked += 1
    assert checked == 32


# ------------------------------------------------------------------------------------------- bad input

BAD_ROWS = [
    # (row that replaces train line 3, words the error must contain)
    ({"answer": "So 4.\n#### 4"}, "missing field 'question'"),
    ({"question": "How many?"}, "missing field 'answer'"),
    ({"question": "   ", "answer": "So 4.\n#### 4"}, "empty question"),
    ({"question": "How many?", "answer": "It is 4."}, "reference answer has no '####' line"),
    ({"question": "How many?", "answer": "So four.\n#### four"}, "final answer 'four' is not a number"),
    ({"question": 7, "answer": "#### 7"}, "field 'question' is not a string (got int)"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS, ids=[m for _, m in BAD_ROWS])
def test_a_bad_row_is_named_and_nothing_is_written(gsm8k_rows, tmp_path, bad, message):
    rows = [*gsm8k_rows[:2], bad, *gsm8k_rows[3:24]]
    write_jsonl(tmp_path / "src" / "train.jsonl", rows)
    write_jsonl(tmp_path / "src" / "test.jsonl", gsm8k_rows[24:])
    out = tmp_path / "out"
    result = run_prep("--source", tmp_path / "src", "--output-dir", out, "--val-size", 4)
    assert result.returncode == 1
    assert f"{tmp_path / 'src' / 'train.jsonl'} line 3 (split train, index 2): {message}" in result.stderr
    assert not out.exists()


def test_bad_rows_in_test_split_and_unparseable_lines_are_all_reported(gsm8k_rows, tmp_path):
    write_jsonl(tmp_path / "src" / "train.jsonl", gsm8k_rows[:24])
    test = write_jsonl(tmp_path / "src" / "test.jsonl", gsm8k_rows[24:])
    test.write_text(test.read_text() + '{"question": "Half a line\n\n{"question": "Q", "answer": "#### ?"}\n')
    out = tmp_path / "out"
    out.mkdir()  # an existing, empty output dir stays empty
    result = run_prep("--source", tmp_path / "src", "--output-dir", out, "--val-size", 4)
    assert result.returncode == 1
    assert "2 bad input row(s)" in result.stderr
    assert f"{test} line 9 (split test, index 8): not valid JSON" in result.stderr
    assert f"{test} line 11 (split test, index 9):" in result.stderr  # blank line 10 skipped, index counts rows
    assert list(out.iterdir()) == []


def test_a_parquet_file_without_the_columns_is_rejected(tmp_path, gsm8k_rows):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(
        pa.Table.from_pylist([{"problem": r["question"], "solution": r["answer"]} for r in gsm8k_rows]),
        src / "train.parquet",
    )
    result = run_prep("--source", src, "--output-dir", tmp_path / "out", "--val-size", 4)
    assert result.returncode == 1
    assert f"{src / 'train.parquet'} (split train): missing field(s) 'question', 'answer'" in result.stderr
    assert "columns: problem, solution" in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("val_size", ["24", "-1"])
def test_an_impossible_val_size_is_refused(gsm8k_source_dir, tmp_path, val_size):
    result = run_prep("--source", gsm8k_source_dir, "--output-dir", tmp_path / "out", "--val-size", val_size)
    assert result.returncode == 1 and f"--val-size {val_size} must be" in result.stderr
    assert "24 train rows" in result.stderr and not (tmp_path / "out").exists()


def test_offline_hub_source_says_what_to_do(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_prep("--output-dir", tmp_path / "out", env=env)  # default source: the hub's openai/gsm8k
    assert result.returncode == 1
    assert "cannot load 'openai/gsm8k' (config 'main'" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr and "--source DIR" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- reruns


@pytest.mark.slow
def test_rerun_is_a_no_op_force_rebuilds_the_same_bytes(gsm8k_source_dir, tmp_path):
    out = tmp_path / "out"
    args = ("--source", gsm8k_source_dir, "--output-dir", out, "--val-size", 4, "--seed", 0)
    assert run_prep(*args).returncode == 0
    files = [*PARQUETS, "manifest.json"]
    before = {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in files}

    again = run_prep(*args)
    assert again.returncode == 0 and "up to date" in again.stderr
    assert {n: ((out / n).read_bytes(), (out / n).stat().st_mtime_ns) for n in files} == before

    forced = run_prep(*args, "--force")
    assert forced.returncode == 0 and "wrote" in forced.stderr
    assert {n: (out / n).read_bytes() for n in files} == {n: b for n, (b, _) in before.items()}
    assert any((out / n).stat().st_mtime_ns != before[n][1] for n in files)  # really rewritten
    assert sorted(p.name for p in out.iterdir()) == sorted(files)  # no temporary leftovers

    # Not up to date any more: other parameters, or an output file changed behind the manifest's back.
    assert "wrote" in run_prep(*args[:-1], "1").stderr  # --seed 1
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    (out / "train.parquet").write_bytes(b"truncated")
    assert "wrote" in run_prep(*args[:-1], "1").stderr
    assert pq.read_metadata(out / "train.parquet").num_rows == 20


# ------------------------------------------------------------------------------- entry points, layouts


@pytest.mark.slow
def test_runs_from_any_directory_and_as_a_module(gsm8k_data_dir, gsm8k_source_dir, tmp_path):
    args = ("--source", gsm8k_source_dir, "--val-size", 4, "--seed", 0, "--output-dir")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    assert run_prep(*args, tmp_path / "script", cwd=elsewhere).returncode == 0
    assert run_prep(*args, tmp_path / "module", module=True).returncode == 0
    expected = {**parquet_bytes(gsm8k_data_dir), "manifest.json": (gsm8k_data_dir / "manifest.json").read_bytes()}
    for out in ("script", "module"):
        got = {**parquet_bytes(tmp_path / out), "manifest.json": (tmp_path / out / "manifest.json").read_bytes()}
        assert got == expected, out


@pytest.mark.slow
def test_a_single_file_is_the_train_split(gsm8k_data_dir, gsm8k_source_dir, tmp_path):
    train, test = gsm8k_source_dir / "train.jsonl", gsm8k_source_dir / "test.jsonl"
    alone = run_prep("--source", train, "--output-dir", tmp_path / "alone", "--val-size", 4, "--seed", 0)
    assert alone.returncode == 0 and "test.parquet will have 0 rows" in alone.stderr
    assert pq.read_metadata(tmp_path / "alone" / "test.parquet").num_rows == 0
    for name in ("train.parquet", "val.parquet", "sft_train.parquet", "sft_val.parquet"):
        assert (tmp_path / "alone" / name).read_bytes() == (gsm8k_data_dir / name).read_bytes()

    paired = run_prep(
        "--source", train, "--test-source", test, "--output-dir", tmp_path / "paired", "--val-size", 4, "--seed", 0
    )
    assert paired.returncode == 0, paired.stderr
    assert parquet_bytes(tmp_path / "paired") == parquet_bytes(gsm8k_data_dir)
    manifest = json.loads((tmp_path / "paired" / "manifest.json").read_text())
    # same rows, same input hash, whatever the layout
    assert manifest["test_source"] == str(test)
    assert manifest["input_sha256"] == json.loads((gsm8k_data_dir / "manifest.json").read_text())["input_sha256"]


SNAPSHOT_CARD = """---
configs:
- config_name: main
  data_files:
  - {split: train, path: main/train-*}
  - {split: test, path: main/test-*}
- config_name: socratic
  data_files:
  - {split: train, path: socratic/train-*}
  - {split: test, path: socratic/test-*}
---
# GSM8K
"""


@pytest.mark.slow
def test_a_hub_snapshot_of_parquet_shards_reads_like_the_jsonl_copy(gsm8k_data_dir, gsm8k_rows, tmp_path):
    # `hf download openai/gsm8k --repo-type dataset --local-dir snap` layout (its dataset card names both configs),
    # train in two shards; socratic/ holds other rows, which must not be mixed in.
    snap = tmp_path / "snap"
    (snap / "socratic").mkdir(parents=True)
    (snap / "main").mkdir()
    (snap / "README.md").write_text(SNAPSHOT_CARD)
    shards = {
        "train-00000-of-00002": gsm8k_rows[:10],
        "train-00001-of-00002": gsm8k_rows[10:24],
        "test-00000-of-00001": gsm8k_rows[24:],
    }
    for name, rows in shards.items():
        pq.write_table(pa.Table.from_pylist(rows), snap / "main" / f"{name}.parquet")
        pq.write_table(pa.Table.from_pylist(rows[::-1]), snap / "socratic" / f"{name}.parquet")
    result = run_prep("--source", snap, "--output-dir", tmp_path / "out", "--val-size", 4, "--seed", 0)
    assert result.returncode == 0, result.stderr
    assert parquet_bytes(tmp_path / "out") == parquet_bytes(gsm8k_data_dir)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source_files"]["train"] == [
        "main/train-00000-of-00002.parquet",
        "main/train-00001-of-00002.parquet",
    ]

    write_jsonl(snap / "main" / "train.jsonl", gsm8k_rows[:24])  # a second copy of train beside the shards
    result = run_prep("--source", snap, "--output-dir", tmp_path / "again", "--val-size", 4)
    assert result.returncode == 1  # datasets would read the parquet shards and silently skip train.jsonl
    assert f"{snap / 'main'}: train.jsonl beside the parquet split files" in result.stderr


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {},
            "no train split file in {src} (expected train.jsonl, train.parquet or train-00000-of-00001.parquet; "
            "found nothing)",
        ),
        (
            {"test.jsonl": 24, "notes.txt": 0},
            "no train split file in {src} (expected train.jsonl, train.parquet "
            "or train-00000-of-00001.parquet; found notes.txt, test.jsonl)",
        ),
        ({"train.jsonl": 24, "test.parquet": 8}, "Couldn't infer the same data file format for all splits"),
    ],
    ids=["empty", "no-train", "mixed-formats"],
)
def test_a_folder_without_a_usable_train_split_is_refused(gsm8k_rows, tmp_path, files, message):
    src = tmp_path / "src"
    src.mkdir()
    for name, n in files.items():
        if name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(gsm8k_rows[:n]), src / name)
        else:
            write_jsonl(src / name, gsm8k_rows[:n])
    result = run_prep("--source", src, "--output-dir", tmp_path / "out", "--val-size", 4)
    assert result.returncode == 1 and f"--source {src}: " + message.format(src=src) in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_failed_write_leaves_the_previous_outputs_untouched(gsm8k_data_dir, gsm8k_source_dir, tmp_path, monkeypatch):
    import data.prepare_gsm8k as prep

    real_write = prep.pq.write_table

    def disk_full_at_test_parquet(table, where, **kwargs):
        if Path(where).name == "test.parquet":
            raise OSError(28, "No space left on device")
        return real_write(table, where, **kwargs)

    monkeypatch.setattr(prep.pq, "write_table", disk_full_at_test_parquet)
    out = tmp_path / "out"
    shutil.copytree(gsm8k_data_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(prep.DataError, match="No space left on device"):
        prep.prepare(str(gsm8k_source_dir), out, val_size=3, seed=0)  # other inputs: a rebuild is due
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary leftovers either
    with pytest.raises(prep.DataError):
        prep.prepare(str(gsm8k_source_dir), tmp_path / "fresh", val_size=3, seed=0)
    assert not (tmp_path / "fresh").exists()


def test_a_folder_it_cannot_write_names_the_user_the_stack_runs_as(gsm8k_source_dir, tmp_path):
    import data.prepare_gsm8k as prep

    (tmp_path / "data").write_text("")  # data/ is not a folder we may write into
    with pytest.raises(prep.DataError) as failed:
        prep.prepare(str(gsm8k_source_dir), tmp_path / "data" / "gsm8k", val_size=3, seed=0)
    message = str(failed.value)
    assert f"this user ({os.getuid()}:{os.getgid()})" in message and "run as HOST_UID:HOST_GID" in message
    assert "scripts/init_env.sh" in message and "runs as root" not in message  # no container runs as root
