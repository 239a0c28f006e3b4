"""scripts/lib/lora.py: a LoRA checkpoint laid out as verl 0.9.1 saves it (the PEFT module's state dict written by
`save_pretrained(state_dict=...)` into actor/huggingface/, rank and alpha in actor/lora_train_meta.json) becomes a
plain model with the adapter merged, which `from_pretrained` loads without missing keys. The real verl run that
saves such a checkpoint: tests/test_verl_cpu_train.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from scripts.lib import lora
from scripts.lib.checkpoints import rl_hf_model

RANK, ALPHA = 4, 8


def verl_lora_checkpoint(base: Path, experiment: Path, meta: bool = True) -> Path:
    """`experiment/global_step_1/actor/` as verl's FSDPCheckpointManager writes it for a LoRA actor with hf_model,
    with random (non-zero) lora_B so that the merge changes the weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules="all-linear"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    state = {k: v for k, v in peft_model.state_dict().items() if not k.endswith("lm_head.weight")}  # tied: dropped
    actor = experiment / "global_step_1" / "actor"
    hf = actor / "huggingface"
    AutoModelForCausalLM.from_pretrained(base).save_pretrained(hf, state_dict=state)
    AutoTokenizer.from_pretrained(base).save_pretrained(hf)
    (experiment / "latest_checkpointed_iteration.txt").write_text("1")
    if meta:
        (actor / "lora_train_meta.json").write_text(
            json.dumps({"r": RANK, "lora_alpha": ALPHA, "task_type": "CAUSAL_LM"})
        )
    return actor


@pytest.mark.slow
def test_a_verl_lora_checkpoint_is_merged_in_place_into_a_loadable_model(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    actor = verl_lora_checkpoint(tiny_model_dir, tmp_path / "grpo-lora")
    saved = load_file(actor / "huggingface" / "model.safetensors")
    assert lora.is_unmerged(actor / "huggingface")
    _, info = AutoModelForCausalLM.from_pretrained(actor / "huggingface", output_loading_info=True)
    assert info["missing_keys"]  # the trap: as saved, it loads as a random model

    assert rl_hf_model(tmp_path / "grpo-lora") == actor / "huggingface"
    assert not lora.is_unmerged(actor / "huggingface")
    merged, info = AutoModelForCausalLM.from_pretrained(actor / "huggingface", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (actor / "huggingface" / "tokenizer_config.json").is_file()
    adapter = json.loads((actor / "lora_adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["peft_type"]) == (RANK, ALPHA, "LORA")

    key = "model.layers.1.mlp.up_proj"
    a, b = (saved[f"base_model.model.{key}.lora_{x}.default.weight"] for x in "AB")
    expected = saved[f"base_model.model.{key}.base_layer.weight"] + ALPHA / RANK * b @ a
    torch.testing.assert_close(merged.state_dict()[f"{key}.weight"], expected)
    torch.testing.assert_close(merged.model.embed_tokens.weight, saved["base_model.model.model.embed_tokens.weight"])


@pytest.mark.slow
def test_a_full_checkpoint_is_left_alone_and_a_lora_one_without_its_rank_is_refused(tiny_model_dir, tmp_path):
    full = tmp_path / "full" / "actor"
    shutil.copytree(tiny_model_dir, full / "huggingface")
    before = {p.name: p.stat().st_mtime_ns for p in (full / "huggingface").iterdir()}
    assert lora.merge_verl_checkpoint(full) == full / "huggingface"
    assert {p.name: p.stat().st_mtime_ns for p in (full / "huggingface").iterdir()} == before
    assert not (full / "lora_adapter").exists()

    actor = verl_lora_checkpoint(tiny_model_dir, tmp_path / "no-meta", meta=False)
    with pytest.raises(ValueError, match=r"holds LoRA weights but .*lora_train_meta\.json \(rank and alpha\)"):
        lora.merge_verl_checkpoint(actor)
    assert lora.is_unmerged(actor / "huggingface")  # left as it was
