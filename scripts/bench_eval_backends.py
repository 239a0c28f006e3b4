"""GSM8K evaluation throughput on this machine: vLLM against transformers (HF), on the same problems, in one run.

    .venv-verl/bin/python -m scripts.bench_eval_backends                # `make bench` runs it
    .venv-verl/bin/python -m scripts.bench_eval_backends --model DIR --problems 64 --max-new-tokens 128

Both backends run what scripts/evaluate.py runs (scripts/lib/evaluation.py: the chat template, greedy decoding,
fp32 on CPU), on the fixture's GSM8K questions repeated to `--problems`. Without `--model` the model is a random
Qwen2 built offline at a size where generation, not start-up, dominates (~30M parameters; random weights rarely
stop early, so both backends write about `--max-new-tokens` tokens per problem). Prints problems/s and tokens/s
for each, start-up included (model load; for vLLM the engine), and the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from data.prompt import user_message
from scripts.lib import evaluation, vllm_cpu
from scripts.lib.tiny_model import FIXTURE, build_tokenizer


def build_bench_model(output_dir: Path) -> Path:
    """A random Qwen2 of ~30M parameters (head_dim 64) with the tiny model's ChatML tokenizer."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def run(backend: str, model: Path, conversations, max_new_tokens: int, tokenizer) -> dict[str, float]:
    start = time.monotonic()
    if backend == "vllm":
        responses = evaluation.generate_vllm(model, conversations, max_new_tokens)
    else:
        responses = evaluation.generate_hf(model, conversations, max_new_tokens, batch_size=len(conversations))
    seconds = time.monotonic() - start
    tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses)
    return {"seconds": seconds, "problems_per_s": len(responses) / seconds, "tokens_per_s": tokens / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local HF model folder (default: a ~30M random Qwen2)")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    why_not = vllm_cpu.unavailable(cuda=torch.cuda.is_available())
    if why_not:
        print(f"bench_eval_backends: vLLM cannot run here ({why_not}): nothing to compare")
        return 0
    questions = [json.loads(line)["question"] for line in FIXTURE.read_text().splitlines() if line.strip()]
    conversations = [[user_message(questions[i % len(questions)])] for i in range(args.problems)]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_bench_model(Path(tmp) / "bench-qwen2")
        tokenizer = AutoTokenizer.from_pretrained(model)
        results = {b: run(b, model, conversations, args.max_new_tokens, tokenizer) for b in ("hf", "vllm")}
    print(f"GSM8K evaluation, {args.problems} problems x <= {args.max_new_tokens} new tokens, greedy, {model.name}")
    for backend, r in results.items():
        print(
            f"  {backend:<5} {r['problems_per_s']:7.2f} problems/s  {r['tokens_per_s']:8.0f} tokens/s  "
            f"({r['seconds']:.1f} s, start-up included)"
        )
    ratio = results["vllm"]["problems_per_s"] / results["hf"]["problems_per_s"]
    print(f"  vllm / hf: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
