"""Capability check of one model: general benchmarks (scripts/eval/capability.yaml) through lm-evaluation-harness.

    python -m scripts.eval.capability --model models/sft/<run> --output models/eval/sft.capability.json   # vLLM
    python -m scripts.eval.capability --model <dir> --backend hf --suite <suite.yaml> --output out.json  # transformers
    python -m scripts.eval.capability --prefetch     # download the suite's data into the HF cache (setup profile)

scripts.eval.run_all runs it once per model, in its own process, so vLLM frees the GPU when it exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from scripts.eval.capability_suite import DEFAULT_SUITE, load_suite, prefetch_suite, run_suite
from scripts.eval.evaluation import BACKENDS, resolve_backend
from scripts.lib.atomic import atomic_write
from scripts.lib.gpus import GpuMemoryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="HF model dir or hub id")
    parser.add_argument("--output", help="JSON file: {task: {metric, value, stderr, n}}")
    parser.add_argument("--prefetch", action="store_true", help="only download the suite's data, then exit")
    parser.add_argument("--suite", default=str(DEFAULT_SUITE), help="tasks, few-shot settings and limits")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: vllm if it runs here, else hf")
    parser.add_argument("--batch-size", type=int, default=8, help="hf backend: requests per forward pass")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vllm backend on a GPU")
    args = parser.parse_args(argv)
    if not args.prefetch and not (args.model and args.output):
        parser.error("--model and --output are required (or --prefetch)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        suite = load_suite(args.suite)
        if args.prefetch:
            print("capability suite data cached:", ", ".join(prefetch_suite(suite)))
            return 0
        backend = resolve_backend(args.backend)
        share = args.gpu_memory_utilization
        results = run_suite(args.model, suite, backend, batch_size=args.batch_size, gpu_memory_utilization=share)
    except (OSError, ValueError, GpuMemoryError) as exc:
        print(f"capability.py: error: {exc}", file=sys.stderr)
        return 2
    payload = {"model": args.model, "suite": suite, "tasks": results}
    atomic_write(args.output, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
