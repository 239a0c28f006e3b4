"""GSM8K evaluation throughput on this machine: vLLM against transformers (HF), on the same problems, in one run.

    .venv-verl/bin/python -m scripts.bench.eval_backends                # `make bench` runs it
    .venv-verl/bin/python -m scripts.bench.eval_backends --model DIR --problems 64 --max-new-tokens 128

Both backends run what scripts/eval/evaluate.py runs (scripts/eval/evaluation.py: the chat template, greedy decoding,
fp32 on CPU), on the fixture's GSM8K questions repeated to `--problems`. Without `--model` the model is a random
Qwen2 built offline at a size where generation, not start-up, dominates (~30M parameters; random weights rarely
stop early, so both backends write about `--max-new-tokens` tokens per problem). Each backend runs twice, on one
problem and on all of them: the first run is its start-up (model load; for vLLM the engine), the difference is
its generation. Prints both, end-to-end problems/s, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from data.prompt import user_message
from scripts.eval import evaluation
from scripts.lib import vllm_cpu
from scripts.lib.tiny_model import FIXTURE, build_tiny_model


def build_bench_model(output_dir: Path) -> Path:
    """A random Qwen2 of ~30M parameters (head_dim 64) with the tiny model's ChatML tokenizer."""
    sizes = {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8}
    return build_tiny_model(output_dir, num_key_value_heads=2, **sizes)


def run(backend: str, model: Path, conversations, max_new_tokens: int) -> float:
    """Seconds for one evaluation's generation, start-up included."""
    start = time.monotonic()
    if backend == "vllm":
        evaluation.generate_vllm(model, conversations, max_new_tokens)
    else:
        evaluation.generate_hf(model, conversations, max_new_tokens, batch_size=len(conversations))
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local HF model folder (default: a ~30M random Qwen2)")
    parser.add_argument("--problems", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    import torch

    why_not = vllm_cpu.unavailable(cuda=torch.cuda.is_available())
    if why_not:
        print(f"eval_backends: vLLM cannot run here ({why_not}): nothing to compare")
        return 0
    questions = [json.loads(line)["question"] for line in FIXTURE.read_text().splitlines() if line.strip()]
    conversations = [[user_message(questions[i % len(questions)])] for i in range(args.problems)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_bench_model(Path(tmp) / "bench-qwen2")
        for backend in ("hf", "vllm"):
            one = run(backend, model, conversations[:1], args.max_new_tokens)
            every = run(backend, model, conversations, args.max_new_tokens)
            results[backend] = (one, every, (len(conversations) - 1) / max(every - one, 1e-9))
    print(f"GSM8K evaluation, {args.problems} problems x <= {args.max_new_tokens} new tokens, greedy, {model.name}")
    for backend, (one, every, rate) in results.items():
        print(
            f"  {backend:<5} start-up {one:6.1f} s   generation {rate:7.2f} problems/s   "
            f"end to end {args.problems / every:6.2f} problems/s ({every:.1f} s)"
        )
    hf, vllm = results["hf"], results["vllm"]
    print(f"  vllm / hf: generation {vllm[2] / hf[2]:.2f}x, end to end {hf[1] / vllm[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
