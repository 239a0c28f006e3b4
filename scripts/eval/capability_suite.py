"""Capability regression check: general benchmarks (scripts/eval/capability.yaml) through lm-evaluation-harness.

`run_suite` scores one model on a suite; `compare` puts every model next to `base` and flags a change beyond
1.96 standard errors of the difference, sqrt(se_model^2 + se_base^2) (unpaired, so generous: a flag is real).
A suite task is a harness task name, or `file:` a harness YAML task whose relative `data_files` sit beside it.

    >>> rows = compare({"base": {"arc": {"value": 0.40, "stderr": 0.02}},
    ...                 "grpo": {"arc": {"value": 0.30, "stderr": 0.02}}})
    >>> rows[1]["delta"], rows[1]["flag"]
    (-0.1, 'drop')
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import yaml

from scripts.lib import gpus, vllm_cpu
from scripts.lib.paths import REPO_ROOT, under_repo

logger = logging.getLogger(__name__)

DEFAULT_SUITE = REPO_ROOT / "scripts" / "eval" / "capability.yaml"
Z95 = 1.96


def load_suite(path: str | Path = DEFAULT_SUITE) -> dict[str, dict[str, Any]]:
    """task name -> settings (num_fewshot, limit, metric, optional file) from a suite YAML."""
    path = under_repo(path)
    try:
        suite = yaml.safe_load(path.read_text(encoding="utf-8"))
        tasks = suite["tasks"]
        if not isinstance(tasks, dict) or not tasks:
            raise TypeError
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the capability suite: {exc}") from exc
    except (KeyError, TypeError):
        raise ValueError(f"{path}: expected a mapping `tasks: {{name: {{metric: ..., ...}}}}`") from None
    for name, settings in tasks.items():
        if not isinstance(settings, dict) or "metric" not in settings:
            raise ValueError(f"{path}: task {name!r} needs a `metric` (e.g. acc or acc_norm)")
        unknown = set(settings) - {"metric", "num_fewshot", "limit", "file"}
        if unknown:
            raise ValueError(f"{path}: task {name!r} has unknown key(s) {sorted(unknown)}")
    return tasks


def _task_spec(name: str, settings: dict[str, Any]) -> str | dict[str, Any]:
    """What the harness is given for one task: its registered name, or a local YAML task as a config dict."""
    if "file" not in settings:
        return name
    file = under_repo(settings["file"])
    config = yaml.safe_load(file.read_text(encoding="utf-8"))
    data_files = config.get("dataset_kwargs", {}).get("data_files", {})
    for split, rel in data_files.items():  # relative to the task file, not to the working directory
        data_files[split] = str((file.parent / rel).resolve())
    return config


def prefetch_suite(suite: dict[str, dict[str, Any]]) -> list[str]:
    """Download every task's data into the Hugging Face cache (the setup profile, for offline servers)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict([_task_spec(name, settings) for name, settings in suite.items()], TaskManager())
    return sorted(tasks)


def run_suite(
    model: str,
    suite: dict[str, dict[str, Any]],
    backend: str = "hf",
    batch_size: int = 8,
    gpu_memory_utilization: float = 0.85,
) -> dict:
    """Score `model` on every task of `suite`; {task: {metric, value, stderr, n, num_fewshot}}.

    The model is loaded once (vLLM wherever it runs: a GPU, or a CPU with `vllm-cpu`; else transformers) and
    reused for every task.
    """
    import lm_eval
    import torch
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend == "vllm" and device == "cuda":  # the first visible GPU: its share must be free (else who holds it)
        gpus.require_free(gpus.visible()[:1], gpu_memory_utilization, "--gpu-memory-utilization")
        share = f"gpu_memory_utilization={gpu_memory_utilization}"
        model_args = f"pretrained={model},dtype=bfloat16,{share},max_model_len=4096"
    elif backend == "vllm":  # vllm-cpu: as scripts/eval/evaluation.py starts it on CPU
        vllm_cpu.alias_version()  # lm_eval/models/vllm_causallms.py reads version("vllm") on import
        # The model's own context length (no 4096 cap: the tiny test model has 2048).
        kv_cache = f"kv_cache_memory_bytes={vllm_cpu.KV_CACHE_BYTES}"
        model_args = f"pretrained={model},dtype=float32,enforce_eager=True,{kv_cache}"
    elif backend == "hf":
        model_args = f"pretrained={model},dtype={'bfloat16' if device == 'cuda' else 'float32'}"
    else:
        raise ValueError(f"unknown capability backend {backend!r}: use vllm or hf")
    lm = get_model(backend).create_from_arg_string(model_args, {"batch_size": batch_size, "device": device})
    manager = TaskManager()
    results: dict[str, dict[str, Any]] = {}
    for name, settings in suite.items():
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[_task_spec(name, settings)],
            num_fewshot=settings.get("num_fewshot"),
            limit=settings.get("limit"),
            task_manager=manager,
            log_samples=False,
            bootstrap_iters=100,  # only the closed-form stderr of a mean is used: no resampling
        )
        metric = settings["metric"]
        scores = out["results"][name]
        key = f"{metric},none"
        if key not in scores:
            raise ValueError(f"task {name}: metric {metric!r} not reported; it has {sorted(scores)}")
        results[name] = {
            "metric": metric,
            "value": float(scores[key]),
            "stderr": float(scores.get(f"{metric}_stderr,none") or 0.0),
            "n": out.get("n-samples", {}).get(name, {}).get("effective"),
            "num_fewshot": settings.get("num_fewshot", 0),
        }
        logger.info("%s: %s %s = %.4f +- %.4f", model, name, metric, results[name]["value"], results[name]["stderr"])
    return results


def compare(by_model: dict[str, dict[str, dict[str, Any]]], baseline: str = "base") -> list[dict[str, Any]]:
    """One row per model and task: value, stderr, change vs `baseline`, and `flag` ('drop', 'gain' or '')."""
    base = by_model.get(baseline, {})
    rows = []
    for model, tasks in by_model.items():
        for task, score in tasks.items():
            row = {"model": model, "task": task, "metric": score.get("metric", ""), "value": score["value"]}
            row |= {"stderr": score["stderr"], "delta": None, "flag": ""}
            if model != baseline and task in base:
                delta = round(score["value"] - base[task]["value"], 10)
                noise = Z95 * math.hypot(score["stderr"], base[task]["stderr"])
                row["delta"] = delta
                row["flag"] = "drop" if delta < -noise else "gain" if delta > noise else ""
            rows.append(row)
    return rows
