"""Capability check: lm-evaluation-harness on the tiny model through the same code path the GPU run uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.eval.capability_suite import DEFAULT_SUITE, compare, load_suite

REPO = Path(__file__).resolve().parent.parent
LOCAL_TASK = REPO / "tests" / "fixtures" / "capability" / "tiny_arith.yaml"


def write_suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_the_shipped_suite_is_arc_hellaswag_mmlu():
    suite = load_suite(DEFAULT_SUITE)
    assert set(suite) == {"arc_challenge", "hellaswag", "mmlu"}
    assert all(settings["limit"] > 0 for settings in suite.values())  # sized to minutes, not hours


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tasks: []\n", "expected a mapping"),  # no tasks
        ("tasks:\n  arc_challenge: {limit: 5}\n", "needs a `metric`"),  # metric missing
        ("tasks:\n  arc_challenge: {metric: acc, fewshot: 5}\n", "unknown key"),  # typo of num_fewshot
        ("tasks: [\n", "cannot read"),  # not YAML
    ],
)
def test_bad_suite_names_the_file_and_the_problem(tmp_path, text, message):
    path = write_suite(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        load_suite(path)
    assert str(path) in str(info.value)


def test_compare_flags_only_drops_beyond_noise():
    rows = compare(
        {
            "base": {"arc": {"value": 0.50, "stderr": 0.02}, "mmlu": {"value": 0.40, "stderr": 0.02}},
            "ppo": {"arc": {"value": 0.47, "stderr": 0.02}, "mmlu": {"value": 0.30, "stderr": 0.02}},
        }
    )
    by = {(r["model"], r["task"]): r for r in rows}
    assert by[("base", "arc")]["delta"] is None
    assert by[("ppo", "arc")]["flag"] == ""  # -0.03 is within 1.96 * sqrt(2) * 0.02 = 0.055
    assert by[("ppo", "mmlu")]["flag"] == "drop"
    assert by[("ppo", "mmlu")]["delta"] == pytest.approx(-0.10)


@pytest.mark.slow
def test_prefetch_loads_every_task_of_the_suite_without_a_model(tmp_path):
    suite = write_suite(tmp_path, f"tasks:\n  tiny_arith:\n    file: {LOCAL_TASK}\n    metric: acc\n")
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.eval.capability", "--prefetch", "--suite", str(suite)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "capability suite data cached: tiny_arith" in proc.stdout
    cli = [sys.executable, "-m", "scripts.eval.capability"]
    missing = subprocess.run([*cli, "--suite", str(suite)], capture_output=True, text=True)
    assert missing.returncode == 2 and "--model and --output are required" in missing.stderr


@pytest.mark.slow
def test_cli_scores_the_tiny_model_on_a_local_task(tmp_path, tiny_model_dir):
    suite = write_suite(tmp_path, f"tasks:\n  tiny_arith:\n    file: {LOCAL_TASK}\n    metric: acc\n    limit: 6\n")
    out = tmp_path / "capability.json"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.eval.capability", "--model", str(tiny_model_dir), "--backend", "hf"]
        + ["--suite", str(suite), "--output", str(out)],
        cwd=tmp_path,  # the task's data file is found next to the task, not in the working directory
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    score = result["tasks"]["tiny_arith"]
    assert score["metric"] == "acc" and score["n"] == 6
    assert 0.0 <= score["value"] <= 1.0 and score["stderr"] > 0
