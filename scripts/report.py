"""Compare GSM8K evaluation results (base, SFT, PPO, GRPO): a table, a chart and a JSON, with 95% intervals.

    python scripts/report.py models/eval/{base,sft,ppo,grpo}.json                 # labels from the file names
    python scripts/report.py a.json b.json --labels base,ppo --baseline base \\
        --output-dir models/eval/report --mlflow-experiment gsm8k-eval           # also one MLflow run

Inputs are `scripts/evaluate.py --output` files (every generation with its score). Outputs in --output-dir, each
written to a temporary file and renamed into place: `report.md` (tables), `report.json` (the same numbers),
`accuracy.png` (bars with 95% error bars; skipped with a warning where matplotlib is not installed).

Statistics, per reward mode (`strict`, `flexible`):
- accuracy with its 95% Wilson score interval (`scripts.evaluate.wilson_interval`, as evaluate.py reports it);
- the difference to the baseline model on the SAME problems, with two paired 95% intervals: a percentile
  bootstrap that resamples problems (seeded; drawn as multinomial counts of fixed/broken/unchanged problems,
  which is exactly the distribution of resampling the problems themselves, so 10k resamples take milliseconds)
  and Newcombe's square-and-add score interval for paired proportions (1998, method 10);
- McNemar's exact test: a two-sided binomial test on the problems only one of the two models solves.

It refuses to compare results that are not on the same problems: different data files, n, prompt versions,
max_new_tokens, or problem sets (matched by `index`, checked by question and ground truth).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as `python scripts/report.py`: make the repo's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rewards.gsm8k import MODES  # noqa: E402
from scripts.lib.stats import Z_95, wilson_interval  # noqa: E402

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
FILES = {"markdown": "report.md", "json": "report.json", "chart": "accuracy.png"}

# Published GSM8K test numbers for context only: other pipelines (prompt, decoding, answer extraction), not ours.
EXTERNAL_REFERENCE = [
    {
        "model": "Qwen2.5-0.5B-Instruct as released",
        "gsm8k_test": 49.6,
        "source": "Qwen2.5 release (Qwen team); verl's baseline table lists 36.4 for the same checkpoint",
    },
    {
        "model": "Qwen2.5-0.5B-Instruct + PPO (verl)",
        "gsm8k_test": 56.7,
        "source": "verl docs/algo/baseline.md (batch 256, 15 epochs, strict `####` scoring)",
    },
    {
        "model": "Qwen2.5-0.5B-Instruct + GRPO-LoRA (verl, rank 32)",
        "gsm8k_test": 54.3,
        "source": "verl docs/algo/baseline.md",
    },
]


class ReportError(ValueError):
    """Inputs that cannot be compared; the message names the files and says what to do."""


@dataclass
class Result:
    """One evaluate.py output, reduced to what the report needs; `correct[mode]` is ordered by `indices`."""

    label: str
    path: Path
    model: str
    data: str
    backend: str
    n: int
    prompt_version: str
    max_new_tokens: int
    created_at: str
    indices: np.ndarray
    problems: dict[int, tuple[str, str]]  # index -> (question, ground_truth)
    correct: dict[str, np.ndarray]


@dataclass
class Paired:
    """Model vs baseline on the same n problems, one reward mode."""

    label: str
    baseline: str
    mode: str
    n: int
    both_correct: int
    fixed: int  # solved by the model, not by the baseline
    broke: int  # solved by the baseline, not by the model
    both_wrong: int
    diff: float
    ci95_bootstrap: tuple[float, float]
    ci95_newcombe: tuple[float, float]
    mcnemar_p: float


def mcnemar_exact_p(fixed: int, broke: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of `fixed` vs `broke` discordant pairs at 1/2.

    >>> round(mcnemar_exact_p(6, 16), 6), mcnemar_exact_p(0, 0), mcnemar_exact_p(5, 5)
    (0.052479, 1.0, 1.0)
    """
    m, k = fixed + broke, min(fixed, broke)
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**m)  # exact big-int arithmetic, one correctly rounded division


