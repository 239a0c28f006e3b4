"""scripts/speedrun.sh's stage plan with ALGOS: one RL stage per algorithm of verl_configs/, each run through
run_rl.sh in its own experiment, evaluation and the report card told about all of them. The compose command is
a recorder (COMPOSE=...), so this runs without a stack; tests/test_compose_engine.py runs the real speedrun.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECORDER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$(dirname "$0")/calls.txt"
"""


def speedrun(root: Path, **env: str) -> subprocess.CompletedProcess:
    recorder = root / "compose.sh"
    recorder.write_text(RECORDER)
    return subprocess.run(
        ["bash", str(root / "scripts" / "speedrun.sh")],
        env={**os.environ, "COMPOSE": f"bash {recorder}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "speedrun.sh", root / "scripts")
    shutil.copytree(REPO / "verl_configs", root / "verl_configs")
    (root / "models" / "speedrun").mkdir(parents=True)  # the recorder does not run `mkdir` in a container
    return root


def test_algos_make_one_rl_stage_each_and_evaluation_and_the_card_see_them_all(tmp_path):
    root = checkout(tmp_path)
    proc = speedrun(root, ALGOS="ppo,grpo")
    assert proc.returncode == 0, proc.stderr
    calls = (root / "calls.txt").read_text().splitlines()
    rl = [c for c in calls if "run_rl.sh" in c]
    assert rl == [
        "exec -T -e EXPERIMENT=ppo-speedrun verl bash run_rl.sh ppo",
        "exec -T -e EXPERIMENT=grpo-speedrun verl bash run_rl.sh grpo",
    ]
    evaluation = next(c for c in calls if "scripts.eval.run_all" in c)
    assert "-e ALGOS=ppo grpo -e PPO_EXPERIMENT=ppo-speedrun -e GRPO_EXPERIMENT=grpo-speedrun" in evaluation
    assert calls[-1].endswith("scripts.eval.report_card --algos ppo grpo --quick 0")
    done = sorted(p.stem for p in (root / "models" / "speedrun").glob("*.done"))
    assert done == ["data", "eval", "grpo", "ppo", "sft"]


def test_an_algorithm_without_a_config_stops_before_any_stage(tmp_path):
    root = checkout(tmp_path)
    proc = speedrun(root, ALGOS="ppo,nope")
    assert proc.returncode == 1
    assert "ALGOS names nope, which has no verl_configs/nope_gsm8k.yaml" in proc.stderr
    assert "grpo" in proc.stderr.split("the algorithms:")[1]  # the choices, from the folder
    assert not (root / "calls.txt").exists()
