"""The one-file claims, as a researcher makes them: a new algorithm is one verl_configs/<algo>_gsm8k.yaml, and a
new reward is one function plus one registry line. Each is added here for real (the YAML into verl_configs/,
the reward into rewards.REWARDS), then looked for where the stack uses it: the dry run (composed and validated
by verl 0.9.1), the speedrun's plan, and evaluation with its report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import rewards
from scripts.eval import evaluation
from scripts.lib.paths import VERL_CONFIGS, algorithms
from scripts.rl import launch as rl_launch

REPO = Path(__file__).resolve().parent.parent
NEW_ALGO = "grpo_lowkl"  # GRPO with a tenth of its KL loss coefficient
RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$(dirname "$0")/calls.txt"
"""


@pytest.fixture
def new_algorithm() -> str:
    """verl_configs/grpo_lowkl_gsm8k.yaml, written as a researcher writes one (a copy of a preset with one setting
    changed), and removed afterwards."""
    path = VERL_CONFIGS / f"{NEW_ALGO}_gsm8k.yaml"
    assert not path.exists(), f"{path} is left from an earlier run: delete it"
    text = (VERL_CONFIGS / "grpo_gsm8k.yaml").read_text(encoding="utf-8")
    assert "kl_loss_coef: 0.001" in text and "experiment_name: grpo-" in text
    text = text.replace("kl_loss_coef: 0.001", "kl_loss_coef: 0.0001").replace(
        "experiment_name: grpo-", f"experiment_name: {NEW_ALGO}-"
    )
    path.write_text(text, encoding="utf-8")
    try:
        yield NEW_ALGO
    finally:
        path.unlink()


