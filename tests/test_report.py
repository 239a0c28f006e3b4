"""scripts/eval/report.py and scripts/eval/run_all.py: paired statistics, refusals, outputs, MLflow, the one command.

- Statistics against published values (Fagerland, Lydersen & Laake's Cavo et al. 2012 example), scipy's binomial
  test, and a coverage simulation with a known true difference.
- Real inputs: result files written by the real scripts/eval/evaluate.py (tiny model, fixture data, transformers).
- evaluate_all.py on a fake repo layout (SFT manifest, verl checkpoint folders) from another working directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data.prompt import PROMPT_VERSION
from scripts.eval import report as rp
from scripts.eval.comparison import compare
from scripts.eval.stats import mcnemar_exact_p, wilson_interval
from tests.mlflow_server import free_port, mlflow_server
from tests.tiny_model import build_tiny_model

REPORT = ("-m", "scripts.eval.report")
EVALUATE = ("-m", "scripts.eval.evaluate")
EVALUATE_ALL = ("-m", "scripts.eval.run_all")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_NEW_TOKENS = "16"  # the random tiny models never stop early; enough to exercise generation


CAPABILITY_SUITE = Path(__file__).parent / "fixtures" / "capability" / "suite.yaml"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def write_result(
    path: Path,
    strict: list[bool] | np.ndarray,
    flexible: list[bool] | np.ndarray | None = None,
    *,
    indices: list[int] | None = None,
    questions: dict[int, str] | None = None,
    **fields,
) -> Path:
    """A result file shaped exactly like evaluate.py's (`dataclasses.asdict(EvalResult)`), with chosen outcomes."""
    strict = [bool(x) for x in strict]
    flexible = strict if flexible is None else [bool(x) for x in flexible]
    indices = list(range(len(strict))) if indices is None else indices
    questions = questions or {}
    samples = [
        {
            "index": i,
            "question": questions.get(i, f"question {i}"),
            "ground_truth": str(i),
            "response": f"#### {i if s else -1}",
            "pred_gsm8k_strict": str(i if s else -1),
            "correct_gsm8k_strict": s,
            "pred_gsm8k_flexible": str(i if f else -1),
            "correct_gsm8k_flexible": f,
        }
        for i, s, f in zip(indices, strict, flexible, strict=True)
    ]
    n = len(samples)
    payload = {
        "model": fields.pop("model", f"/workspace/models/{path.stem}"),
        "data": fields.pop("data", "/workspace/data/gsm8k/test.parquet"),
        "backend": fields.pop("backend", "vllm"),
        "n": n,
        "accuracy": {"gsm8k_strict": sum(strict) / n, "gsm8k_flexible": sum(flexible) / n},
        "ci95": {},
        "samples": samples,
        "max_new_tokens": fields.pop("max_new_tokens", 512),
        "prompt_version": fields.pop("prompt_version", PROMPT_VERSION),
        "created_at": "2026-01-01T00:00:00+00:00",
        **fields,
    }
    path.write_text(json.dumps(payload))
    return path


def cavo_vectors() -> tuple[np.ndarray, np.ndarray]:
    """(model, baseline) correctness for the paired table [[59, 6], [16, 80]] (Cavo et al. 2012)."""
    model = np.array([1] * 59 + [1] * 6 + [0] * 16 + [0] * 80, dtype=bool)
    baseline = np.array([1] * 59 + [0] * 6 + [1] * 16 + [0] * 80, dtype=bool)
    return model, baseline


def run_report(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, *REPORT, *args], capture_output=True, text=True, env=env or _env(), cwd=cwd, timeout=300
    )


# ---------------------------------------------------------------- statistics


def test_cavo_example_matches_published_values():
    """Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables, ch. 8: -0.0621 (-0.1186 to -0.0046),
    McNemar exact conditional P = 0.052479."""
    model, baseline = cavo_vectors()
    paired = compare(model, baseline)
    assert (paired.both_correct, paired.fixed, paired.broke, paired.both_wrong) == (59, 6, 16, 80)
    assert paired.diff == pytest.approx(-0.0621, abs=5e-5)
    assert paired.ci95_newcombe == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert paired.mcnemar_p == pytest.approx(0.052479, abs=5e-7)


