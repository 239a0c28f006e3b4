"""Free GPU memory before vLLM claims its share of it, and who holds it when it is not free (nvidia-smi).

vLLM pre-allocates `gpu_memory_utilization` x a GPU's memory at start. With less free (a notebook kernel left
running after SFT, another job, a second evaluation) it fails minutes later with a CUDA out-of-memory error that
names no one. The RL launcher (scripts/rl/preflight.py), evaluation (scripts/eval/evaluation.py) and the
capability check (scripts/eval/capability_suite.py) ask here first; the SFT notebook's memory check
(notebooks/sft_memory.py) names who holds a GPU it finds full.
"""

from __future__ import annotations

import os
import shutil
import subprocess


class GpuMemoryError(RuntimeError):
    """A GPU has less memory free than vLLM is about to claim; the message names who holds it."""


def smi(*query: str) -> list[list[str]]:
    """nvidia-smi's CSV rows ([] without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(
        ["nvidia-smi", *query, "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [[f.strip() for f in line.split(",")] for line in out.stdout.splitlines() if line.strip()]


def visible() -> list[list[str]]:
    """The GPUs this process may use, in CUDA's order: [index, uuid, MiB total, MiB free, name] each."""
    gpus = smi("--query-gpu=index,uuid,memory.total,memory.free,name")
    devices = os.environ.get("CUDA_VISIBLE_DEVICES", "all").strip()
    if devices in ("", "all"):
        return gpus
    ids = [d.strip() for d in devices.split(",") if d.strip()]
    by_id = {g[0]: g for g in gpus} | {g[1]: g for g in gpus}  # index or UUID, as CUDA takes them
    # Ids nvidia-smi does not list (a container numbers its GPUs from 0): as many as named, in its order.
    return [by_id[d] for d in ids] if all(d in by_id for d in ids) else gpus[: len(ids)]


def holders(uuid: str) -> str:
    """The processes holding memory on the GPU `uuid`: "pid 123 python (4000 MiB); ..." ("" when none is seen)."""
    apps = smi("--query-compute-apps=gpu_uuid,pid,process_name,used_memory")
    return "; ".join(f"pid {pid} {name} ({used} MiB)" for gpu, pid, name, used in apps if gpu == uuid)


def require_free(gpus: list[list[str]], ratio: float, knob: str) -> None:
    """Each of `gpus` has `ratio` of its memory free, else GpuMemoryError naming the GPU, the numbers, the
    processes holding it and `knob` (the setting that lowers the share)."""
    for index, uuid, total, free, _ in gpus:
        if float(free) < (need := ratio * float(total)):
            raise GpuMemoryError(
                f"GPU {index} has {float(free):.0f} of {float(total):.0f} MiB free; vLLM needs {knob}={ratio} x "
                f"{float(total):.0f} = {need:.0f} MiB free. Held by: "
                f"{holders(uuid) or 'a process nvidia-smi cannot see (another container?)'}. Stop it (a notebook "
                f"kernel left running is the usual one: Kernel > Shut Down) or lower {knob}"
            )