def newcombe_paired_interval(
    both_correct: int, fixed: int, broke: int, both_wrong: int, z: float = Z_95
) -> tuple[float, float]:
    """Newcombe's square-and-add (Wilson score) interval for p_model - p_baseline on paired data.

    Newcombe (1998), Statistics in Medicine 17:2635, method 10, with its continuity-adjusted correlation.
    Fagerland, Lydersen & Laake's worked example (Cavo et al. 2012) gives -0.1186 to -0.0046:

    >>> [round(x, 4) for x in newcombe_paired_interval(59, 6, 16, 80)]
    [-0.1186, -0.0046]
    """
    n = both_correct + fixed + broke + both_wrong
    if n == 0:
        return -1.0, 1.0
    model_right, base_right = both_correct + fixed, both_correct + broke
    p1, p2 = model_right / n, base_right / n
    l1, u1 = wilson_interval(model_right, n, z)
    l2, u2 = wilson_interval(base_right, n, z)
    margins = model_right * (n - model_right) * base_right * (n - base_right)
    psi = 0.0
    if margins > 0:
        cross = both_correct * both_wrong - fixed * broke
        if cross > n / 2:
            psi = (cross - n / 2) / math.sqrt(margins)
        elif cross < 0:
            psi = cross / math.sqrt(margins)
    diff = p1 - p2
    lower = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * psi * (p1 - l1) * (u2 - p2)))
    upper = diff + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * psi * (p2 - l2) * (u1 - p1)))
    return max(-1.0, lower), min(1.0, upper)


