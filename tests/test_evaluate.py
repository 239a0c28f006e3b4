"""scripts/eval/evaluation.py and its CLI scripts/eval/evaluate.py: scoring, the Wilson interval, problem loading, HF
generation."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from data.prompt import user_message
from rewards import REWARDS
from scripts.eval import evaluate as cli
from scripts.eval import evaluation as ev
from scripts.eval.stats import wilson_interval

# Reference values: Wilson score interval, z = 1.96 (e.g. Newcombe 1998, Table I; statsmodels proportion_confint).
WILSON_CASES = [
    (5, 10, 0.2366, 0.7634),  # p = 0.5
    (0, 10, 0.0, 0.2775),  # no successes: lower bound exactly 0, upper bound still informative
    (10, 10, 0.7225, 1.0),  # all successes
    (81, 263, 0.2553, 0.3662),  # Newcombe's worked example
    (50, 100, 0.4038, 0.5962),
    (660, 1319, 0.4735, 0.5273),  # the GSM8K test split at ~50%: about +-2.7 points
]


@pytest.mark.parametrize("k, n, low, high", WILSON_CASES)
def test_wilson_interval_matches_reference_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


@given(n=st.integers(1, 5000), data=st.data())
def test_wilson_interval_contains_the_estimate(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert hi - lo <= wilson_interval(n // 2, n)[1] - wilson_interval(n // 2, n)[0] + 1e-12  # widest at p=.5


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing measured: nothing known
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def _problem(truth: str) -> ev.Problem:
    return ev.Problem(index=0, question="q", ground_truth=truth, messages=[user_message("q")])


SCORE_CASES = [
    # response, ground truth, strict correct, flexible correct
    ("48/2 = 24, 48+24 = 72\n#### 72", "72", True, True),  # the SFT format
    ("So the total is \\boxed{72}.", "72", False, True),  # boxed only: the format strict RL insists on is missing
    ("The answer is $1,008.", "1008", False, True),  # answer phrase with thousands separator
    ("#### 71", "72", False, False),  # wrong number
    ("", "72", False, False),  # empty response
    ("#### -8", "-8", True, True),  # negative answer
]


def test_score_counts_both_modes():
    problems = [_problem(truth) for _, truth, _, _ in SCORE_CASES]
    result = ev.score(problems, [resp for resp, _, _, _ in SCORE_CASES], model="m", data="d", backend="hf")
    assert result.n == len(SCORE_CASES)
    assert [s["correct_gsm8k_strict"] for s in result.samples] == [c[2] for c in SCORE_CASES]
    assert [s["correct_gsm8k_flexible"] for s in result.samples] == [c[3] for c in SCORE_CASES]
    assert result.accuracy == {"gsm8k_strict": 2 / 6, "gsm8k_flexible": 4 / 6}
    assert result.ci95["gsm8k_strict"] == wilson_interval(2, 6)
    assert result.samples[2]["pred_gsm8k_flexible"] == "1008"
    metrics = result.metrics("val_after")
    assert metrics["val_after/accuracy_gsm8k_strict"] == 2 / 6
    assert metrics["val_after/ci95_high_gsm8k_flexible"] == wilson_interval(4, 6)[1]
    assert "gsm8k_strict 33.3%" in result.summary()


def test_score_rejects_misaligned_responses():
    with pytest.raises(ValueError, match="2 responses for 1 problems"):
        ev.score([_problem("1")], ["a", "b"])


def test_load_problems_rl_schema_uses_the_prompt_template(gsm8k_data_dir):
    problems = ev.load_problems(gsm8k_data_dir / "val.parquet")
    assert len(problems) == 4
    for p in problems:
        assert p.messages == [user_message(p.question)]
        assert p.ground_truth.lstrip("-").replace(".", "").isdigit()  # canonical: no "12,500", no "$"
    assert len(ev.load_problems(gsm8k_data_dir / "val.parquet", limit=2)) == 2


def test_load_problems_errors_name_the_file(tmp_path, gsm8k_data_dir):
    with pytest.raises(FileNotFoundError, match="python -m data.prepare_gsm8k --output-dir"):
        ev.load_problems(tmp_path / "missing.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"question": ["q"]}), bad)
    with pytest.raises(ValueError, match=r"bad.parquet, row 0: no `reward_model` column \(it has question\)"):
        ev.load_problems(bad)
    with pytest.raises(ValueError, match=r"sft_val.parquet, row 0: .* val.parquet or test.parquet"):
        ev.load_problems(gsm8k_data_dir / "sft_val.parquet")  # SFT training data: the RL files are the ones to use
    no_question = tmp_path / "no_question.parquet"
    pq.write_table(pa.table({"reward_model": [{"ground_truth": "7"}], "extra_info": [{"index": 3}]}), no_question)
    with pytest.raises(ValueError, match=r"no_question.parquet, row 0: no extra_info.question; rebuild"):
        ev.load_problems(no_question)


@pytest.fixture(scope="module")
def val_conversations(gsm8k_data_dir):
    return [p.messages for p in ev.load_problems(gsm8k_data_dir / "val.parquet")]


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with larger random weights: its greedy output depends on the prompt (the plain tiny model
    answers every prompt with newlines, which would make batching and decoding tests pass vacuously)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.normal_(0.0, 0.3)
    out = tmp_path_factory.mktemp("sharp-qwen2")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_generate_hf_is_greedy_and_batch_invariant(sharp_model_dir, val_conversations):
    batched = ev.generate_hf(sharp_model_dir, val_conversations, max_new_tokens=12, batch_size=4)
    one_by_one = ev.generate_hf(sharp_model_dir, val_conversations, max_new_tokens=12, batch_size=1)
    assert len(batched) == len(val_conversations)
    assert len(set(batched)) == len(batched)  # different prompts, different answers: the test can tell them apart
    assert batched == one_by_one  # left padding does not change greedy outputs, and the order is restored


def test_generate_hf_ignores_the_models_sampling_defaults(sharp_model_dir, val_conversations, tmp_path):
    """Qwen ships do_sample=True, temperature 0.7, repetition_penalty 1.05: evaluation must stay greedy."""
    import shutil

    from transformers import GenerationConfig

    sampling = tmp_path / "sampling-model"
    shutil.copytree(sharp_model_dir, sampling)
    config = GenerationConfig.from_pretrained(sampling)
    config.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)
    config.save_pretrained(sampling)
    greedy = ev.generate_hf(sharp_model_dir, val_conversations, max_new_tokens=12)
    assert ev.generate_hf(sampling, val_conversations, max_new_tokens=12) == greedy


@pytest.mark.slow
def test_cli_writes_json_and_logs_to_mlflow(tiny_model_dir, gsm8k_data_dir, tmp_path):
    """`python -m scripts.eval.evaluate` from another directory, a real (SQLite) MLflow store, JSON output."""
    from mlflow import MlflowClient

    out = tmp_path / "result.json"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [
        sys.executable,
        "-m",
        "scripts.eval.evaluate",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(gsm8k_data_dir / "val.parquet"),
        "--backend",
        "hf",
        "--limit",
        "3",
        "--max-new-tokens",
        "8",
        "--output",
        str(out),
        "--mlflow-experiment",
        "pytest-eval",
    ]
    env = {"MLFLOW_TRACKING_URI": tracking, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(n=3, hf)" in proc.stdout
    result = json.loads(out.read_text())
    assert result["n"] == 3 and len(result["samples"]) == 3
    assert list(result["accuracy"]) == list(REWARDS)  # every registered reward, by its name
    assert all(lo <= result["accuracy"][m] <= hi for m, (lo, hi) in result["ci95"].items())
    assert {"response", "pred_gsm8k_strict", "correct_gsm8k_flexible", "ground_truth"} <= set(result["samples"][0])
    assert result["prompt_version"] and result["created_at"].endswith("+00:00")

    client = MlflowClient(tracking_uri=tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("pytest-eval").experiment_id])
    assert run.data.metrics["val/n"] == 3
    assert run.data.metrics["val/accuracy_gsm8k_strict"] == result["accuracy"]["gsm8k_strict"]
    assert run.data.params["model"] == str(tiny_model_dir)
    assert "eval/val_generations.json" in [a.path for a in client.list_artifacts(run.info.run_id, "eval")]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_says_what_to_do(tiny_model_dir, gsm8k_data_dir, capsys):
    code = cli.main(
        ["--model", str(tiny_model_dir), "--data", str(gsm8k_data_dir / "val.parquet"), "--backend", "vllm"]
    )
    assert code == 2
    assert "--backend hf" in capsys.readouterr().err


def test_auto_backend_is_hf_without_gpu_or_vllm():
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("vllm"):
        pytest.skip("a GPU and vllm are here")
    assert ev.resolve_backend("auto") == "hf"
    with pytest.raises(ValueError, match="choose one of auto, vllm, hf"):
        ev.resolve_backend("tgi")


@pytest.mark.gpu
def test_vllm_and_hf_backends_agree_on_gpu(tiny_model_dir, gsm8k_data_dir, tmp_path):
    pytest.importorskip("vllm")
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    # The tiny model, widened to a head size every vLLM attention backend supports (64).
    config = Qwen2Config.from_pretrained(tiny_model_dir)
    config.update({"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1})
    model_dir = tmp_path / "tiny-qwen2-hd64"
    Qwen2ForCausalLM(config).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(model_dir)

    data = gsm8k_data_dir / "val.parquet"
    vllm_result = ev.evaluate(model_dir, data, backend="vllm", max_new_tokens=16, gpu_memory_utilization=0.3)
    hf_result = ev.evaluate(model_dir, data, backend="hf", max_new_tokens=16)
    assert vllm_result.n == hf_result.n == 4
    assert vllm_result.backend == "vllm" and hf_result.backend == "hf"
    # Both greedy in bf16; the kernels differ, so a tail may diverge, but the starts should agree.
    pairs = zip(vllm_result.samples, hf_result.samples, strict=True)
    assert sum(v["response"][:8] == h["response"][:8] for v, h in pairs) >= 3
