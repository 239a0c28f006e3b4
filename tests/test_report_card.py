"""scripts/eval/report_card.py: the end of speedrun.sh prints the card and logs one pipeline run linking the stages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_report import cavo_vectors, run_report, write_result

REPO = Path(__file__).resolve().parent.parent
CARD = ("-m", "scripts.eval.report_card")


def finished_pipeline(root: Path, tiny_model_dir: Path) -> Path:
    """models/ as speedrun.sh leaves it: stage markers, an SFT manifest, RL run ids and the evaluation report."""
    models = root / "models"
    model, baseline = cavo_vectors()
    results = [write_result(root / "base.json", baseline), write_result(root / "ppo.json", model)]
    proc = run_report(*map(str, results), "--output-dir", str(models / "eval" / "report"))
    assert proc.returncode == 0, proc.stderr
    (models / "speedrun").mkdir(parents=True)
    for stage, seconds in {"data": 60, "sft": 900, "ppo": 7200, "grpo": 3600, "eval": 1800}.items():
        (models / "speedrun" / f"{stage}.done").write_text(json.dumps({"stage": stage, "seconds": seconds}))
    (models / "sft").mkdir()
    (models / "sft" / "latest.json").write_text(json.dumps({"path": str(tiny_model_dir), "mlflow_run_id": "s1"}))
    for algo in ("ppo", "grpo"):
        (models / "rl" / f"{algo}-speedrun").mkdir(parents=True)
        (models / "rl" / f"{algo}-speedrun" / "mlflow_run_id").write_text(f"{algo}-run\n")
    return models


def run_card(models: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, *CARD, "--models-dir", str(models), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_card_shows_accuracy_time_and_gpu_hours_and_links_the_runs(tmp_path, tiny_model_dir, mlflow_uri):
    models = finished_pipeline(tmp_path, tiny_model_dir)
    proc = run_card(models, MLFLOW_TRACKING_URI=mlflow_uri, N_GPUS="4", NNODES="1")
    assert proc.returncode == 0, proc.stderr
    card = proc.stdout
    assert "GSM8K test, n = 161" in card
    assert re.search(r"^ppo +40\.4% \[33\.1, 48\.1\] +40\.4%", card, re.M)  # accuracy, Wilson interval
    assert re.search(r"^ppo +120\.0 m +8\.00$", card, re.M)  # 2 h on 4 GPUs
    assert re.search(r"^sft +15\.0 m +0\.25$", card, re.M)  # SFT: one GPU
    assert re.search(r"^data +1\.0 m +0\.00$", card, re.M)
    assert re.search(r"^total +226\.0 m +12\.75$", card, re.M)

    import mlflow

    client = mlflow.MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("gsm8k-pipeline").experiment_id])
    tags, metrics = runs[0].data.tags, runs[0].data.metrics
    assert (tags["run_id.sft"], tags["run_id.ppo"], tags["run_id.grpo"]) == ("s1", "ppo-run", "grpo-run")
    assert metrics["gpu_hours/ppo"] == 8.0 and metrics["seconds/eval"] == 1800
    assert metrics["ppo/accuracy_gsm8k_strict"] == 65 / 161


def test_card_without_mlflow_is_still_printed(tmp_path, tiny_model_dir):
    models = finished_pipeline(tmp_path, tiny_model_dir)
    proc = run_card(models, MLFLOW_TRACKING_URI="http://127.0.0.1:9", N_GPUS="0")
    assert proc.returncode == 0
    assert re.search(r"^total +226\.0 m +0\.00$", proc.stdout, re.M)  # the CPU stack: no GPU hours
    assert "no pipeline run logged" in proc.stderr and "unreachable" in proc.stderr


def test_the_card_has_a_stage_per_algorithm_the_speedrun_ran(tmp_path, tiny_model_dir):
    """ALGOS=ppo,grpo,rloo: the RL stages are the algorithms of verl_configs/, each on all the GPUs."""
    models = finished_pipeline(tmp_path, tiny_model_dir)
    (models / "speedrun" / "rloo.done").write_text(json.dumps({"stage": "rloo", "seconds": 1200}))
    proc = run_card(models, "--algos", "ppo,grpo,rloo", MLFLOW_TRACKING_URI="http://127.0.0.1:9", N_GPUS="2")
    assert proc.returncode == 0, proc.stderr
    stages = [line.split()[0] for line in proc.stdout.splitlines() if re.match(r"^\w+ +[\d.]+ m +[\d.]+$", line)]
    assert stages == ["data", "sft", "ppo", "grpo", "rloo", "eval", "total"]
    assert re.search(r"^rloo +20\.0 m +0\.67$", proc.stdout, re.M)  # 20 min on 2 GPUs
    unknown = run_card(models, "--algos", "ppo,nope", N_GPUS="2")
    assert unknown.returncode == 2 and "ALGOS names nope" in unknown.stderr and "choose from" in unknown.stderr
