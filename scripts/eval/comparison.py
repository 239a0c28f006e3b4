"""The numbers behind scripts/eval/report.py: read evaluation results, refuse incomparable ones (ReportError), and
compare each model with the baseline on the same problems (statistics: scripts/eval/stats.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from scripts.eval.evaluation import EvalResult
from scripts.eval.stats import mcnemar_exact_p, newcombe_paired_interval, wilson_interval

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
class Labelled:
    """An evaluate.py output read back, under its report label; `correct[reward]` in problem-index order."""

    label: str
    path: Path
    result: EvalResult
    problems: dict[int, tuple[str, str]]  # index -> (question, ground_truth)
    correct: dict[str, np.ndarray]


@dataclass
class Paired:
    """Model vs baseline on the same n problems, under one reward."""

    label: str
    baseline: str
    reward: str
    n: int
    both_correct: int
    fixed: int  # solved by the model, not by the baseline
    broke: int  # solved by the baseline, not by the model
    both_wrong: int
    diff: float
    ci95_newcombe: tuple[float, float]
    mcnemar_p: float


def compare(
    model: np.ndarray, reference: np.ndarray, *, label: str = "", baseline: str = "", reward: str = ""
) -> Paired:
    """Paired statistics of `model` vs `reference`: boolean correctness over the same problems, same order."""
    model, reference = np.asarray(model, dtype=bool), np.asarray(reference, dtype=bool)
    if model.shape != reference.shape:
        raise ValueError(f"paired vectors differ in length: {model.shape} vs {reference.shape}")
    n, both = int(model.size), int(np.sum(model & reference))
    fixed, broke = int(np.sum(model & ~reference)), int(np.sum(~model & reference))
    neither = n - both - fixed - broke
    diff = (fixed - broke) / n if n else 0.0
    interval = newcombe_paired_interval(both, fixed, broke, neither)
    p_value = mcnemar_exact_p(fixed, broke)
    return Paired(label, baseline, reward, n, both, fixed, broke, neither, diff, interval, p_value)


def load_result(path: str | Path, label: str) -> Labelled:
    """Read one evaluate.py output and check it is complete and self-consistent."""
    path = Path(path)
    redo = f"re-create it with `python -m scripts.eval.evaluate --model ... --data ... --output {path}`"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such result file; {redo}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not readable as JSON ({exc}); {redo}") from None
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: expected a JSON object from scripts/eval/evaluate.py; {redo}")
    missing = [f.name for f in fields(EvalResult) if f.name not in raw]
    if missing:
        raise ReportError(f"{path}: not an evaluate.py result (missing {', '.join(missing)}); {redo}")
    samples = raw["samples"]
    if not isinstance(samples, list) or len(samples) != raw["n"]:
        count = len(samples) if isinstance(samples, list) else "no"
        raise ReportError(f"{path}: n is {raw['n']} but it holds {count} samples; the file is damaged, {redo}")
    if not isinstance(raw["accuracy"], dict) or not raw["accuracy"]:
        raise ReportError(f"{path}: its accuracy names no reward; the file is damaged, {redo}")
    rewards = list(raw["accuracy"])  # the rewards it was measured with (rewards.REWARDS when it was made)
    keys = ["index", "question", "ground_truth", *(f"correct_{name}" for name in rewards)]
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
    correct = {name: np.array([bool(samples[i][f"correct_{name}"]) for i in order], dtype=bool) for name in rewards}
    for name in rewards:
        stated = raw["accuracy"][name]
        counted = float(correct[name].mean()) if len(samples) else 0.0
        if stated is None or abs(float(stated) - counted) > 1e-9:
            raise ReportError(
                f"{path}: accuracy[{name}] says {stated} but its samples give {counted:.6f}; "
                f"the file was edited or damaged, {redo}"
            )
    result = EvalResult(**{f.name: raw[f.name] for f in fields(EvalResult)})
    return Labelled(label, path, result, problems, correct)


def check_comparable(results: list[Labelled]) -> list[str]:
    """Raise ReportError unless every result covers the same problems under the same settings; return warnings."""
    ref = results[0]
    fix = "evaluate them the same way (`FORCE=1 python -m scripts.eval.run_all` re-runs every model)"
    for other in results[1:]:
        pair = f"{other.path} ({other.label}) and {ref.path} ({ref.label})"
        mine, theirs = other.result, ref.result
        if Path(mine.data).name != Path(theirs.data).name:
            raise ReportError(
                f"{pair} were evaluated on different data files ({mine.data} vs {theirs.data}); {fix} on one file"
            )
        if list(mine.accuracy) != list(theirs.accuracy):
            raise ReportError(
                f"{pair} were scored with different rewards ({', '.join(mine.accuracy)} vs "
                f"{', '.join(theirs.accuracy)}: the registry in rewards/__init__.py changed in between); {fix}"
            )
        for field, what in (
            ("n", "have different problem counts"),
            ("prompt_version", "have different prompt versions"),
            ("max_new_tokens", "used different max_new_tokens"),
        ):
            if getattr(mine, field) != getattr(theirs, field):
                raise ReportError(f"{pair} {what} ({getattr(mine, field)} vs {getattr(theirs, field)}); {fix}")
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
    if len({r.result.backend for r in results}) > 1:
        warnings.append(
            "results come from different backends ("
            + ", ".join(f"{r.label}: {r.result.backend}" for r in results)
            + "); greedy decoding in vLLM and transformers can differ on a few problems"
        )
    return warnings


def build_report(results: list[Labelled], baseline: str) -> dict[str, Any]:
    """All numbers of the report as one JSON-ready dict (after `check_comparable`)."""
    warnings = check_comparable(results)
    base = next(r for r in results if r.label == baseline)
    rewards = list(base.result.accuracy)
    models = []
    for r in results:
        correct = {name: int(r.correct[name].sum()) for name in rewards}
        models.append(
            {
                "label": r.label,
                "model": r.result.model,
                "backend": r.result.backend,
                "result_file": str(r.path),
                "evaluated_at": r.result.created_at,
                "correct": correct,
                "accuracy": {name: correct[name] / r.result.n if r.result.n else 0.0 for name in rewards},
                "ci95": {name: list(wilson_interval(correct[name], r.result.n)) for name in rewards},
            }
        )
    comparisons = []
    for r in results:
        if r is base:
            continue
        for name in rewards:
            paired = compare(r.correct[name], base.correct[name], label=r.label, baseline=baseline, reward=name)
            comparisons.append({**vars(paired), "ci95_newcombe": list(paired.ci95_newcombe)})
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_file": Path(base.result.data).name,
        "data": {r.label: r.result.data for r in results},
        "n": base.result.n,
        "prompt_version": base.result.prompt_version,
        "max_new_tokens": base.result.max_new_tokens,
        "decoding": "greedy",
        "baseline": baseline,
        "rewards": rewards,
        "confidence": 0.95,
        "models": models,
        "comparisons": comparisons,
        "warnings": warnings,
        "external_reference": EXTERNAL_REFERENCE,
    }