def paired_bootstrap_interval(
    fixed: int, broke: int, n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> tuple[float, float]:
    """Percentile 95% interval of p_model - p_baseline from resampling the n problems with replacement.

    Only the counts of fixed (+1), broken (-1) and unchanged (0) problems in a resample matter, and those are
    multinomial(n, observed shares): drawing them directly is the same bootstrap at O(resamples) cost.
    """
    if n == 0:
        return -1.0, 1.0
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [fixed / n, broke / n, (n - fixed - broke) / n], size=resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    lower, upper = np.quantile(diffs, [0.025, 0.975])
    return float(lower), float(upper)


def compare(
    model: np.ndarray,
    reference: np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    *,
    label: str = "",
    baseline: str = "",
    mode: str = "",
) -> Paired:
    """Paired statistics of `model` vs `reference`: boolean correctness over the same problems, same order."""
    model, reference = np.asarray(model, dtype=bool), np.asarray(reference, dtype=bool)
    if model.shape != reference.shape:
        raise ValueError(f"paired vectors differ in length: {model.shape} vs {reference.shape}")
    n = int(model.size)
    both = int(np.sum(model & reference))
    fixed = int(np.sum(model & ~reference))
    broke = int(np.sum(~model & reference))
    neither = n - both - fixed - broke
    return Paired(
        label=label,
        baseline=baseline,
        mode=mode,
        n=n,
        both_correct=both,
        fixed=fixed,
        broke=broke,
        both_wrong=neither,
        diff=(fixed - broke) / n if n else 0.0,
        ci95_bootstrap=paired_bootstrap_interval(fixed, broke, n, resamples, seed),
        ci95_newcombe=newcombe_paired_interval(both, fixed, broke, neither),
        mcnemar_p=mcnemar_exact_p(fixed, broke),
    )


def load_result(path: str | Path, label: str) -> Result:
    """Read one evaluate.py output and check it is complete and self-consistent."""
    path = Path(path)
    redo = f"re-create it with `python scripts/evaluate.py --model ... --data ... --output {path}`"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such result file; {redo}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not readable as JSON ({exc}); {redo}") from None
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: expected a JSON object from scripts/evaluate.py; {redo}")
    missing = [k for k in ("model", "data", "n", "accuracy", "samples", "prompt_version") if k not in raw]
    if missing:
        raise ReportError(f"{path}: not an evaluate.py result (missing {', '.join(missing)}); {redo}")
    samples = raw["samples"]
    if not isinstance(samples, list) or len(samples) != raw["n"]:
        count = len(samples) if isinstance(samples, list) else "no"
        raise ReportError(f"{path}: n is {raw['n']} but it holds {count} samples; the file is damaged, {redo}")
    keys = ["index", "question", "ground_truth", *(f"correct_{m}" for m in MODES)]
    problems: dict[int, tuple[str, str]] = {}
    for i, sample in enumerate(samples):
        gone = [k for k in keys if not isinstance(sample, dict) or k not in sample]
        if gone:
            raise ReportError(f"{path}: sample {i} lacks {', '.join(gone)}; {redo}")
        index = int(sample["index"])
        if index in problems:
            raise ReportError(f"{path}: problem index {index} appears twice (samples {i} and another); {redo}")
        problems[index] = (str(sample["question"]), str(sample["ground_truth"]))
    order = sorted(range(len(samples)), key=lambda i: int(samples[i]["index"]))
    correct = {m: np.array([bool(samples[i][f"correct_{m}"]) for i in order], dtype=bool) for m in MODES}
    for mode in MODES:
        stated = (raw["accuracy"] or {}).get(mode)
        counted = float(correct[mode].mean()) if len(samples) else 0.0
        if stated is None or abs(float(stated) - counted) > 1e-9:
            raise ReportError(
                f"{path}: accuracy[{mode}] says {stated} but its samples give {counted:.6f}; "
                f"the file was edited or damaged, {redo}"
            )
    return Result(
        label=label,
        path=path,
        model=str(raw["model"]),
        data=str(raw["data"]),
        backend=str(raw.get("backend", "")),
        n=int(raw["n"]),
        prompt_version=str(raw["prompt_version"]),
        max_new_tokens=int(raw.get("max_new_tokens", 0)),
        created_at=str(raw.get("created_at", "")),
        indices=np.array([int(samples[i]["index"]) for i in order], dtype=np.int64),
        problems=problems,
        correct=correct,
    )


def check_comparable(results: list[Result]) -> list[str]:
    """Raise ReportError unless every result covers the same problems under the same settings; return warnings."""
    ref = results[0]
    fix = "evaluate them the same way (`FORCE=1 bash scripts/evaluate_all.sh` re-runs every model)"
    for other in results[1:]:
        pair = f"{other.path} ({other.label}) and {ref.path} ({ref.label})"
        if Path(other.data).name != Path(ref.data).name:
            raise ReportError(
                f"{pair} were evaluated on different data files ({other.data} vs {ref.data}); {fix} on one file"
            )
        for field, what in (("n", "problem counts"), ("prompt_version", "prompt versions")):
            if getattr(other, field) != getattr(ref, field):
                raise ReportError(
                    f"{pair} have different {what} ({getattr(other, field)} vs {getattr(ref, field)}); {fix}"
                )
        if other.max_new_tokens != ref.max_new_tokens:
            raise ReportError(
                f"{pair} used different max_new_tokens ({other.max_new_tokens} vs {ref.max_new_tokens}); {fix}"
            )
        only_other = sorted(set(other.problems) - set(ref.problems))
        only_ref = sorted(set(ref.problems) - set(other.problems))
        if only_other or only_ref:
            raise ReportError(
                f"{pair} cover different problems: {len(only_other)} indices only in {other.path.name} "
                f"(e.g. {only_other[:5]}), {len(only_ref)} only in {ref.path.name} (e.g. {only_ref[:5]}); {fix}"
            )
        changed = [i for i in sorted(ref.problems) if ref.problems[i] != other.problems[i]]
        if changed:
            raise ReportError(
                f"{pair} disagree on the question or ground truth of {len(changed)} problems (e.g. index "
                f"{changed[0]}): they come from different data files; {fix} on one file"
            )
    warnings = []
    backends = {r.backend for r in results}
    if len(backends) > 1:
        warnings.append(
            "results come from different backends ("
            + ", ".join(f"{r.label}: {r.backend}" for r in results)
            + "); greedy decoding in vLLM and transformers can differ on a few problems"
        )
    return warnings


def build_report(
    results: list[Result], baseline: str, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> dict[str, Any]:
    """All numbers of the report as one JSON-ready dict (after `check_comparable`)."""
    warnings = check_comparable(results)
    base = next(r for r in results if r.label == baseline)
    models = []
    for r in results:
        correct = {m: int(r.correct[m].sum()) for m in MODES}
        models.append(
            {
                "label": r.label,
                "model": r.model,
                "backend": r.backend,
                "result_file": str(r.path),
                "evaluated_at": r.created_at,
                "correct": correct,
                "accuracy": {m: correct[m] / r.n if r.n else 0.0 for m in MODES},
                "ci95": {m: list(wilson_interval(correct[m], r.n)) for m in MODES},
            }
        )
    comparisons = []
    for r in results:
        if r is base:
            continue
        for mode in MODES:
            paired = compare(
                r.correct[mode], base.correct[mode], resamples, seed, label=r.label, baseline=baseline, mode=mode
            )
            comparisons.append(
                {
                    **{k: v for k, v in vars(paired).items() if not k.startswith("ci95")},
                    "ci95_bootstrap": list(paired.ci95_bootstrap),
                    "ci95_newcombe": list(paired.ci95_newcombe),
                }
            )
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_file": Path(base.data).name,
        "data": {r.label: r.data for r in results},
        "n": base.n,
        "prompt_version": base.prompt_version,
        "max_new_tokens": base.max_new_tokens,
        "decoding": "greedy",
        "baseline": baseline,
        "modes": list(MODES),
        "confidence": 0.95,
        "bootstrap": {"resamples": resamples, "seed": seed, "interval": "percentile"},
        "models": models,
        "comparisons": comparisons,
        "warnings": warnings,
        "external_reference": EXTERNAL_REFERENCE,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"[{fmt.format(100 * lo)}, {fmt.format(100 * hi)}]"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _display_path(path: str) -> str:
    """A model path relative to the repo when it lies inside it (host or container spelling)."""
    for root in (str(REPO_ROOT), "/workspace"):
        if path.startswith(root + "/"):
            return path[len(root) + 1 :]
    return path


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report: settings, accuracy table, paired differences, how to read it, anchors."""
    n, base = report["n"], report["baseline"]
    lines = [
        "# GSM8K evaluation report",
        "",
        f"Data: `{report['data_file']}`, n = {n} problems, prompt `{report['prompt_version']}`, greedy decoding, "
        f"at most {report['max_new_tokens']} new tokens. Created {report['created_at']} by `scripts/report.py`.",
        "",
        "## Accuracy",
        "",
        "| model | checkpoint | backend | n | strict [95% CI] | flexible [95% CI] |",
        "| --- | --- | --- | ---: | --- | --- |",
    ]
    for m in report["models"]:
        cells = [f"{_pct(m['accuracy'][mode])} {_ci(*m['ci95'][mode])}" for mode in ("strict", "flexible")]
        lines.append(
            f"| {m['label']} | `{_display_path(m['model'])}` | {m['backend']} | {n} | {cells[0]} | {cells[1]} |"
        )
    if report["comparisons"]:
        lines += [
            "",
            f"## Difference vs {base} (paired, same {n} problems)",
            "",
            "| model | mode | difference | 95% CI (paired bootstrap) | 95% CI (Newcombe) | fixed / broken "
            "| McNemar exact p |",
            "| --- | --- | ---: | --- | --- | --- | ---: |",
        ]
        for c in report["comparisons"]:
            boot, newcombe = _ci(*c["ci95_bootstrap"], signed=True), _ci(*c["ci95_newcombe"], signed=True)
            lines.append(
                f"| {c['label']} | {c['mode']} | {100 * c['diff']:+.1f} pts | {boot} | {newcombe} "
                f"| {c['fixed']} / {c['broke']} | {_p(c['mcnemar_p'])} |"
            )
    boot = report["bootstrap"]
    lines += [
        "",
        "How to read this:",
        "",
        "- **Accuracy [95% CI]**: share of problems answered correctly, with the Wilson score interval for that "
        f"model alone (binomial over {n} problems). `strict` reads the number after the last `####` (the format "
        'the prompt asks for and the RL reward pays for); `flexible` also accepts `\\boxed{}`, "the answer is" and '
        "the last number.",
        f"- **Difference**: accuracy minus {base}'s, in percentage points, on the same problems. Pairing removes "
        "the problem-difficulty noise two separate intervals carry, so it is usually much tighter than comparing "
        f"the accuracy intervals by eye. The bootstrap resamples problems ({boot['resamples']} resamples, seed "
        f"{boot['seed']}); Newcombe's is a closed-form score interval. An interval that excludes 0 means a "
        "difference at the 5% level. With few discordant problems (under about 10) the bootstrap interval is "
        "too narrow (none: [0, 0]); read Newcombe's there.",
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
    lines += [
        "",
        "## External reference numbers (published elsewhere, not produced by this repo)",
        "",
        "For context only: other pipelines, prompts, decoding and answer extraction; compare trends, not "
        "decimals. The closest of our columns is `strict`.",
        "",
        "| model | GSM8K test | source |",
        "| --- | ---: | --- |",
    ]
    for ref in report["external_reference"]:
        lines.append(f"| {ref['model']} | {ref['gsm8k_test']:.1f} | {ref['source']} |")
    return "\n".join(lines) + "\n"


def render_chart(report: dict[str, Any]) -> bytes | None:
    """PNG: accuracy per model and mode with 95% Wilson error bars; beside it, the paired differences to the
    baseline with their 95% bootstrap intervals. None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = {"strict": "#1f77b4", "flexible": "#ff7f0e"}
    models, comparisons = report["models"], report["comparisons"]
    panels = 2 if comparisons else 1
    fig, axes = plt.subplots(1, panels, figsize=((2.5 + 1.0 * len(models)) * panels, 4.4), dpi=120, squeeze=False)
    ax = axes[0][0]
    x = np.arange(len(models))
    width = 0.38
    for k, mode in enumerate(MODES):
        acc = np.array([100 * m["accuracy"][mode] for m in models])
        lo = np.array([100 * m["ci95"][mode][0] for m in models])
        hi = np.array([100 * m["ci95"][mode][1] for m in models])
        pos = x + (k - 0.5) * width
        ax.bar(pos, acc, width, yerr=[acc - lo, hi - acc], capsize=4, color=colors[mode], label=mode)
        for px, value, top in zip(pos, acc, hi, strict=True):
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
        for k, mode in enumerate(MODES):
            rows = [next(c for c in comparisons if c["label"] == label and c["mode"] == mode) for label in others]
            diff = np.array([100 * c["diff"] for c in rows])
            lo = np.array([100 * c["ci95_bootstrap"][0] for c in rows])
            hi = np.array([100 * c["ci95_bootstrap"][1] for c in rows])
            pos = np.arange(len(others)) + (k - 0.5) * 0.3
            ax.errorbar(pos, diff, yerr=[diff - lo, hi - diff], fmt="o", capsize=4, color=colors[mode], label=mode)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(others)), others)
        ax.set_xlim(-0.6, len(others) - 0.4)
        ax.set_ylabel(f"accuracy - {report['baseline']} (points)")
        ax.set_title(f"paired difference vs {report['baseline']}, 95% bootstrap CI", fontsize=10)
        ax.legend(loc="best", frameon=False)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def atomic_write(path: Path, payload: bytes) -> None:
    """Write `payload` to a temporary file beside `path`, then rename; readable and writable by every container UID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        try:
            tmp.write(payload)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.chmod(tmp.name, 0o666)
    os.replace(tmp.name, path)


def write_report(report: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.json and accuracy.png (when matplotlib is there); return what was written."""
    output_dir = Path(output_dir)
    written = {}
    chart = render_chart(report)
    if chart is None:
        logger.warning(
            "matplotlib is not installed here: no %s (the table and JSON are complete); draw it with "
            "`docker compose exec jupyter python /workspace/scripts/report.py ...` or `pip install matplotlib`",
            FILES["chart"],
        )
    else:
        atomic_write(output_dir / FILES["chart"], chart)
        written["chart"] = output_dir / FILES["chart"]
    atomic_write(output_dir / FILES["json"], (json.dumps(report, indent=2) + "\n").encode())
    written["json"] = output_dir / FILES["json"]
    atomic_write(output_dir / FILES["markdown"], render_markdown(report).encode())
    written["markdown"] = output_dir / FILES["markdown"]
    return written


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Flat MLflow metrics, e.g. `ppo/accuracy_strict`, `ppo/diff_vs_base_strict`, `ppo/mcnemar_p_strict`."""
    out: dict[str, float] = {}
    for m in report["models"]:
        for mode in MODES:
            out[f"{m['label']}/accuracy_{mode}"] = m["accuracy"][mode]
            out[f"{m['label']}/ci95_low_{mode}"], out[f"{m['label']}/ci95_high_{mode}"] = m["ci95"][mode]
    for c in report["comparisons"]:
        key, mode = f"{c['label']}/diff_vs_{c['baseline']}", c["mode"]
        out[f"{key}_{mode}"] = c["diff"]
        out[f"{key}_ci95_low_{mode}"], out[f"{key}_ci95_high_{mode}"] = c["ci95_bootstrap"]
        out[f"{c['label']}/mcnemar_p_{mode}"] = c["mcnemar_p"]
    return out


def _check_reachable(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
                if response.status == 200:
                    return
        except OSError as exc:
            raise ReportError(
                f"MLflow at {uri} (MLFLOW_TRACKING_URI) is unreachable ({exc}); the report files are written, "
                "start the server or drop --mlflow-experiment"
            ) from None


def log_to_mlflow(
    report: dict[str, Any], files: dict[str, Path], results: list[Result], experiment: str
) -> tuple[str, str]:
    """Log one run: params, metrics, the report files and the input result files; the table as the run's note."""
    _check_reachable(os.environ.get("MLFLOW_TRACKING_URI", ""))  # before importing mlflow: fail in seconds
    import mlflow

    uri = mlflow.get_tracking_uri()
    mlflow.set_experiment(experiment)
    run_name = "report-" + "-".join(m["label"] for m in report["models"]) + f"-{Path(report['data_file']).stem}"
    with mlflow.start_run(run_name=run_name) as run:
        params = {
            "data_file": report["data_file"],
            "n": report["n"],
            "prompt_version": report["prompt_version"],
            "max_new_tokens": report["max_new_tokens"],
            "baseline": report["baseline"],
            "labels": ",".join(m["label"] for m in report["models"]),
            "bootstrap_resamples": report["bootstrap"]["resamples"],
            "bootstrap_seed": report["bootstrap"]["seed"],
        }
        params.update({f"model_{m['label']}": m["model"] for m in report["models"]})
        mlflow.log_params(params)
        mlflow.set_tags({"stage": "report", "mlflow.note.content": render_markdown(report)})
        mlflow.log_metrics(report_metrics(report))
        for path in files.values():
            mlflow.log_artifact(str(path), artifact_path="report")
        for r in results:
            mlflow.log_artifact(str(r.path), artifact_path="results")
    return run.info.run_id, uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="JSON files written by scripts/evaluate.py --output")
    parser.add_argument("--labels", help="comma-separated names, one per file (default: the file names' stems)")
    parser.add_argument("--baseline", help="label the others are compared with (default: the first)")
    parser.add_argument("--output-dir", default=str(REPO_ROOT / "models" / "eval" / "report"))
    parser.add_argument("--mlflow-experiment", help="also log one run to MLflow (MLFLOW_TRACKING_URI) here")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="paired bootstrap resamples")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="paired bootstrap seed")
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
    if args.resamples < 100:
        parser.error("--resamples must be >= 100")
    try:
        results = [load_result(path, label) for path, label in zip(args.results, labels, strict=True)]
        report = build_report(results, baseline, args.resamples, args.seed)
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
            run_id, uri = log_to_mlflow(report, files, results, args.mlflow_experiment)
        except ReportError as exc:
            print(f"report.py: error: {exc}", file=sys.stderr)
            return 1
        print(f"logged MLflow run {run_id} to experiment {args.mlflow_experiment!r} at {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
