"""Compare GSM8K evaluation results (base, SFT, PPO, GRPO): a table, a chart and a JSON, with 95% intervals.

    python -m scripts.eval.report models/eval/{base,sft,ppo,grpo}.json                 # labels from the file names
    python -m scripts.eval.report a.json b.json --labels base,ppo --baseline base \\
        --output-dir models/eval/report --mlflow-experiment gsm8k-eval           # also one MLflow run

Inputs: `scripts.eval.evaluate --output` files (and with `--capability`, scripts.eval.capability outputs).
Outputs, each written atomically: report.md, report.json, accuracy.png (not without matplotlib). The numbers
come from scripts/eval/comparison.py; what they mean: docs/evaluation.md and the report itself.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from scripts.eval.capability_suite import compare
from scripts.eval.comparison import Labelled, ReportError, build_report, load_result
from scripts.lib.atomic import atomic_write
from scripts.lib.mlflow_health import check_mlflow, ui_url
from scripts.lib.paths import MODELS_DIR, display_path

logger = logging.getLogger(__name__)

FILES = {"markdown": "report.md", "json": "report.json", "chart": "accuracy.png"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"[{fmt.format(100 * lo)}, {fmt.format(100 * hi)}]"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report: settings, accuracy table, paired differences, how to read it, anchors."""
    n, base, rewards = report["n"], report["baseline"], report["rewards"]
    lines = [
        "# GSM8K evaluation report",
        "",
        f"Data: `{report['data_file']}`, n = {n} problems, prompt `{report['prompt_version']}`, greedy decoding, "
        f"at most {report['max_new_tokens']} new tokens. Created {report['created_at']} by `scripts/eval/report.py`.",
        "",
        "## Accuracy",
        "",
        "| model | checkpoint | backend | n | " + " | ".join(f"{name} [95% CI]" for name in rewards) + " |",
        "| --- | --- | --- | ---: |" + " --- |" * len(rewards),
    ]
    for m in report["models"]:
        cells = " | ".join(f"{_pct(m['accuracy'][name])} {_ci(*m['ci95'][name])}" for name in rewards)
        lines.append(f"| {m['label']} | `{display_path(m['model'])}` | {m['backend']} | {n} | {cells} |")
    if report["comparisons"]:
        lines += [
            "",
            f"## Difference vs {base} (paired, same {n} problems)",
            "",
            "| model | reward | difference | 95% CI (Newcombe, paired) | fixed / broken | McNemar exact p |",
            "| --- | --- | ---: | --- | --- | ---: |",
        ]
        for c in report["comparisons"]:
            interval = _ci(*c["ci95_newcombe"], signed=True)
            lines.append(
                f"| {c['label']} | {c['reward']} | {100 * c['diff']:+.1f} pts | {interval} "
                f"| {c['fixed']} / {c['broke']} | {_p(c['mcnemar_p'])} |"
            )
    lines += [
        "",
        "How to read this:",
        "",
        "- **Accuracy [95% CI]**: share of problems answered correctly, with the Wilson score interval for that "
        f"model alone (binomial over {n} problems), under each reward of the registry (rewards/__init__.py): "
        "`gsm8k_strict` reads the number after the last `####` (the format the prompt asks for and the RL reward "
        'pays for); `gsm8k_flexible` also accepts `\\boxed{}`, "the answer is" and the last number.',
        f"- **Difference**: accuracy minus {base}'s, in percentage points, on the same problems. Pairing removes "
        "the problem-difficulty noise two separate intervals carry, so it is usually much tighter than comparing "
        "the accuracy intervals by eye. Newcombe's score interval stays honest with few discordant problems; "
        "an interval that excludes 0 means a difference at the 5% level.",
        f"- **fixed / broken**: problems this model solves and {base} does not / the reverse. McNemar's exact test "
        "asks whether that split could be a fair coin; only these discordant problems carry information.",
    ]
    if len(report["comparisons"]) > 1:
        lines.append(
            f"- No correction for multiple comparisons ({len(report['comparisons'])} here); treat p-values near 0.05 "
            "with care."
        )
    for warning in report["warnings"]:
        lines.append(f"- Note: {warning}.")
    lines += render_capability(report)
    lines += [
        "",
        "## External reference numbers (published elsewhere, not produced by this repo)",
        "",
        "For context only: other pipelines, prompts, decoding and answer extraction; compare trends, not "
        "decimals. The closest of our columns is `gsm8k_strict`.",
        "",
        "| model | GSM8K test | source |",
        "| --- | ---: | --- |",
    ]
    for ref in report["external_reference"]:
        lines.append(f"| {ref['model']} | {ref['gsm8k_test']:.1f} | {ref['source']} |")
    return "\n".join(lines) + "\n"


