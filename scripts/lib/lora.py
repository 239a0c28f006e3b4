"""LoRA adapters merged into their base model (peft's merge_and_unload): what a LoRA run hands the next stage.

SFT (notebooks/sft.py, `lora_rank > 0`) saves its adapter with peft and merges it with `merged_model`. RL (verl
0.9.1 with `actor_rollout_ref.model.lora_rank > 0`) saves, with `hf_model` in the checkpoint's save_contents,
the PEFT module's whole state dict into `global_step_N/actor/huggingface/` (keys
`base_model.model.<name>.base_layer.weight`, `...lora_A.default.weight`): `from_pretrained` finds none of its
weights there and loads a random model with only a warning. `merge_verl_checkpoint` turns such a folder into the
merged model (and keeps the adapter beside it, in `actor/lora_adapter/`); scripts/lib/checkpoints.py `rl_hf_model`
and scripts/export_checkpoint.sh call it, so evaluation and the next stage load a LoRA run's checkpoint as they
load a full one's.

    bash scripts/export_checkpoint.sh models/rl/<experiment>    # merge the newest checkpoint in place
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.lib.atomic import atomic_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."  # peft's wrapper around the model: every key of a PEFT module's state dict
META = "lora_train_meta.json"  # verl writes a LoRA actor's rank and alpha there, beside huggingface/
ADAPTER_DIR = "lora_adapter"  # beside verl's huggingface/ in global_step_N/actor/, as verl's model merger names it
WEIGHTS = ("*.safetensors", "model.safetensors.index.json", "config.json")  # what a merge rewrites in huggingface/


def merged_model(base: str | Path, adapter: str | Path) -> PreTrainedModel:
    """The base model (fp32, on CPU) with the peft adapter saved in `adapter` merged into its weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    logger.info("merged the LoRA adapter %s into %s", adapter, base)
    return merged


def _safetensors(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def is_unmerged(folder: Path) -> bool:
    """True when `folder`'s safetensors hold a PEFT module's state dict (verl's LoRA hf_model), not a model's."""
    from safetensors import safe_open

    for file in _safetensors(folder):
        with safe_open(file, "pt") as f:
            return any(key.startswith(PEFT_PREFIX) for key in f.keys())  # noqa: SIM118  (safe_open has no __iter__)
    return False


def merge_verl_checkpoint(actor: Path) -> Path:
    """Replace verl's LoRA `actor/huggingface/` (the PEFT state dict) with the merged model, in its dtype, and save
    the adapter to `actor/lora_adapter/`; both written whole beside themselves and swapped in. Returns the
    huggingface/ folder. A folder already merged is left alone. ValueError says what does not fit."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    hf = actor / "huggingface"
    if not is_unmerged(hf):
        return hf
    meta_file = actor / META
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        rank, alpha = int(meta["r"]), int(meta["lora_alpha"])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{hf} holds LoRA weights but {meta_file} (rank and alpha) is unreadable: {exc!r}") from None
    state: dict[str, torch.Tensor] = {}
    for file in _safetensors(hf):
        state |= load_file(file)
    targets = sorted({key.split(".lora_A.")[0].rsplit(".", 1)[-1] for key in state if ".lora_A." in key})
    if not targets:
        raise ValueError(f"{hf} holds a PEFT state dict without lora_A weights: not a LoRA checkpoint this can merge")
    dtype = next(iter(state.values())).dtype
    config = AutoConfig.from_pretrained(hf)
    base = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # merged in fp32, saved in the file's dtype
    adapter = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, adapter)
    missing, unexpected = peft_model.load_state_dict(state, strict=False)
    tied = {f"{PEFT_PREFIX}{key}" for key in getattr(base, "_tied_weights_keys", None) or ()}
    if unexpected or set(missing) - tied:
        raise ValueError(
            f"{hf}: the LoRA state dict does not fit {config.architectures} with r={rank} on {targets} "
            f"(missing {sorted(set(missing) - tied)[:4]}, unexpected {unexpected[:4]})"
        )
    with atomic_dir(actor / ADAPTER_DIR, replace=True) as tmp:
        peft_model.save_pretrained(tmp)
    merged = peft_model.merge_and_unload().to(dtype)
    merged.tie_weights()
    with atomic_dir(hf, replace=True) as tmp:
        for item in hf.iterdir():  # tokenizer, chat template, generation config: as verl saved them
            if item.is_file() and not any(item.match(pattern) for pattern in WEIGHTS):
                shutil.copy2(item, tmp / item.name)
        merged.save_pretrained(tmp)
    logger.info("merged the LoRA adapter (r=%d, alpha=%d, %s) into %s", rank, alpha, ",".join(targets), hf)
    return hf
