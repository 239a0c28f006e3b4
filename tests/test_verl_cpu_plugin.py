"""scripts/rl_cpu.py inside verl 0.9.1 (.venv-verl, as the trainer's processes load it): each patch, the registries.

One subprocess imports verl the way verl's workers do on CPU (VERL_USE_EXTERNAL_MODULES=scripts.rl_cpu,
VERL_PLATFORM=cpu, the repo root on PYTHONPATH) and reports what verl then does at each place a GPU
was assumed. tests/test_verl_cpu_train.py runs the whole trainer with it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VERL_PYTHON = REPO / ".venv-verl" / "bin" / "python"

PROBE = r"""
import json, os, sys
import torch, torch.distributed as dist
import verl
from verl.utils.device import get_device_id, get_device_name, get_torch_device
from verl.workers.engine.base import EngineRegistry
from verl.workers.rollout.base import get_rollout_class
from verl.workers.rollout.replica import get_rollout_replica_class
import verl.workers.engine.fsdp.transformer_impl as fsdp_impl
import verl.utils.model
from transformers import AutoConfig

out = {"device": [get_device_name(), get_device_id()], "memory": get_torch_device().memory_allocated()}
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
dist.init_process_group("cpu:gloo,cpu:gloo", rank=0, world_size=1)      # what verl builds on CPU
out["backend"] = dist.get_backend()
out["pin_memory"] = fsdp_impl.CPUOffloadPolicy(pin_memory=True).pin_memory
cfg = AutoConfig.from_pretrained(sys.argv[1], attn_implementation="sdpa")
critic = verl.utils.model.load_valuehead_model(sys.argv[1], torch.float32, cfg, False)
out["critic"] = [type(critic).__name__, critic.config._attn_implementation]
out["engine"] = EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__
out["rollout"] = [get_rollout_replica_class("transformers").__name__, get_rollout_class("transformers").__name__]
import scripts.rl_cpu as plugin
verl.__version__ = "0.9.2"
try:
    plugin.patch_verl()
except RuntimeError as exc:
    out["other_version"] = str(exc)
print("PROBE " + json.dumps(out))
"""


@pytest.mark.slow
def test_verl_on_cpu_through_its_extension_points(tiny_model_dir, tmp_path):
    if not VERL_PYTHON.is_file():
        pytest.fail(f"{VERL_PYTHON} is missing: `make venv-verl` builds the CPU verl environment (make test does)")
    from tests.mlflow_server import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "RAY_"))}
    env.update(VERL_USE_EXTERNAL_MODULES="scripts.rl_cpu", VERL_PLATFORM="cpu", PYTHONPATH=str(REPO))
    result = subprocess.run([str(VERL_PYTHON), "-c", PROBE, str(tiny_model_dir), str(free_port())], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.split("PROBE ", 1)[1])
    assert out["device"] == ["cpu", "cpu"] and out["memory"] == 0  # patch 1: "cpu", never cuda:0
    assert out["backend"] == "cpu:gloo"  # patch 2: torch refuses "cpu:gloo,cpu:gloo"
    assert out["pin_memory"] is False  # patch 3: pinning needs an accelerator
    assert out["critic"] == ["Qwen2ForTokenClassification", "sdpa"]  # patch 4: not flash_attention_2
    assert out["engine"] == "FSDPEngineWithLMHead"  # patch 5: verl's FSDP engine on a "cpu" device
    assert out["rollout"] == ["TransformersReplica", "ServerAdapter"]
    assert "patches verl 0.9.1's CPU gaps; this is verl 0.9.2" in out["other_version"]
