"""Greedy GSM8K evaluation of one model: accuracy in both reward modes with 95% Wilson intervals.

    python -m scripts.eval.evaluate --model models/sft/<run> --data data/gsm8k/test.parquet          # vLLM, GPU or CPU
    python -m scripts.eval.evaluate --model Qwen/Qwen2.5-0.5B-Instruct --data data/gsm8k/val.parquet \\
        --backend hf --limit 50 --output val.json                                                # transformers

Input: a data/prepare_gsm8k.py RL parquet file (train, val or test). Output (`--output`): JSON with accuracy,
intervals and every generation. How it prompts, decodes and scores: scripts/eval/evaluation.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from data.prompt import PROMPT_VERSION
from scripts.eval.evaluation import BACKENDS, DEFAULT_MAX_NEW_TOKENS, evaluate, log_to_mlflow
from scripts.lib.atomic import atomic_write

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="HF model dir or hub id (e.g. models/sft/<run>)")
    parser.add_argument("--data", required=True, help="parquet from data/prepare_gsm8k.py (test/val/train)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: vllm if it runs here, else hf")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N problems only")
    parser.add_argument("--output", help="write accuracy, intervals and every generation to this JSON file")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--batch-size", type=int, default=64, help="hf backend: prompts per generate call")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vllm backend")
    parser.add_argument("--mlflow-experiment", help="also log a run to MLflow (MLFLOW_TRACKING_URI) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    try:
        result = evaluate(
            args.model,
            args.data,
            backend=args.backend,
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            gpu_memory_utilization=args.gpu_memory_utilization,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        atomic_write(args.output, json.dumps(dataclasses.asdict(result), indent=2) + "\n")
        logger.info("wrote %s", args.output)
    if args.mlflow_experiment:
        import mlflow

        mlflow.set_experiment(args.mlflow_experiment)
        with mlflow.start_run(run_name=f"eval-{Path(str(args.model)).name}-{Path(args.data).stem}"):
            params = {"model": args.model, "data": args.data, "backend": result.backend, "n": result.n}
            mlflow.log_params({**params, "max_new_tokens": args.max_new_tokens, "prompt_version": PROMPT_VERSION})
            mlflow.set_tags({"stage": "eval", "model_path": str(args.model)})
            log_to_mlflow(result, Path(args.data).stem)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