@pytest.mark.parametrize(
    "fixed, broke",
    [(0, 0), (1, 0), (5, 5), (6, 16), (30, 70), (12, 0), (600, 719)],  # incl. m = 1319: big-integer path
)
def test_mcnemar_exact_matches_scipy_binomial_test(fixed, broke):
    from scipy.stats import binomtest

    expected = 1.0 if fixed + broke == 0 else binomtest(fixed, fixed + broke, 0.5).pvalue
    assert mcnemar_exact_p(fixed, broke) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert mcnemar_exact_p(fixed, broke) == mcnemar_exact_p(broke, fixed)  # two-sided


def test_identical_models_differ_by_zero_with_p_one():
    correct = np.random.default_rng(3).random(1319) < 0.5
    paired = compare(correct, correct.copy())
    assert paired.diff == 0.0 and paired.fixed == paired.broke == 0
    assert paired.mcnemar_p == 1.0
    lo, hi = paired.ci95_newcombe
    assert lo < 0 < hi and lo == pytest.approx(-hi, abs=1e-12)  # symmetric, and honest about 1319 problems


def test_paired_intervals_cover_the_true_difference():
    """Draw 300 test sets from a known joint distribution (true difference +4 points): ~95% of Newcombe's
    intervals contain it, and an interval that ignores the pairing would be wider."""
    rng = np.random.default_rng(11)
    n, p_fixed, p_broke, true_diff = 1319, 0.10, 0.06, 0.04
    hits = 0
    reps = 300
    for _ in range(reps):
        u = rng.random(n)
        baseline = rng.random(n) < 0.5
        model = baseline.copy()
        model[u < p_fixed] = True
        baseline[u < p_fixed] = False
        model[(u >= p_fixed) & (u < p_fixed + p_broke)] = False
        baseline[(u >= p_fixed) & (u < p_fixed + p_broke)] = True
        paired = compare(model, baseline)
        hits += paired.ci95_newcombe[0] <= true_diff <= paired.ci95_newcombe[1]
    assert 0.91 <= hits / reps <= 0.99, f"Newcombe's interval covered the true difference in {hits}/{reps} test sets"
    m_lo, m_hi = wilson_interval(int(model.sum()), n)
    b_lo, b_hi = wilson_interval(int(baseline.sum()), n)
    unpaired_width = np.hypot(m_hi - m_lo, b_hi - b_lo)
    assert paired.ci95_newcombe[1] - paired.ci95_newcombe[0] < unpaired_width


# ---------------------------------------------------------------- report.py on hand-built results


@pytest.fixture
def four_results(tmp_path):
    """base/sft/ppo/grpo over 161 problems; ppo vs base is exactly the Cavo table."""
    model, baseline = cavo_vectors()
    rng = np.random.default_rng(0)
    return [
        write_result(tmp_path / "base.json", baseline, baseline | (rng.random(161) < 0.1)),
        write_result(tmp_path / "sft.json", baseline),  # same outcomes as base: difference 0
        write_result(tmp_path / "ppo.json", model, model),
        write_result(tmp_path / "grpo.json", rng.random(161) < 0.6),
    ]


