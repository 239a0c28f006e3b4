"""vLLM claims a share of a GPU's memory at start: evaluation and the capability check first make sure the share
is free, and name who holds it when it is not, with the RL launcher's check (scripts/lib/gpus.py; the launcher's
own use: tests/test_verl_preflight.py::test_busy_gpu_names_the_process_holding_it).

No GPU here: `nvidia-smi` is a script on PATH answering the two queries as the driver's does (an H100 with a
notebook kernel holding 60 GiB), and CUDA is reported available where the code asks torch.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from scripts.eval import capability_suite, evaluation
from scripts.lib import gpus

H100 = "81559"
BUSY = "GPU-6f1e3c1a-0000-4000-8000-000000000000"
IDLE = "GPU-0b2d4e6f-0000-4000-8000-000000000001"
HOLDER = "pid 4242 /opt/venv/bin/python (61440 MiB)"


@pytest.fixture
def two_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU 0 is held by a notebook kernel (20 GiB free); GPU 1 is idle."""
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(
        "#!/usr/bin/env bash\n"
        'case "$1" in\n'
        f'  --query-gpu=*) echo "0, {BUSY}, {H100}, 20119, NVIDIA H100 80GB HBM3"\n'
        f'                 echo "1, {IDLE}, {H100}, 81000, NVIDIA H100 80GB HBM3" ;;\n'
        f'  --query-compute-apps=*) echo "{BUSY}, 4242, /opt/venv/bin/python, 61440" ;;\n'
        "esac\n"
    )
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{smi.parent}:/usr/bin:/bin")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_evaluation_names_the_process_holding_the_gpu(two_gpus, tiny_model_dir):
    with pytest.raises(gpus.GpuMemoryError) as busy:
        evaluation.generate_vllm(tiny_model_dir, [[{"role": "user", "content": "1+1?"}]])
    msg = str(busy.value)
    assert msg.startswith("GPU 0 has 20119 of 81559 MiB free; vLLM needs --gpu-memory-utilization=0.85 x 81559")
    assert f"Held by: {HOLDER}" in msg and msg.endswith("or lower --gpu-memory-utilization")


def test_the_capability_check_names_it_too(two_gpus, tiny_model_dir):
    suite = capability_suite.load_suite(capability_suite.DEFAULT_SUITE)
    with pytest.raises(gpus.GpuMemoryError, match=f"GPU 0 has 20119 of 81559 MiB free.*Held by: {re.escape(HOLDER)}"):
        capability_suite.run_suite(str(tiny_model_dir), suite, backend="vllm", gpu_memory_utilization=0.85)


def test_the_gpu_cuda_uses_is_the_one_checked(two_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the idle one: vLLM's device 0 is GPU 1
    gpus.require_free(gpus.visible()[:1], 0.85, "--gpu-memory-utilization")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", IDLE)  # by UUID, as CUDA also takes them
    assert [g[0] for g in gpus.visible()] == ["1"]
    gpus.require_free(gpus.visible()[:1], 0.85, "--gpu-memory-utilization")
    gpus.require_free(gpus.visible()[:1], 0.2, "x")  # a share that fits the busy GPU passes there too
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    gpus.require_free(gpus.visible()[:1], 0.2, "--gpu-memory-utilization")
