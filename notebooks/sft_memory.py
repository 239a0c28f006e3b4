"""Does an SFT run fit its device? The memory the notebook's run holds from its first step to its last, checked
before anything loads: a run that cannot fit stops in a second, with the numbers and what would fit, not after a
28 GiB download and an out-of-memory error minutes into training.

The notebook trains in one process on one device: GPU 0, else the host's memory. Per parameter of the model
(scripts.lib.model_presets.Arch: a preset's shapes, or the model's config.json):

- full fine-tuning: fp32 weights 4 B (notebooks/sft.py loads fp32 master weights; bf16 is autocast only), their
  fp32 gradients 4 B and AdamW's two fp32 moments 8 B: 16 B.
- LoRA (lora_rank > 0): the frozen fp32 base, 4 B; plus the adapter's weights, gradients and AdamW moments, 16 B per
  adapter parameter (peft keeps adapters in fp32): rank x (in + out) per targeted projection per layer.
- QLoRA (quantization="4bit"): the decoder's linear weights in NF4, 4 bits plus the double-quantised block
  constants (8 bits per 64 weights and 32 bits per 256 blocks: 0.127 bits), NF4_BYTES; everything else (embeddings,
  the LM head, norms, biases) in bf16, 2 B; plus the adapter as for LoRA.
- on a GPU, CUDA_CONTEXT_GIB: the CUDA context and cuBLAS workspaces.

That is a lower bound. Activations and logits (per_device_train_batch_size x max_length tokens) come on top; they
are what gradient_checkpointing and the batch size trade. So a run refused here cannot fit, and one accepted still
may not: the line says how much is left for activations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.lib import gpus, model_presets
from scripts.lib.model_presets import Arch

if TYPE_CHECKING:
    from notebooks.sft import SFTRunConfig

GIB = 2**30
FP32_BYTES = 4  # a weight or a gradient (full fine-tuning; LoRA's frozen base)
ADAM_BYTES = 8  # AdamW's two fp32 moments
ADAPTER_BYTES = 2 * FP32_BYTES + ADAM_BYTES  # an fp32 adapter weight, its gradient and its moments
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # QLoRA's 4-bit weight with its double-quantised block constants
BF16_BYTES = 2  # what QLoRA leaves unquantised
CUDA_CONTEXT_GIB = 1.0
SUGGESTED_RANK = 16  # the rank the LoRA alternative is costed at when the run is not LoRA already


class DoesNotFitError(RuntimeError):
    """An SFT run's states alone are more than its device has free; the message has the numbers and what fits."""


@dataclass(frozen=True)
class Device:
    name: str  # "GPU 0 (NVIDIA H100 80GB HBM3)" or "host memory"
    total_gib: float
    free_gib: float
    gpu: bool
    holders: str = ""  # on a GPU: the processes holding its memory, as nvidia-smi names them


def adapter_params(arch: Arch, rank: int, target_modules: str | list) -> int:
    """LoRA's parameter count: rank x (in + out) per targeted projection, per layer ("all-linear": every
    projection, not the LM head, as peft does). Names that are not projections add nothing."""
    shapes = arch.projections()
    if target_modules == "all-linear":
        names = list(shapes)
    elif isinstance(target_modules, str):  # peft: a regular expression the whole module name matches
        full = {n: f"model.layers.0.{'self_attn' if n[0] in 'qkvo' else 'mlp'}.{n}" for n in shapes}
        names = [n for n in shapes if re.fullmatch(target_modules, full[n])]
    else:  # peft: a name or the end of one
        names = [n for n in shapes if any(n == t or t.endswith("." + n) for t in target_modules)]
    return arch.layers * sum(rank * sum(shapes[n]) for n in names)


def need(arch: Arch, *, lora_rank: int, target_modules: str | list, quantization: str | None, gpu: bool) -> dict:
    """What the run holds for its whole length, GiB by part (the module docstring's formula)."""
    adapter = adapter_params(arch, lora_rank, target_modules) if lora_rank else 0
    if quantization == "4bit":
        linear = arch.layers * sum(i * o for i, o in arch.projections().values())
        parts = {
            "NF4 linear weights": linear * NF4_BYTES,
            "bf16 embeddings, LM head and norms": (arch.params - linear) * BF16_BYTES,
        }
    elif lora_rank:
        parts = {"frozen fp32 weights": arch.params * FP32_BYTES}
    else:
        parts = {
            "fp32 weights": arch.params * FP32_BYTES,
            "gradients": arch.params * FP32_BYTES,
            "AdamW moments": arch.params * ADAM_BYTES,
        }
    if adapter:
        parts[f"adapter ({adapter / 1e6:.1f}M parameters, with gradients and moments)"] = adapter * ADAPTER_BYTES
    gib = {part: size / GIB for part, size in parts.items()}
    return gib | ({"CUDA context": CUDA_CONTEXT_GIB} if gpu else {})