def dry_run(capsys, monkeypatch, tmp_path: Path, tiny_model_dir: Path, algo: str, **env: str) -> tuple[str, Path]:
    """`bash scripts/run_rl.sh <algo> --dry-run` in-process (run_rl.sh only passes the name on): stdout and the
    composed config's path; a refusal fails the test with verl's or the launcher's message."""
    ckpt = tmp_path / "ckpt"
    settings = {
        "MODEL_PATH": str(tiny_model_dir),
        "DATA_DIR": str(tmp_path / "data"),
        "CHECKPOINT_DIR": str(ckpt),
        "RAY_TMPDIR": str(tmp_path / "no-ray"),
        "N_GPUS": "4",
        **env,
    }
    for var, value in settings.items():
        monkeypatch.setenv(var, value)
    for var in {"RAY_ADDRESS", "BASE_MODEL", "NNODES", "EXPERIMENT", "REWARD", "MODEL"} - set(env):
        monkeypatch.delenv(var, raising=False)
    rc = rl_launch.main(["--algo", algo, "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out, ckpt / "dry_run_config.yaml"


@pytest.mark.slow
def test_a_new_algorithm_yaml_is_run_planned_evaluated_and_reported(
    new_algorithm, capsys, monkeypatch, tmp_path, tiny_model_dir, gsm8k_data_dir
):
    assert new_algorithm in algorithms()

    # The dry run composes it with the shared base and verl checks it; its setting is in effect.
    out, resolved = dry_run(capsys, monkeypatch, tmp_path, tiny_model_dir, new_algorithm)
    assert f"verl {new_algorithm.upper()} on GSM8K, dry run" in out
    cfg = OmegaConf.load(resolved)
    assert cfg.actor_rollout_ref.actor.kl_loss_coef == 0.0001 and cfg.algorithm.adv_estimator == "grpo"
    assert cfg.trainer.experiment_name == f"{new_algorithm}-{tiny_model_dir.name}"

    # The speedrun plans a stage for it, and tells evaluation and the report card (COMPOSE records the calls).
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "speedrun.sh", root / "scripts")
    shutil.copytree(VERL_CONFIGS, root / "verl_configs")
    (root / "models" / "speedrun").mkdir(parents=True)
    (root / "compose.sh").write_text(RECORDER)
    proc = subprocess.run(
        ["bash", str(root / "scripts" / "speedrun.sh")],
        env={**os.environ, "COMPOSE": f"bash {root / 'compose.sh'}", "ALGOS": f"ppo,{new_algorithm}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    calls = (root / "calls.txt").read_text().splitlines()
    experiment = f"{new_algorithm}-speedrun"
    assert f"exec -T -e EXPERIMENT={experiment} verl bash run_rl.sh {new_algorithm}" in calls
    evaluation_call = next(c for c in calls if "scripts.eval.run_all" in c)
    assert f"-e ALGOS=ppo {new_algorithm} " in evaluation_call
    assert f"-e {new_algorithm.upper()}_EXPERIMENT={experiment}" in evaluation_call
    assert calls[-1].endswith(f"scripts.eval.report_card --algos ppo {new_algorithm} --quick 0")

    # Evaluation finds its checkpoint as it finds PPO's, and the report has a row for it.
    models = tmp_path / "models"
    run = models / "rl" / experiment
    shutil.copytree(tiny_model_dir, run / "global_step_1" / "actor" / "huggingface")
    (run / "latest_checkpointed_iteration.txt").write_text("1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.eval.run_all", "--max-new-tokens", "8"],
        cwd=tmp_path,
        env=env
        | {
            "HF_HUB_OFFLINE": "1",
            "MODELS_DIR": str(models),
            "DATA_DIR": str(gsm8k_data_dir),
            "MODELS": f"base {new_algorithm}",
            "BASE_MODEL": str(tiny_model_dir),
            "BACKEND": "hf",
            "LIMIT": "2",
            "CAPABILITY": "0",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((models / "eval" / f"{new_algorithm}.json").read_text())
    assert result["model"] == str(run / "global_step_1" / "actor" / "huggingface") and result["n"] == 2
    report = models / "eval" / "report"
    assert f"\n| {new_algorithm} | `" in (report / "report.md").read_text()
    assert new_algorithm in {row["label"] for row in json.loads((report / "report.json").read_text())["models"]}


REWARD_FILE = '''\
def exact_line(data_source, solution_str, ground_truth, extra_info=None):
    """1 only where the last line is exactly `#### <answer>`: a format-strict reward a researcher might try."""
    acc = float(solution_str.strip().rpartition("\\n")[2] == f"#### {ground_truth}")
    return {"score": acc, "acc": acc}
'''


@pytest.mark.slow
def test_a_new_reward_is_one_function_and_one_registry_line_then_trained_and_measured(
    capsys, monkeypatch, tmp_path, tiny_model_dir
):
    import importlib.util

    source = tmp_path / "exact_line.py"  # as rewards/<name>.py would be: a self-contained file verl imports by path
    source.write_text(REWARD_FILE)
    spec = importlib.util.spec_from_file_location("exact_line", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(rewards.REWARDS, "exact_line", module.exact_line)  # the one registry line

    # Trained: REWARD=exact_line hands verl that file and function, and verl's own loader resolves and calls it.
    out, resolved = dry_run(capsys, monkeypatch, tmp_path, tiny_model_dir, "grpo", REWARD="exact_line")
    assert f"REWARD=exact_line: {source}:exact_line {{}} (as verl's loader resolves it)" in out
    reward = OmegaConf.to_container(OmegaConf.load(resolved).reward.custom_reward_function)
    assert (reward["path"], reward["name"]) == (str(source), "exact_line")

    # Measured: evaluation scores every answer with it, by its registry name.
    problems = [evaluation.Problem(i, f"q{i}", str(i), []) for i in range(3)]
    answers = ["0 + 0 = 0\n#### 0", "so #### 1", "#### 7"]
    result = evaluation.score(problems, answers, model="m", data="/data/gsm8k/test.parquet", backend="hf")
    assert result.accuracy["exact_line"] == pytest.approx(1 / 3)
    assert result.accuracy["gsm8k_strict"] == pytest.approx(2 / 3)