def render_capability(report: dict[str, Any]) -> list[str]:
    """The capability check table (general benchmarks vs base), or nothing when the report has none."""
    if "capability" not in report:
        return []
    base = report["baseline"]
    lines = [
        "",
        f"## Capability check (lm-evaluation-harness, vs {base})",
        "",
        "| model | task | metric | score ± stderr | change vs " + base + " | |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for row in report["capability"]["rows"]:
        change = "" if row["delta"] is None else f"{100 * row['delta']:+.1f} pts"
        flag = {"drop": "**drop beyond noise**", "gain": "gain beyond noise"}.get(row["flag"], "")
        lines.append(
            f"| {row['model']} | {row['task']} | {row['metric']} | {_pct(row['value'])} ± {100 * row['stderr']:.1f} "
            f"| {change} | {flag} |"
        )
    lines += [
        "",
        "How to read this: general benchmarks the GSM8K training never saw (scripts/eval/capability.yaml: tasks, "
        "few-shot settings and question limits). A change is flagged when it exceeds 1.96 standard errors of the "
        "difference, sqrt(se_model² + se_base²): a flagged drop means post-training damaged that capability. "
        "The models answer the same questions, so this unpaired error is generous: a small real drop may go "
        "unflagged, a flagged one is not noise.",
    ]
    return lines


def render_chart(report: dict[str, Any]) -> bytes | None:
    """PNG: accuracy per model and reward with 95% Wilson error bars; beside it, the paired differences to the
    baseline with their 95% Newcombe intervals. None where matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    rewards, models, comparisons = report["rewards"], report["models"], report["comparisons"]
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    colors = {name: palette[k % len(palette)] for k, name in enumerate(rewards)}
    panels = 2 if comparisons else 1
    fig = Figure(figsize=((2.5 + 1.0 * len(models)) * panels, 4.4), dpi=120)
    axes = fig.subplots(1, panels, squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(models))
    width = 0.76 / len(rewards)
    for k, name in enumerate(rewards):
        acc = np.array([100 * m["accuracy"][name] for m in models])
        ci = np.array([m["ci95"][name] for m in models]).T * 100
        pos = x + (k - (len(rewards) - 1) / 2) * width
        ax.bar(pos, acc, width, yerr=np.abs(ci - acc), capsize=4, color=colors[name], label=name)
        for px, value, top in zip(pos, acc, ci[1], strict=True):
            ax.text(px, top + 1, f"{value:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [m["label"] for m in models])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"GSM8K {Path(report['data_file']).stem}, n={report['n']}: accuracy, 95% Wilson CI", fontsize=10)
    ax.legend(loc="upper left", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    if comparisons:
        ax = axes[0][1]
        others = list(dict.fromkeys(c["label"] for c in comparisons))
        for k, name in enumerate(rewards):
            rows = [next(c for c in comparisons if c["label"] == label and c["reward"] == name) for label in others]
            diff = np.array([100 * c["diff"] for c in rows])
            ci = np.array([c["ci95_newcombe"] for c in rows]).T * 100
            pos = np.arange(len(others)) + (k - (len(rewards) - 1) / 2) * 0.6 / len(rewards)
            ax.errorbar(pos, diff, yerr=np.abs(ci - diff), fmt="o", capsize=4, color=colors[name], label=name)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(others)), others)
        ax.set_xlim(-0.6, len(others) - 0.4)
        ax.set_ylabel(f"accuracy - {report['baseline']} (points)")
        ax.set_title(f"paired difference vs {report['baseline']}, 95% Newcombe CI", fontsize=10)
        ax.legend(loc="best", frameon=False)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_report(report: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.json and accuracy.png (when matplotlib is there); return what was written."""
    contents = {"chart": render_chart(report), "json": json.dumps(report, indent=2) + "\n"}
    contents["markdown"] = render_markdown(report)
    if contents["chart"] is None:
        del contents["chart"]
        logger.warning(
            "matplotlib is not installed here: no %s (the table and JSON are complete); draw it with "
            "`docker compose exec jupyter python -m scripts.eval.report ...` or `pip install matplotlib`",
            FILES["chart"],
        )
    for kind, data in contents.items():
        atomic_write(Path(output_dir) / FILES[kind], data)
    return {kind: Path(output_dir) / FILES[kind] for kind in contents}


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics, e.g. `ppo/accuracy_gsm8k_strict`, `ppo/diff_vs_base_gsm8k_strict`."""
    out: dict[str, float] = {}
    for m in report["models"]:
        for mode in report["rewards"]:
            out[f"{m['label']}/accuracy_{mode}"] = m["accuracy"][mode]
            out[f"{m['label']}/ci95_low_{mode}"], out[f"{m['label']}/ci95_high_{mode}"] = m["ci95"][mode]
    for row in report.get("capability", {}).get("rows", []):
        out[f"{row['model']}/capability_{row['task']}"] = row["value"]
        if row["delta"] is not None:
            out[f"{row['model']}/capability_{row['task']}_diff_vs_{report['baseline']}"] = row["delta"]
    for c in report["comparisons"]:
        key, mode = f"{c['label']}/diff_vs_{c['baseline']}", c["reward"]
        out[f"{key}_{mode}"] = c["diff"]
        out[f"{key}_ci95_low_{mode}"], out[f"{key}_ci95_high_{mode}"] = c["ci95_newcombe"]
        out[f"{c['label']}/mcnemar_p_{mode}"] = c["mcnemar_p"]
    return out


def log_to_mlflow(
    report: dict[str, Any], files: dict[str, Path], results: list[Labelled], experiment: str
) -> tuple[str, str]:
    """Log one run: params, metrics, the report files and the input result files; the table as the run's note.

    Returns the run id and the link to it a browser opens."""
    check_mlflow()  # before importing mlflow: fail in seconds, not after minutes of retries
    import mlflow

    mlflow.set_experiment(experiment)
    run_name = "report-" + "-".join(m["label"] for m in report["models"]) + f"-{Path(report['data_file']).stem}"
    with mlflow.start_run(run_name=run_name) as run:
        params = {k: report[k] for k in ("data_file", "n", "prompt_version", "max_new_tokens", "baseline")}
        params["labels"] = ",".join(m["label"] for m in report["models"])
        params.update({f"model_{m['label']}": m["model"] for m in report["models"]})
        mlflow.log_params(params)
        mlflow.set_tags({"stage": "report", "mlflow.note.content": render_markdown(report)})
        mlflow.log_metrics(report_metrics(report))
        for path in files.values():
            mlflow.log_artifact(str(path), artifact_path="report")
        for r in results:
            mlflow.log_artifact(str(r.path), artifact_path="results")
    return run.info.run_id, ui_url(run.info.experiment_id, run.info.run_id)


def load_capability(files: list[str], labels: list[str], baseline: str) -> dict[str, Any]:
    """The capability section of the report: each model's scores and their change vs the baseline."""
    if len(files) != len(labels):
        raise ReportError(f"--capability names {len(files)} files for {len(labels)} models; give one per model")
    by_model, suites = {}, []
    for path, label in zip(files, labels, strict=True):
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            by_model[label] = data["tasks"]
            suites.append(data.get("suite"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReportError(f"{path}: not a scripts/eval/capability.py output ({exc!r})") from None
    if any(suite != suites[0] for suite in suites):
        raise ReportError("the capability files were made with different suites: rerun them with one suite")
    return {"suite": suites[0], "rows": compare(by_model, baseline)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="JSON files written by scripts/eval/evaluate.py --output")
    parser.add_argument("--labels", help="comma-separated names, one per file (default: the file names' stems)")
    parser.add_argument("--baseline", help="label the others are compared with (default: the first)")
    parser.add_argument("--output-dir", default=str(MODELS_DIR / "eval" / "report"))
    parser.add_argument("--mlflow-experiment", help="also log one run to MLflow (MLFLOW_TRACKING_URI) here")
    parser.add_argument(
        "--capability",
        nargs="+",
        metavar="JSON",
        help="scripts/eval/capability.py outputs, one per result file, in order",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    labels = args.labels.split(",") if args.labels else [Path(p).stem for p in args.results]
    labels = [label.strip() for label in labels]
    if len(labels) != len(args.results):
        parser.error(f"--labels names {len(labels)} models but {len(args.results)} result files were given")
    if len(set(labels)) != len(labels) or not all(labels):
        parser.error(f"labels must be unique and non-empty, got {labels}; pass --labels")
    baseline = args.baseline or labels[0]
    if baseline not in labels:
        parser.error(f"--baseline {baseline!r} is not one of the labels {labels}")
    try:
        results = [load_result(path, label) for path, label in zip(args.results, labels, strict=True)]
        report = build_report(results, baseline)
        if args.capability:
            report["capability"] = load_capability(args.capability, labels, baseline)
    except ReportError as exc:
        print(f"report.py: error: {exc}", file=sys.stderr)
        return 2
    for warning in report["warnings"]:
        logger.warning("%s", warning)
    files = write_report(report, args.output_dir)
    print(render_markdown(report))
    print("wrote " + ", ".join(str(p) for p in files.values()))
    if args.mlflow_experiment:
        try:
            run_id, url = log_to_mlflow(report, files, results, args.mlflow_experiment)
        except ConnectionError as exc:
            print(f"report.py: error: {exc} (or drop --mlflow-experiment); the files are written", file=sys.stderr)
            return 1
        print(f"logged MLflow run {run_id} to experiment {args.mlflow_experiment!r}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