def method(lora_rank: int, quantization: str | None) -> str:
    if quantization == "4bit":
        return f"QLoRA (rank {lora_rank}, 4-bit base)"
    return f"LoRA (rank {lora_rank})" if lora_rank else "full fine-tuning"


def host_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> Device:
    """The host's memory: MemTotal and MemAvailable, capped by this container's cgroup v2 limit when it has one."""
    fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
    total, free = (int(fields[key].split()[0]) * 1024 for key in ("MemTotal", "MemAvailable"))
    try:
        limit, current = ((cgroup / name).read_text().strip() for name in ("memory.max", "memory.current"))
    except OSError:  # no cgroup v2 files here (cgroup v1, or not mounted): the kernel's numbers stand
        limit = "max"
    if limit != "max":
        total, free = min(total, int(limit)), min(free, int(limit) - int(current))
    return Device("host memory (no GPU)", total / GIB, max(free, 0) / GIB, gpu=False)


def device() -> Device | None:
    """GPU 0 as nvidia-smi sees it (no CUDA context is made: vLLM's evaluation may still fork), else the host's
    memory; None for a GPU nvidia-smi cannot see."""
    import torch

    if not torch.cuda.is_available():
        return host_memory()
    visible = gpus.visible()[:1]
    if not visible:
        return None
    index, uuid, total, free, name = visible[0]
    mib = 2**20 / GIB
    return Device(f"GPU {index} ({name})", float(total) * mib, float(free) * mib, gpu=True, holders=gpus.holders(uuid))


def check(cfg: SFTRunConfig, dev: Device | None = None) -> str:
    """One line: what `cfg`'s run holds and what its device has free. DoesNotFitError, with the options that fit,
    when the run's states alone are more than that."""
    arch, source = model_presets.arch_of(cfg.model_path)
    dev = dev or device()
    if arch is None or dev is None:
        return f"memory: not estimated ({source if arch is None else 'nvidia-smi does not list GPU 0'})"
    parts = need(
        arch,
        lora_rank=cfg.lora_rank,
        target_modules=cfg.lora_target_modules,
        quantization=cfg.quantization,
        gpu=dev.gpu,
    )
    total = sum(parts.values())
    line = (
        f"memory: {method(cfg.lora_rank, cfg.quantization)} of {cfg.model_path} ({arch.params / 1e9:.2f}B "
        f"parameters, shapes from {source}) holds {total:.1f} GiB before activations "
        f"({', '.join(f'{part} {gib:.1f}' for part, gib in parts.items())}); {dev.name} has {dev.free_gib:.1f} of "
        f"{dev.total_gib:.1f} GiB free"
    )
    if total <= dev.free_gib:
        return f"{line}: {dev.free_gib - total:.1f} GiB left for activations"
    if total <= dev.total_gib:
        held = f"held by {dev.holders}" if dev.holders else "held by other processes"
        raise DoesNotFitError(
            f"{line}. The rest is {held}: stop them (a kernel left running after an earlier run: Kernel > Shut "
            "Down Kernel; `nvidia-smi` lists them) and run this cell again"
        )
    raise DoesNotFitError(f"{line}: it cannot fit this device. {alternatives(cfg, arch, dev)}")


def alternatives(cfg: SFTRunConfig, arch: Arch, dev: Device) -> str:
    """The ways to run that fit `dev`'s free memory, with their numbers: an adapter, a 4-bit base (GPU), a smaller
    preset trained the same way."""
    rank = cfg.lora_rank or SUGGESTED_RANK
    options = []
    if not cfg.lora_rank:
        options.append((f"lora_rank = {rank} (LoRA)", rank, None, arch))
    if dev.gpu and cfg.quantization is None:
        options.append((f'lora_rank = {rank}, quantization = "4bit" (QLoRA)', rank, "4bit", arch))
    for preset in map(model_presets.preset, model_presets.names()):
        if preset.arch.params < arch.params:
            options.append((f'model = "{preset.name}"', cfg.lora_rank, cfg.quantization, preset.arch))
    fits = []
    for knobs, lora_rank, quantization, shapes in options:
        total = sum(
            need(
                shapes,
                lora_rank=lora_rank,
                target_modules=cfg.lora_target_modules,
                quantization=quantization,
                gpu=dev.gpu,
            ).values()
        )
        if total <= dev.free_gib:
            fits.append(f"{knobs}: {total:.1f} GiB")
    if not fits:
        return "Nothing smaller that this notebook offers fits it either: use a device with more memory"
    return f"These fit, before activations (set them in the parameters cell, or papermill -p): {'; '.join(fits)}"