def test_report_writes_table_chart_and_json(four_results, tmp_path):
    out = tmp_path / "report"
    proc = run_report(*map(str, four_results), "--output-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "report.json", "report.md"]  # no temp files
    data = json.loads((out / "report.json").read_text())
    assert [m["label"] for m in data["models"]] == ["base", "sft", "ppo", "grpo"]  # labels from the file names
    assert data["baseline"] == "base" and data["n"] == 161 and data["data_file"] == "test.parquet"
    ppo = {c["reward"]: c for c in data["comparisons"] if c["label"] == "ppo"}
    assert ppo["gsm8k_strict"]["mcnemar_p"] == pytest.approx(0.052479, abs=5e-7)
    assert ppo["gsm8k_strict"]["ci95_newcombe"] == pytest.approx([-0.1186, -0.0046], abs=5e-5)
    assert (ppo["gsm8k_strict"]["fixed"], ppo["gsm8k_strict"]["broke"]) == (6, 16)
    sft = {c["reward"]: c for c in data["comparisons"] if c["label"] == "sft"}
    assert sft["gsm8k_strict"]["diff"] == 0.0 and sft["gsm8k_strict"]["mcnemar_p"] == 1.0
    assert data["models"][2]["accuracy"]["gsm8k_strict"] == pytest.approx(65 / 161)
    assert data["models"][2]["ci95"]["gsm8k_strict"] == pytest.approx(list(wilson_interval(65, 161)))

    md = (out / "report.md").read_text()
    assert "| ppo | `models/ppo` | vllm | 161 | 40.4% [33.1, 48.1] |" in md  # container path shown repo-relative
    assert "| ppo | gsm8k_strict | -6.2 pts |" in md and "[-11.9, -0.5] | 6 / 16 | 0.052 |" in md
    assert "External reference numbers" in md and "not produced by this repo" in md
    for anchor in ("| 49.6 |", "| 56.7 |", "| 54.3 |"):
        assert anchor in md
    assert md in proc.stdout  # the table is also printed

    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    from PIL import Image

    with Image.open(out / "accuracy.png") as image:
        image.verify()
        assert image.size[0] > 600 and image.size[1] > 300


def test_capability_section_flags_a_drop_beyond_noise(four_results, tmp_path):
    scores = {"base": (0.50, 0.47), "sft": (0.49, 0.47), "ppo": (0.35, 0.46), "grpo": (0.51, 0.49)}
    files = []
    for label, (arc, mmlu) in scores.items():
        tasks = {"arc_challenge": {"metric": "acc_norm", "value": arc, "stderr": 0.02, "n": 500}}
        tasks["mmlu"] = {"metric": "acc", "value": mmlu, "stderr": 0.02, "n": 570}
        files.append(tmp_path / f"{label}.capability.json")
        files[-1].write_text(json.dumps({"model": label, "suite": {"arc_challenge": {}}, "tasks": tasks}))
    out = tmp_path / "report"
    proc = run_report(*map(str, four_results), "--output-dir", str(out), "--capability", *map(str, files))
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert "| ppo | arc_challenge | acc_norm | 35.0% ± 2.0 | -15.0 pts | **drop beyond noise** |" in md
    assert "| sft | arc_challenge | acc_norm | 49.0% ± 2.0 | -1.0 pts |  |" in md  # within noise: not flagged
    assert "| base | mmlu | acc | 47.0% ± 2.0 |  |  |" in md
    mismatched = run_report(*map(str, four_results), "--output-dir", str(out), "--capability", str(files[0]))
    assert mismatched.returncode == 2 and "--capability names 1 files for 4 models" in mismatched.stderr


@pytest.mark.slow
def test_labels_and_baseline_options(four_results, tmp_path):
    out = tmp_path / "r"
    args = [*map(str, four_results[2:0:-1]), "--labels", "P,S", "--baseline", "S", "--output-dir", str(out)]
    assert run_report(*args).returncode == 0
    data = json.loads((out / "report.json").read_text())
    assert [m["label"] for m in data["models"]] == ["P", "S"] and data["baseline"] == "S"
    assert {c["label"] for c in data["comparisons"]} == {"P"}
    bad = run_report(*map(str, four_results[:2]), "--labels", "a,b,c")
    assert bad.returncode == 2 and "--labels names 3 models but 2 result files" in bad.stderr
    bad = run_report(*map(str, four_results[:2]), "--baseline", "ppo")
    assert bad.returncode == 2 and "'ppo' is not one of the labels" in bad.stderr


MISMATCHES = [
    # overrides of the second file, the words the refusal must contain
    ({"data": "/workspace/data/gsm8k/val.parquet"}, "different data files"),
    ({"n": 100}, "different problem counts"),
    ({"prompt_version": "gsm8k-v0"}, "different prompt versions"),
    ({"max_new_tokens": 1024}, "different max_new_tokens"),
    ({"indices": list(range(1, 162))}, "cover different problems"),
    ({"questions": {17: "another question"}}, "disagree on the question or ground truth"),
]


@pytest.mark.parametrize("override, message", MISMATCHES)
def test_refuses_results_that_are_not_on_the_same_problems(tmp_path, override, message):
    model, baseline = cavo_vectors()
    base = write_result(tmp_path / "base.json", baseline)
    override = dict(override)
    n = override.pop("n", 161)
    other = write_result(tmp_path / "other.json", model[:n], **override)
    proc = run_report(str(base), str(other), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert str(other) in proc.stderr and str(base) in proc.stderr  # names both files
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d.pop("samples"), "not an evaluate.py result (missing samples)"),
        (lambda d: d.update(n=3), "n is 3 but it holds 161 samples"),
        (lambda d: d["accuracy"].update(gsm8k_strict=0.99), "accuracy[gsm8k_strict] says 0.99 but its samples give"),
        (lambda d: d["samples"][1].update(index=0), "problem index 0 appears twice"),
        (lambda d: d["samples"][4].pop("correct_gsm8k_flexible"), "sample 4 lacks correct_gsm8k_flexible"),
    ],
)
def test_refuses_damaged_result_files(tmp_path, damage, message):
    model, baseline = cavo_vectors()
    base = write_result(tmp_path / "base.json", baseline)
    broken = write_result(tmp_path / "broken.json", model)
    payload = json.loads(broken.read_text())
    damage(payload)
    broken.write_text(json.dumps(payload))
    proc = run_report(str(base), str(broken), "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 2 and message in proc.stderr and str(broken) in proc.stderr
    missing = run_report(str(base), str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and f"{tmp_path / 'nope.json'}: no such result file" in missing.stderr


def test_without_matplotlib_the_table_and_json_are_still_written(four_results, tmp_path, monkeypatch, caplog):
    """Where matplotlib is missing (a bare Python), the report degrades to no chart, saying where to draw it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "r"
    assert rp.main([*map(str, four_results), "--output-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    assert "matplotlib is not installed" in caplog.text and "docker compose exec jupyter" in caplog.text


def test_mlflow_unreachable_fails_after_writing_files(four_results, tmp_path):
    env = _env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    out = tmp_path / "r"
    proc = run_report(*map(str, four_results), "--output-dir", str(out), "--mlflow-experiment", "x", env=env)
    assert proc.returncode == 1 and "is unreachable" in proc.stderr
    assert (out / "report.md").is_file()


@pytest.mark.slow
def test_logs_one_mlflow_run_to_a_real_server(four_results, tmp_path):
    from mlflow import MlflowClient

    out = tmp_path / "r"
    with mlflow_server(tmp_path / "mlflow") as uri:
        env = _env(MLFLOW_TRACKING_URI=uri)
        proc = run_report(*map(str, four_results), "--output-dir", str(out), "--mlflow-experiment", "eval", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(tracking_uri=uri)
        (run,) = client.search_runs([client.get_experiment_by_name("eval").experiment_id])
        data = json.loads((out / "report.json").read_text())
        metrics = run.data.metrics
        assert metrics["ppo/accuracy_gsm8k_strict"] == pytest.approx(data["models"][2]["accuracy"]["gsm8k_strict"])
        assert metrics["ppo/mcnemar_p_gsm8k_strict"] == pytest.approx(0.052479, abs=5e-7)
        assert metrics["ppo/diff_vs_base_gsm8k_strict"] == pytest.approx(-10 / 161)
        sft_strict = next(c for c in data["comparisons"] if c["label"] == "sft" and c["reward"] == "gsm8k_strict")
        assert metrics["sft/diff_vs_base_ci95_low_gsm8k_strict"] == pytest.approx(sft_strict["ci95_newcombe"][0])
        assert (
            metrics["sft/diff_vs_base_ci95_low_gsm8k_strict"] < 0 < metrics["sft/diff_vs_base_ci95_high_gsm8k_strict"]
        )
        assert run.data.params["baseline"] == "base" and run.data.params["n"] == "161"
        assert run.info.run_name == "report-base-sft-ppo-grpo-test"
        assert "| ppo | gsm8k_strict | -6.2 pts |" in run.data.tags["mlflow.note.content"]  # the table on the run page
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
        assert artifacts == {"report/report.md", "report/report.json", "report/accuracy.png"}
        results = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
        assert results == {f"results/{p.name}" for p in four_results}
        local = client.download_artifacts(run.info.run_id, "report/accuracy.png", str(tmp_path))
        assert Path(local).read_bytes() == (out / "accuracy.png").read_bytes()


# ---------------------------------------------------------------- real evaluate.py outputs


@pytest.fixture(scope="module")
def second_tiny_model(tmp_path_factory) -> Path:
    """Another random tiny model (seed 1): a second "checkpoint" with other weights."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2-seed1") / "model", seed=1)


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, second_tiny_model, gsm8k_data_dir, tmp_path_factory) -> dict[str, Path]:
    """The real scripts/eval/evaluate.py (transformers backend, CPU) on the 8 fixture test problems, for two models."""
    out = tmp_path_factory.mktemp("evaluated")
    procs = {}
    for label, model in (("base", tiny_model_dir), ("tuned", second_tiny_model)):
        cmd = [
            sys.executable,
            *EVALUATE,
            "--model",
            str(model),
            "--data",
            str(gsm8k_data_dir / "test.parquet"),
            "--backend",
            "hf",
            "--max-new-tokens",
            MAX_NEW_TOKENS,
            "--output",
            str(out / f"{label}.json"),
        ]
        procs[label] = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for label, proc in procs.items():
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"evaluate.py for {label} failed:\n{log[-3000:]}"
    return {label: out / f"{label}.json" for label in procs}


