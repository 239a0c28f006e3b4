"""Evaluate base, SFT, PPO and GRPO on the GSM8K test split, check capabilities, write the report (docs/evaluation.md).

    docker compose exec verl python -m scripts.eval.run_all          # vLLM on a GPU, all 1319 test problems
    LIMIT=50 BACKEND=hf python -m scripts.eval.run_all              # quick look on a laptop (transformers, CPU)
    FORCE=1 python -m scripts.eval.run_all --max-new-tokens 1024    # other arguments go to every evaluate call

Environment knobs: docs/evaluation.md. Models, results and the report live under MODELS_DIR.
Offline (HF_HUB_OFFLINE=1, or the hub does not answer) every step reads the Hugging Face cache only; a model
or capability check that cannot run is reported, naming the setting to change, and the others still are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from data import readiness
from rewards import REWARDS
from scripts.eval.capability_suite import DEFAULT_SUITE, load_suite
from scripts.lib import model_presets
from scripts.lib.checkpoints import check_model, newest_experiment, read_sft_manifest, rl_hf_model
from scripts.lib.mlflow_health import check_mlflow
from scripts.lib.paths import DATA_DIR, MODELS_DIR, algorithms, parse_algos, same_path, sft_manifest


class Skip(Exception):
    """No model to evaluate for a label; the message says why."""


OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_unreachable(env: dict[str, str], timeout: float = 5.0) -> str | None:
    """Why the Hugging Face hub (HF_ENDPOINT) does not answer, or None when it does (any HTTP status)."""
    endpoint = env.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, a malformed endpoint
        return f"{endpoint}: {getattr(exc, 'reason', exc)}"
    return None


def resolve_model(label: str, env: dict[str, str], models_dir: Path) -> str:
    """The model to evaluate for `label` (a hub id or an absolute folder), or Skip with the reason."""
    if label == "base":  # the model MODEL (a preset) and BASE_MODEL choose, as RL does (scripts/lib/model_presets)
        try:
            model = model_presets.choose(env.get("MODEL"), env.get("BASE_MODEL"))[1]
        except model_presets.PresetError as exc:
            raise Skip(str(exc)) from None
        return os.path.abspath(model) if os.path.isdir(model) else model
    if label == "sft":
        if env.get("SFT_MODEL"):
            path = Path(env["SFT_MODEL"])
        else:
            manifest_file = sft_manifest(models_dir)
            try:
                manifest = read_sft_manifest(manifest_file)
            except ValueError as exc:
                raise Skip(f"{exc}; rerun notebooks/sft_training.ipynb or set SFT_MODEL") from None
            if manifest is None:
                raise Skip(f"no SFT manifest at {manifest_file}; run notebooks/sft_training.ipynb or set SFT_MODEL")
            path = manifest["path"]
        if not (path / "config.json").is_file():
            raise Skip(f"no model at {path} (no config.json)")
        return os.path.abspath(path)
    if label not in algorithms():
        raise Skip(f"unknown label (MODELS may hold base, sft and the algorithms of verl_configs/: {algorithms()})")
    upper, rl_dir = label.upper(), models_dir / "rl"
    if env.get(f"{upper}_MODEL"):
        model = env[f"{upper}_MODEL"]
        return os.path.abspath(model) if os.path.isdir(model) else model
    name = env.get(f"{upper}_EXPERIMENT", "")
    if name:
        experiment = Path(name) if "/" in name else rl_dir / name
        if not experiment.is_dir():
            raise Skip(f"{upper}_EXPERIMENT: no folder {experiment}")
    else:
        experiment, found = newest_experiment(rl_dir, label)
        if experiment is None:
            train = f"train with `bash scripts/run_rl.sh {label}` or set {upper}_EXPERIMENT"
            raise Skip(f"no {rl_dir}/{label}-* experiment; {train}")
        if len(found) > 1:
            print(
                f"{label}: {len(found)} experiments in {rl_dir} ({' '.join(p.name for p in found)}); using the "
                f"newest, {experiment.name} (set {upper}_EXPERIMENT to pick another)",
                file=sys.stderr,
            )
    try:
        return os.path.abspath(rl_hf_model(experiment))
    except ValueError as exc:
        raise Skip(str(exc)) from None


def stale_reason(result_file: Path, model: str, data: Path, limit: str) -> str | None:
    """Why `result_file` is not an evaluation of `model` on `data` with LIMIT `limit`; None when it is."""
    import pyarrow.parquet as pq

    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{result_file} is unreadable ({exc})"
    rows = pq.ParquetFile(data).metadata.num_rows
    expected = min(rows, int(limit)) if limit else rows
    if not same_path(result.get("model"), model):
        return f"it was made from {result.get('model')}, not {model}"
    if not same_path(result.get("data"), str(data)):
        return f"it was made on {result.get('data')}, not {data}"
    if result.get("n") != expected:
        return f"it covers {result.get('n')} problems, not {expected}"
    if list(result.get("accuracy") or {}) != list(REWARDS):
        return (
            f"it was scored with {', '.join(result.get('accuracy') or {}) or 'no rewards'}, not {', '.join(REWARDS)}"
        )
    return None


def run(module: str, *args: str) -> int:
    """`python -m module args` with this interpreter, in its own process (vLLM frees the GPU when it exits)."""
    sys.stdout.flush()
    return subprocess.run([sys.executable, "-m", module, *args]).returncode


def check_capability(
    label: str, model: str, suite_file: str, suite: dict, eval_dir: Path, force: bool, backend: str
) -> bool:
    """Run scripts/eval/capability.py for one model unless its result is current; False when it failed."""
    out = eval_dir / f"{label}.capability.json"
    try:
        previous = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = {}
    if not force and same_path(previous.get("model"), model) and previous.get("suite") == suite:
        print(f"== {label}: capability check {out} is up to date")
        return True
    print(f"== {label}: capability check of {model} ({', '.join(suite)})")
    code = run(
        "scripts.eval.capability", "--model", model, "--suite", suite_file, "--output", str(out), "--backend", backend
    )
    if code != 0:
        print(
            f"error: the capability check of {label} ({model}) failed with exit code {code} (see above); offline, "
            f"its benchmarks must be in the Hugging Face cache (docker compose --profile setup run --rm setup). "
            "CAPABILITY=0 skips the check, CAPABILITY_SUITE picks another suite",
            file=sys.stderr,
        )
    return code == 0


def main(argv: list[str] | None = None) -> int:
    extra = sys.argv[1:] if argv is None else argv  # passed to every evaluate.py call
    if extra[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    env = dict(os.environ)
    try:  # the labels to evaluate: MODELS, else base, sft and ALGOS (default ppo grpo)
        labels = env.get("MODELS", "").split() or ["base", "sft", *parse_algos(env.get("ALGOS", ""))]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if env.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
        if why := hub_unreachable(env):  # children read the cache at once instead of retrying the hub for minutes
            print(f"the Hugging Face hub does not answer ({why}): working offline, from the cache (HF_HUB_OFFLINE=1)")
            env.update(dict.fromkeys(OFFLINE, "1"))
            os.environ.update(dict.fromkeys(OFFLINE, "1"))  # first thing: huggingface_hub reads it on import
    tracking = bool(env.get("MLFLOW_TRACKING_URI"))
    if tracking:  # fail now, not after hours of evaluation (ALLOW_NO_TRACKING=1: local)
        try:
            check_mlflow()
        except ConnectionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    models_dir = Path(env.get("MODELS_DIR") or MODELS_DIR)
    data_dir = Path(env.get("DATA_DIR") or DATA_DIR)
    eval_dir = models_dir / "eval"
    backend, limit, force = env.get("BACKEND") or "auto", env.get("LIMIT", ""), env.get("FORCE") == "1"
    suite_file = env.get("CAPABILITY_SUITE") or str(DEFAULT_SUITE)
    try:
        suite = load_suite(suite_file) if env.get("CAPABILITY", "1") != "0" else None
    except ValueError as exc:
        print(f"error: {exc} (CAPABILITY_SUITE; CAPABILITY=0 skips the capability check)", file=sys.stderr)
        return 2

    data = data_dir / "test.parquet"
    if not data.is_file():
        print(f"no {data}: preparing GSM8K into {data_dir} first")
        source = ["--source", env["GSM8K_SOURCE"]] if env.get("GSM8K_SOURCE") else []
        if run("data.prepare_gsm8k", "--output-dir", str(data_dir), *source) != 0:
            print(f"error: data prep could not prepare {data_dir} (see above)", file=sys.stderr)
            return 1
    try:
        readiness.check_data(data_dir, readiness.EVAL_FILES)
    except readiness.DataNotReady as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = Path(os.path.abspath(data))

    eval_dir.mkdir(parents=True, exist_ok=True)
    reported: dict[str, str | None] = {}  # label -> model (None: an earlier result, no model to check now)
    skipped: list[str] = []
    failed: list[str] = []
    for label in labels:
        out = eval_dir / f"{label}.json"
        try:
            model = resolve_model(label, env, models_dir)
            try:
                check_model(model)  # a hub id while offline must be in the cache
            except FileNotFoundError as exc:
                setting = f"{label.upper()}_MODEL"
                raise Skip(f"{setting}: {exc}; or leave {label} out with MODELS") from None
        except Skip as why:
            if out.is_file():
                print(f"== {label}: {why}; reporting the existing {out}")
                reported[label] = None
            else:
                print(f"== {label}: skipped: {why}")
                skipped.append(label)
            continue
        if out.is_file() and not force:
            reason = stale_reason(out, model, data, limit)
            if reason is None:
                print(f"== {label}: {out} is up to date for {model} (FORCE=1 re-evaluates)")
                reported[label] = model
                continue
            print(f"== {label}: re-evaluating, {out} is stale: {reason}")
        print(f"== {label}: evaluating {model} on {data}{f' (first {limit})' if limit else ''} with backend {backend}")
        args = ["--model", model, "--data", str(data), "--backend", backend, "--output", str(out)]
        started = time.monotonic()
        code = run("scripts.eval.evaluate", *args, *(["--limit", limit] if limit else []), *extra)
        if code != 0:
            print(f"error: evaluating {label} ({model}) failed with exit code {code} (see above)", file=sys.stderr)
            failed.append(label)
            continue
        print(f"== {label}: done in {time.monotonic() - started:.0f} s -> {out}")
        reported[label] = model

    if suite is not None:
        checked = [(label, model) for label, model in reported.items() if model is not None]
        for i, (label, model) in enumerate(checked):
            if not check_capability(label, model, suite_file, suite, eval_dir, force, backend):
                failed.append(f"capability check ({label})")
                if rest := " ".join(label for label, _ in checked[i + 1 :]):  # the same suite would fail again
                    print(f"== capability check not run for {rest}: it failed for {label} (above)")
                break
    if not reported:
        print(f"error: no model to report on (skipped: {' '.join(skipped + failed)}); see above", file=sys.stderr)
        return 1
    results = [str(eval_dir / f"{label}.json") for label in reported]
    args = [*results, "--labels", ",".join(reported), "--output-dir", str(eval_dir / "report")]
    capability = [eval_dir / f"{label}.capability.json" for label in reported]
    if suite is not None and all(p.is_file() for p in capability):
        args += ["--capability", *map(str, capability)]
    if tracking:
        args += ["--mlflow-experiment", env.get("EVAL_EXPERIMENT") or "gsm8k-eval"]
    code = run("scripts.eval.report", *args)
    if skipped:
        print(f"not in the report (see the reasons above): {' '.join(skipped)}")
    if failed:
        print(f"error: failed (see above): {', '.join(failed)}", file=sys.stderr)
    return code or int(bool(failed))


if __name__ == "__main__":
    sys.exit(main())
