"""The report card at the end of scripts/speedrun.sh: what each stage gave and cost, and one MLflow pipeline run.

    python -m scripts.eval.report_card                 # speedrun.sh runs it in the verl container at the end

Prints the evaluation report's accuracies (and capability check), wall time and GPU hours per stage, then logs
one run to the MLflow experiment `gsm8k-pipeline` tagged with the stage runs, when MLflow is reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from scripts.lib.checkpoints import read_sft_manifest
from scripts.lib.mlflow_health import check_mlflow, ui_url
from scripts.lib.paths import parse_algos, sft_manifest, under_repo

EXPERIMENT = "gsm8k-pipeline"


def stages(algos: list[str]) -> list[str]:
    """The speedrun's stages, in order: data, SFT, one per RL algorithm, evaluation."""
    return ["data", "sft", *algos, "eval"]


def stage_times(speedrun_dir: Path, algos: list[str]) -> dict[str, float]:
    """Seconds per stage from the markers speedrun.sh wrote (a stage skipped in every run has none)."""
    times = {}
    for stage in stages(algos):
        marker = speedrun_dir / f"{stage}.done"
        if marker.is_file():
            times[stage] = float(json.loads(marker.read_text(encoding="utf-8"))["seconds"])
    return times


def gpu_hours(times: dict[str, float], n_gpus: int, nnodes: int) -> dict[str, float]:
    """GPU hours per stage: one GPU for SFT and evaluation, all of them for RL, none for data prep."""
    gpus = {"data": 0, "sft": min(n_gpus, 1), "eval": min(n_gpus, 1)}
    return {stage: seconds * gpus.get(stage, n_gpus * nnodes) / 3600 for stage, seconds in times.items()}


def _pct_ci(value: float, ci: list[float]) -> str:
    return f"{100 * value:5.1f}% [{100 * ci[0]:4.1f}, {100 * ci[1]:4.1f}]"


def render(report: dict[str, Any] | None, times: dict[str, float], hours: dict[str, float]) -> str:
    lines = ["", "=== GSM8K post-training report card ==="]
    if report is None:
        lines.append("(no evaluation report yet: models/eval/report/report.json)")
    else:
        lines.append(f"GSM8K test, n = {report['n']}, greedy; accuracy [95% Wilson interval]")
        rewards = report["rewards"]
        lines.append(f"{'model':<8}" + "".join(f"{name:>24}" for name in rewards))
        for m in report["models"]:
            cells = (_pct_ci(m["accuracy"][name], m["ci95"][name]) for name in rewards)
            lines.append(f"{m['label']:<8}" + "".join(f"{cell:>24}" for cell in cells))
        for row in report.get("capability", {}).get("rows", []):
            score = f"{100 * row['value']:5.1f}% +- {100 * row['stderr']:.1f}"
            change = "" if row["delta"] is None else f" ({100 * row['delta']:+.1f} vs base) {row['flag']}"
            lines.append(f"capability {row['model']:<6} {row['task']:<14} {score}{change}")
    lines.append(f"{'stage':<8}{'wall':>12}{'GPU hours':>12}")
    for stage, seconds in times.items():  # in stage order
        lines.append(f"{stage:<8}{seconds / 60:>10.1f} m{hours[stage]:>12.2f}")
    lines.append(f"{'total':<8}{sum(times.values()) / 60:>10.1f} m{sum(hours.values()):>12.2f}")
    return "\n".join(lines)


def stage_runs(models_dir: Path, experiments: dict[str, str]) -> dict[str, str]:
    """MLflow run ids of the stages, from the files each stage keeps them in."""
    runs = {}
    try:
        manifest = read_sft_manifest(sft_manifest(models_dir), root=models_dir.parent)
    except ValueError:
        manifest = None
    if manifest and manifest.get("mlflow_run_id"):
        runs["sft"] = manifest["mlflow_run_id"]
    for algo, experiment in experiments.items():
        run_id_file = models_dir / "rl" / experiment / "mlflow_run_id"
        if run_id_file.is_file():
            runs[algo] = run_id_file.read_text(encoding="utf-8").strip()
    return runs


def log_pipeline(report, times, hours, runs: dict[str, str], quick: bool) -> str:
    import mlflow

    mlflow.set_experiment(EXPERIMENT)
    report_runs = mlflow.search_runs(
        experiment_names=["gsm8k-eval"], filter_string="tags.stage = 'report'", max_results=1, output_format="list"
    )
    if report_runs:
        runs["report"] = report_runs[0].info.run_id
    with mlflow.start_run(run_name="speedrun-quick" if quick else "speedrun") as run:
        mlflow.log_params({"quick": quick, "stages": ",".join(times)})
        mlflow.set_tags({"stage": "pipeline", **{f"run_id.{stage}": run_id for stage, run_id in runs.items()}})
        metrics = {f"seconds/{s}": t for s, t in times.items()} | {f"gpu_hours/{s}": h for s, h in hours.items()}
        for m in (report or {}).get("models", []):
            metrics |= {f"{m['label']}/accuracy_{mode}": acc for mode, acc in m["accuracy"].items()}
        mlflow.log_metrics(metrics)
    return ui_url(run.info.experiment_id, run.info.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", default="models", help="the checkpoint area (relative: under the repo)")
    parser.add_argument("--algos", default="ppo,grpo", help="the RL stages (speedrun.sh's ALGOS)")
    parser.add_argument("--quick", type=int, default=0)
    args = parser.parse_args(argv)
    models_dir = under_repo(args.models_dir)
    report_file = models_dir / "eval" / "report" / "report.json"
    report = json.loads(report_file.read_text(encoding="utf-8")) if report_file.is_file() else None
    try:
        algos = parse_algos(args.algos)
    except ValueError as exc:
        parser.error(str(exc))
    times = stage_times(models_dir / "speedrun", algos)
    hours = gpu_hours(times, int(os.environ.get("N_GPUS", "0")), int(os.environ.get("NNODES", "1")))
    print(render(report, times, hours))
    try:
        check_mlflow()
    except ConnectionError as exc:
        print(f"report_card.py: no pipeline run logged: {exc}", file=sys.stderr)
        return 0
    runs = stage_runs(models_dir, {algo: f"{algo}-speedrun" for algo in algos})  # speedrun.sh's experiments
    url = log_pipeline(report, times, hours, runs, bool(args.quick))
    print(f"MLflow pipeline run (experiment {EXPERIMENT}): {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
