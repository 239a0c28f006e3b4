"""vLLM's start-up with and without its compile caches, as the stack keeps them on the cache volume, in one run.

    .venv-verl/bin/python -m scripts.bench.compile_cache          # `make bench` runs it
    .venv-verl/bin/python -m scripts.bench.compile_cache --model DIR

docker-compose.yml points VLLM_CACHE_ROOT, TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR at the Hugging Face volume
so that a recreated container starts warm. Each case here is a new process that starts vLLM as evaluation does
(scripts/eval/evaluation.py generate_vllm: one greedy answer), timed from process start to exit:
  cold     empty cache folders (a new volume)
  warm     the folders the cold run filled (a second launch, a recreated container)
  disabled the same warm folders with VLLM_DISABLE_COMPILE_CACHE=1, what verl 0.9.1 sets for its Ray actors
           (verl/trainer/constants_ppo.py), so what every RL rollout start gets
On CPU, evaluation and the RL rollout run vLLM eager (enforce_eager: no model compile, minutes on a laptop), so
only what vLLM's CPU backend still compiles (its sampler ops through torch.compile) can be cached there; on a
GPU the model's torch.compile and CUDA graph capture are cached too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.lib import vllm_cpu
from scripts.lib.tiny_model import build_tiny_model

CACHES = ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
START = """
import sys
from data.prompt import user_message
from scripts.eval import evaluation
evaluation.generate_vllm(sys.argv[1], [[user_message("Tom has 3 apples and buys 2 more. How many?")]], 8)
"""


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def start(model: Path, caches: Path, **extra: str) -> float:
    """Seconds for a new process to start vLLM with these cache folders and answer once."""
    env = os.environ | {name: str(caches / name.lower()) for name in CACHES} | extra
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", START, str(model)], env=env, check=True, capture_output=True)
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local HF model folder (default: the tiny random Qwen2)")
    args = parser.parse_args(argv)
    import torch

    if why_not := vllm_cpu.unavailable(cuda=torch.cuda.is_available()):
        print(f"compile_cache: vLLM cannot run here ({why_not}): nothing to measure")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_model(Path(tmp) / "tiny-qwen2")
        caches = Path(tmp) / "caches"
        cold = start(model, caches)
        sizes = {name: size_mb(caches / name.lower()) for name in CACHES}
        warm = start(model, caches)
        disabled = start(model, caches, VLLM_DISABLE_COMPILE_CACHE="1")
    device = "GPU" if torch.cuda.is_available() else "CPU"
    print(f"vLLM start-up and one answer, a new process each, {model.name} on {device}")
    print(f"  cold     {cold:6.1f} s   caches after it: " + ", ".join(f"{k} {v:.1f} MB" for k, v in sizes.items()))
    print(f"  warm     {warm:6.1f} s   ({cold - warm:+.1f} s against cold)")
    print(f"  disabled {disabled:6.1f} s   ({cold - disabled:+.1f} s; VLLM_DISABLE_COMPILE_CACHE=1: verl's RL actors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