@pytest.mark.slow
def test_report_reads_real_evaluate_outputs(evaluated, tmp_path):
    out = tmp_path / "report"
    proc = run_report(str(evaluated["base"]), str(evaluated["tuned"]), "--output-dir", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["n"] == 8 and data["max_new_tokens"] == int(MAX_NEW_TOKENS)
    for entry in data["models"]:
        result = json.loads(evaluated[entry["label"]].read_text())
        assert entry["model"] == result["model"]
        assert entry["accuracy"] == pytest.approx(result["accuracy"])
        for mode, interval in result["ci95"].items():
            assert entry["ci95"][mode] == pytest.approx(interval)  # evaluate.py's Wilson interval, recomputed
    base, tuned = (json.loads(evaluated[k].read_text())["samples"] for k in ("base", "tuned"))
    for c in data["comparisons"]:
        mode = c["reward"]
        fixed = sum(t[f"correct_{mode}"] and not b[f"correct_{mode}"] for b, t in zip(base, tuned, strict=True))
        broke = sum(b[f"correct_{mode}"] and not t[f"correct_{mode}"] for b, t in zip(base, tuned, strict=True))
        assert (c["fixed"], c["broke"]) == (fixed, broke)
        assert c["mcnemar_p"] == mcnemar_exact_p(fixed, broke)
        assert c["ci95_newcombe"][0] <= c["diff"] <= c["ci95_newcombe"][1]
    md = (out / "report.md").read_text()
    assert "| base |" in md and "| tuned |" in md and "n = 8 problems" in md
    assert (out / "accuracy.png").read_bytes().startswith(PNG_SIGNATURE)


# ---------------------------------------------------------------- evaluate_all.py


def _copy_model(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


@pytest.fixture(scope="module")
def fake_repo(tiny_model_dir, second_tiny_model, tmp_path_factory) -> Path:
    """models/ as training leaves it: an SFT manifest, verl experiments (two for GRPO) with two steps each."""
    root = tmp_path_factory.mktemp("fake-repo")
    models = root / "models"
    _copy_model(tiny_model_dir, models / "sft" / "sft-run")  # a path of its own: the manifest, not BASE_MODEL
    (models / "sft" / "latest.json").write_text(
        json.dumps(
            {"path": str(models / "sft" / "sft-run"), "base_model": "Qwen/Qwen2.5-0.5B-Instruct", "mlflow_run_id": "x"}
        )
    )
    rl = models / "rl"
    for experiment in ("ppo-qwen2.5-0.5b-instruct", "grpo-old", "grpo-sft-run"):
        for step, model in ((1, second_tiny_model), (2, tiny_model_dir)):
            _copy_model(model, rl / experiment / f"global_step_{step}" / "actor" / "huggingface")
        (rl / experiment / "latest_checkpointed_iteration.txt").write_text("2")
    # PPO crashed while saving step 2: verl writes the tracker last, so it still names step 1.
    (rl / "ppo-qwen2.5-0.5b-instruct" / "latest_checkpointed_iteration.txt").write_text("1\n")
    os.utime(rl / "grpo-old", (time.time() - 3600, time.time() - 3600))  # written an hour before grpo-sft-run
    return root


def run_evaluate_all(root: Path, data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    settings = {
        "MODELS_DIR": str(root / "models"),
        "DATA_DIR": str(data_dir),
        "BACKEND": "hf",
        "LIMIT": "4",
        "CAPABILITY": "0",  # the hub suite needs the network; evaluate_all_run checks a local one
        **env,
    }
    return subprocess.run(
        [sys.executable, *EVALUATE_ALL, *args],
        cwd=root.parent,  # not the repository: the script finds its own way
        env=_env(**settings),
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_evaluate_all_takes_its_algorithms_from_verl_configs(tmp_path, gsm8k_data_dir):
    """ALGOS picks the RL labels among verl_configs/<algo>_gsm8k.yaml; a name without a config stops at once."""
    proc = run_evaluate_all(tmp_path, gsm8k_data_dir, ALGOS="ppo,nope")
    assert proc.returncode == 2 and "ALGOS names nope" in proc.stderr and "choose from" in proc.stderr
    assert "grpo" in proc.stderr and "ppo" in proc.stderr  # the choices come from the folder
    assert not (tmp_path / "models").exists()  # nothing was written


@pytest.fixture(scope="module")
def evaluate_all_run(fake_repo, tiny_model_dir, gsm8k_data_dir) -> subprocess.CompletedProcess:
    return run_evaluate_all(
        fake_repo,
        gsm8k_data_dir,
        "--max-new-tokens",
        MAX_NEW_TOKENS,
        BASE_MODEL=str(tiny_model_dir),
        CAPABILITY="1",
        CAPABILITY_SUITE=str(CAPABILITY_SUITE),
    )


@pytest.mark.slow
def test_evaluate_all_evaluates_every_model_and_reports(evaluate_all_run, fake_repo, tiny_model_dir):
    proc = evaluate_all_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    eval_dir = fake_repo / "models" / "eval"
    results = {label: json.loads((eval_dir / f"{label}.json").read_text()) for label in ("base", "sft", "ppo", "grpo")}
    rl = fake_repo / "models" / "rl"
    assert results["base"]["model"] == str(tiny_model_dir)  # BASE_MODEL override
    assert results["sft"]["model"] == str(fake_repo / "models" / "sft" / "sft-run")  # from models/sft/latest.json
    # the step latest_checkpointed_iteration.txt names (not a newer, unfinished one), HF weights saved with it
    assert results["ppo"]["model"] == str(rl / "ppo-qwen2.5-0.5b-instruct/global_step_1/actor/huggingface")
    assert results["grpo"]["model"] == str(rl / "grpo-sft-run/global_step_2/actor/huggingface")  # newest experiment
    assert "2 experiments" in proc.stderr and "using the newest, grpo-sft-run" in proc.stderr
    for result in results.values():
        assert result["n"] == 4 and result["backend"] == "hf"  # LIMIT, BACKEND
        assert result["max_new_tokens"] == int(MAX_NEW_TOKENS)  # extra arguments reached evaluate.py
    md = (eval_dir / "report" / "report.md").read_text()
    for label in ("base", "sft", "ppo", "grpo"):
        assert f"\n| {label} | `" in md
    assert "## Difference vs base" in md
    assert (eval_dir / "report" / "accuracy.png").read_bytes().startswith(PNG_SIGNATURE)
    # the capability check ran for every model, through lm-evaluation-harness, and reached the report
    for label in ("base", "sft", "ppo", "grpo"):
        capability = json.loads((eval_dir / f"{label}.capability.json").read_text())
        assert capability["model"] == results[label]["model"] and capability["tasks"]["tiny_arith"]["n"] == 4
    rows = json.loads((eval_dir / "report" / "report.json").read_text())["capability"]["rows"]
    assert [(r["model"], r["task"]) for r in rows] == [(m, "tiny_arith") for m in ("base", "sft", "ppo", "grpo")]
    assert "## Capability check (lm-evaluation-harness, vs base)" in md and "| sft | tiny_arith | acc |" in md


@pytest.mark.slow
def test_evaluate_all_rerun_reuses_results(evaluate_all_run, fake_repo, tiny_model_dir, gsm8k_data_dir):
    assert evaluate_all_run.returncode == 0
    before = {p.name: p.stat().st_mtime_ns for p in (fake_repo / "models" / "eval").glob("*.json")}
    proc = run_evaluate_all(fake_repo, gsm8k_data_dir, BASE_MODEL=str(tiny_model_dir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("is up to date") == 4 and "evaluating" not in proc.stdout
    capability = {"CAPABILITY": "1", "CAPABILITY_SUITE": str(CAPABILITY_SUITE)}
    proc = run_evaluate_all(fake_repo, gsm8k_data_dir, BASE_MODEL=str(tiny_model_dir), **capability)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("capability check") == 4 and proc.stdout.count("is up to date") == 8
    assert {p.name: p.stat().st_mtime_ns for p in (fake_repo / "models" / "eval").glob("*.json")} == before


@pytest.mark.slow
def test_evaluate_all_skips_what_is_missing(evaluate_all_run, fake_repo, tiny_model_dir, gsm8k_data_dir, tmp_path):
    """No SFT manifest, a PPO checkpoint without HF weights, no GRPO run: base only, each skip explained."""
    assert evaluate_all_run.returncode == 0
    root = tmp_path / "repo"
    (root / "models" / "eval").mkdir(parents=True)
    shutil.copy(fake_repo / "models" / "eval" / "base.json", root / "models" / "eval")
    actor = root / "models" / "rl" / "ppo-x" / "global_step_3" / "actor"
    # verl always saves config + tokenizer here; weights only with hf_model
    (actor / "huggingface").mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", actor / "huggingface")
    (root / "models" / "rl" / "ppo-x" / "latest_checkpointed_iteration.txt").write_text("3\n")
    proc = run_evaluate_all(root, gsm8k_data_dir, BASE_MODEL=str(tiny_model_dir))
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert "== base: " in out and "is up to date" in out and "evaluating" not in out
    assert "== sft: skipped: no SFT manifest at" in out
    assert "== ppo: skipped: the step-3 checkpoint has no Hugging Face weights" in out
    assert "bash scripts/export_checkpoint.sh" in out
    assert "== grpo: skipped: no " in out and "grpo-* experiment" in out
    assert "not in the report (see the reasons above): sft ppo grpo" in out
    md = (root / "models" / "eval" / "report" / "report.md").read_text()
    assert "\n| base | `" in md and "| sft |" not in md and "## Difference" not in md

    named = run_evaluate_all(root, gsm8k_data_dir, BASE_MODEL=str(tiny_model_dir), PPO_EXPERIMENT="ppo-typo")
    assert "== ppo: skipped: PPO_EXPERIMENT: no folder" in named.stdout


@pytest.mark.slow
def test_evaluate_all_re_evaluates_a_stale_result(
    evaluate_all_run, fake_repo, tiny_model_dir, gsm8k_data_dir, tmp_path
):
    """A result made with another LIMIT is evaluated again, not silently reported (report.py would refuse it)."""
    assert evaluate_all_run.returncode == 0
    eval_dir = tmp_path / "models" / "eval"
    eval_dir.mkdir(parents=True)
    shutil.copy(fake_repo / "models" / "eval" / "base.json", eval_dir)
    proc = run_evaluate_all(
        tmp_path, gsm8k_data_dir, "--max-new-tokens", "4", BASE_MODEL=str(tiny_model_dir), MODELS="base", LIMIT="3"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "re-evaluating" in proc.stdout and "covers 4 problems, not 3" in proc.stdout
    assert json.loads((eval_dir / "base.json").read_text())["n"] == 3


@pytest.mark.slow
def test_report_refuses_results_of_different_sizes_from_real_runs(evaluated, evaluate_all_run, fake_repo, tmp_path):
    """8-problem and 4-problem evaluations of the same data: refused, naming both files."""
    assert evaluate_all_run.returncode == 0
    small = fake_repo / "models" / "eval" / "sft.json"
    proc = run_report(str(evaluated["base"]), str(small), "--output-dir", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "different problem counts (4 vs 8)" in proc.stderr
    assert str(small) in proc.stderr and str(evaluated["base"]) in proc.stderr


@pytest.mark.slow
def test_evaluate_all_without_the_hub_skips_what_it_cannot_reach_and_evaluates_the_rest(
    tiny_model_dir, gsm8k_data_dir, tmp_path
):
    """No hub (HF_ENDPOINT answers nothing, an empty cache, HF_HUB_OFFLINE unset): the base model (the default hub
    id) and the capability check (hub benchmarks) are reported naming the setting that changes them; the SFT model
    is still evaluated and reported, quickly (no hub retries), and the run ends in a summary, not a traceback."""
    from tests.mlflow_server import free_port

    models = tmp_path / "models"
    _copy_model(tiny_model_dir, models / "sft" / "run")
    (models / "sft" / "latest.json").write_text(json.dumps({"path": str(models / "sft" / "run")}))
    env = {k: v for k, v in _env().items() if not k.endswith("_OFFLINE") and k != "BASE_MODEL"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")  # no hub, no cache
    env.update(MODELS_DIR=str(models), DATA_DIR=str(gsm8k_data_dir), BACKEND="hf", LIMIT="2", MODELS="base sft")
    env.update(CAPABILITY="1")  # the default suite: ARC, HellaSwag, MMLU from the hub
    t0 = time.monotonic()
    cmd = [sys.executable, *EVALUATE_ALL, "--max-new-tokens", "4"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    took, out, err = time.monotonic() - t0, proc.stdout, proc.stderr
    assert "working offline, from the cache (HF_HUB_OFFLINE=1)" in out, out + err
    skip = next(line for line in out.splitlines() if line.startswith("== base: skipped:"))
    assert "BASE_MODEL" in skip and "Qwen/Qwen2.5-0.5B-Instruct" in skip and "not in the Hugging Face cache" in skip
    assert json.loads((models / "eval" / "sft.json").read_text())["n"] == 2  # the others are still evaluated
    assert "\n| sft | `" in (models / "eval" / "report" / "report.md").read_text()
    assert "CAPABILITY=0 skips the check" in err
    assert proc.returncode == 1 and err.splitlines()[-1] == "error: failed (see above): capability check (sft)"
    assert "Retrying" not in err and "Traceback" not in out + err, err[-3000:]
    assert took < 300, f"{took:.0f} s"


def test_a_new_registered_reward_is_measured_and_reported(monkeypatch, tmp_path):
    """One function plus one registry line: evaluation scores it, the report gives it a column and a comparison."""
    import rewards
    from scripts.eval import comparison, evaluation

    def exact_line(data_source, solution_str, ground_truth, extra_info=None):
        acc = float(solution_str.strip() == f"#### {ground_truth}")
        return {"score": acc, "acc": acc}

    monkeypatch.setitem(rewards.REWARDS, "exact_line", exact_line)
    problems = [evaluation.Problem(i, f"q{i}", str(i), []) for i in range(4)]
    answers = ["#### 0", "The answer is #### 1 ok", "#### 7", "#### 3"]
    files = []
    for label, responses in (("base", ["#### 9"] * 4), ("ppo", answers)):
        result = evaluation.score(problems, responses, model=label, data="/data/gsm8k/test.parquet", backend="hf")
        assert list(result.accuracy) == ["gsm8k_strict", "gsm8k_flexible", "exact_line"]
        files.append(tmp_path / f"{label}.json")
        files[-1].write_text(json.dumps(dataclasses.asdict(result)))
    assert json.loads(files[1].read_text())["accuracy"]["exact_line"] == 0.5  # "#### 0" and "#### 3"
    results = [comparison.load_result(path, path.stem) for path in files]
    report = comparison.build_report(results, "base")
    assert report["rewards"] == ["gsm8k_strict", "gsm8k_flexible", "exact_line"]
    assert "exact_line [95% CI]" in rp.render_markdown(report)
    assert any(c["reward"] == "exact_line" and c["fixed"] == 2 for c in report["comparisons"])

    monkeypatch.delitem(rewards.REWARDS, "exact_line")  # a result from before the registry changed
    older = comparison.load_result(write_result(tmp_path / "sft.json", [True] * 4), "sft")
    with pytest.raises(comparison.ReportError, match="scored with different rewards"):
        comparison.build_report([results[0], older], "base")
