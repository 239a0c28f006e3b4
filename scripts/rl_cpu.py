"""verl 0.9.1 on CPU: a platform, a transformers rollout backend and five small runtime patches.

Loaded by verl itself in every process that imports it (driver, TaskRunner, FSDP workers) when the
launcher runs with N_GPUS=0 (scripts/rl_launch.py sets these; verl_configs/cpu.yaml holds the config):

    VERL_USE_EXTERNAL_MODULES=scripts.rl_cpu   # verl/__init__.py imports this module
    VERL_PLATFORM=cpu                          # verl.plugin.platform picks PlatformCPU below
    PYTHONPATH=<repo root>                     # so Ray workers import it (the containers set /workspace)

Importing it always registers the platform and the `transformers` rollout (scripts/rl_cpu_rollout.py,
imported when verl first asks for it); the patches apply only with VERL_PLATFORM=cpu. Each replaces one
verl 0.9.1 GPU assumption without editing a verl file; `patch_verl` refuses any other verl version, so
a change upstream fails loudly here instead of silently training differently:

1. device id "cpu": PlatformCPU.current_device() (verl passes it to `.to()`; an int would mean cuda:N),
2. backend "cpu:gloo,cpu:gloo": verl joins `cpu:gloo` with `<device>:<backend>`; torch rejects the
   duplicate, so torch.distributed.init_process_group gets it deduplicated,
3. the reference model's FSDP2 CPUOffloadPolicy(pin_memory=True): pinning needs an accelerator,
4. the critic's value-head loader hard-codes flash_attention_2: it loads with the config's attention,
5. VERL_ENGINE_DEVICE=cuda: verl registers its FSDP engine for cuda/npu only; the engine is device
   agnostic (everything it moves goes to get_device_id(), i.e. "cpu").
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from types import ModuleType

import torch

VERL_VERSION = "0.9.1"
PLATFORM = "cpu"
ROLLOUT = "transformers"  # actor_rollout_ref.rollout.name (verl_configs/cpu.yaml)


def _device_module() -> ModuleType:
    """torch.cpu plus the torch.cuda calls verl makes (memory stats are 0, caches no-ops)."""
    mod = ModuleType("verl_cpu_device")
    mod.__getattr__ = lambda name: getattr(torch.cpu, name)  # PEP 562: the rest of torch.cpu
    for name in ("empty_cache", "reset_peak_memory_stats", "set_device", "synchronize", "ipc_collect",
                 "set_per_process_memory_fraction"):  # fmt: skip
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
    """Register PlatformCPU and the transformers rollout with verl's registries (idempotent)."""
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

    # The backend's module imports verl, so it is named here and imported when verl first asks for it.
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    def replica_class():
        from scripts.rl_cpu_rollout import TransformersReplica

        return TransformersReplica

    RolloutReplicaRegistry.register(ROLLOUT, replica_class)
    _ROLLOUT_REGISTRY[(ROLLOUT, "async")] = "scripts.rl_cpu_rollout.ServerAdapter"


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


def patch_verl() -> None:
    """Apply patches 2-5 (idempotent); only for verl 0.9.1."""
    import verl

    if verl.__version__ != VERL_VERSION:
        raise RuntimeError(
            f"scripts/rl_cpu.py patches verl {VERL_VERSION}'s CPU gaps; this is verl {verl.__version__}: "
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


register()
if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM:
    patch_verl()
