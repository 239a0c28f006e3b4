"""notebooks/sft_memory.py: the SFT notebook's memory check refuses, before any model loads, a run whose states
cannot fit its device, with the numbers and the options that fit; its counts are transformers' and peft's own on a
real model. (The notebook prints the check's line: tests/test_sft_notebook.py.)"""

from __future__ import annotations

import json
import re

import pytest

from notebooks import sft, sft_memory
from scripts.lib import model_presets
from scripts.lib.model_presets import Arch

H100 = sft_memory.Device("GPU 0 (NVIDIA H100 80GB HBM3)", 79.6, 79.1, gpu=True)
H200 = sft_memory.Device("GPU 0 (NVIDIA H200)", 140.4, 139.9, gpu=True)


def cfg(**overrides) -> sft.SFTRunConfig:
    return sft.SFTRunConfig.from_notebook(run_name="memory-test", **overrides)


def test_7b_full_fine_tuning_is_refused_on_an_h100_naming_the_numbers_and_what_fits():
    with pytest.raises(sft_memory.DoesNotFitError) as refused:
        sft_memory.check(cfg(model="qwen2.5-7b"), H100)
    message = str(refused.value)
    # 7,615,616,512 parameters x 4 B = 28.4 GiB each for weights and gradients, x 8 B = 56.7 GiB of AdamW moments
    assert "fp32 weights 28.4, gradients 28.4, AdamW moments 56.7, CUDA context 1.0" in message
    assert "holds 114.5 GiB" in message and "79.1 of 79.6 GiB free" in message and "cannot fit" in message
    assert "lora_rank = 16 (LoRA): 30.0 GiB" in message
    assert 'lora_rank = 16, quantization = "4bit" (QLoRA): 6.8 GiB' in message
    assert 'model = "qwen2.5-3b": 47.0 GiB' in message


def test_the_options_it_offers_pass_the_same_check():
    assert "49.1 GiB left for activations" in sft_memory.check(cfg(model="qwen2.5-7b", lora_rank=16), H100)
    assert "left for activations" in sft_memory.check(cfg(model="qwen2.5-3b"), H100)
    line = sft_memory.check(cfg(model="qwen2.5-7b"), H200)  # a 141 GB H200 holds 7B's full fine-tuning
    assert line.startswith("memory: full fine-tuning of Qwen/Qwen2.5-7B-Instruct (7.62B parameters")


def test_without_a_gpu_qlora_is_not_offered_and_nothing_fitting_says_so():
    laptop = sft_memory.Device("host memory (no GPU)", 15.5, 12.0, gpu=False)
    with pytest.raises(sft_memory.DoesNotFitError) as refused:
        sft_memory.check(cfg(model="qwen2.5-7b"), laptop)
    message = str(refused.value)
    assert "4bit" not in message and "CUDA context" not in message  # QLoRA needs CUDA; no context on a CPU
    assert (
        'These fit, before activations (set them in the parameters cell, or papermill -p): model = "qwen2.5-0.5b"'
        in (message)
    )
    tiny = sft_memory.Device("host memory (no GPU)", 2.0, 1.0, gpu=False)  # LoRA on 0.5B: 1.9 GiB
    with pytest.raises(sft_memory.DoesNotFitError, match="Nothing smaller that this notebook offers fits"):
        sft_memory.check(cfg(model="qwen2.5-1.5b", lora_rank=8), tiny)


def test_a_gpu_that_would_fit_but_is_held_names_who_holds_it():
    busy = sft_memory.Device(
        "GPU 0 (NVIDIA H100 80GB HBM3)", 79.6, 20.0, gpu=True, holders="pid 4242 python (61000 MiB)"
    )
    with pytest.raises(sft_memory.DoesNotFitError) as refused:
        sft_memory.check(cfg(model="qwen2.5-3b"), busy)
    message = str(refused.value)
    assert "held by pid 4242 python (61000 MiB)" in message and "Kernel > Shut Down Kernel" in message
    assert "These fit" not in message  # the model fits the GPU: the advice is to free it, not to shrink the run


def test_the_counts_are_transformers_and_pefts_own_on_a_real_model(tiny_model_dir):
    """Arch.from_config counts the parameters transformers loads; the NF4 share is the decoder's nn.Linear
    weights bitsandbytes quantizes; the adapter is what peft trains, for each way of naming its targets."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    arch = Arch.from_config(json.loads((tiny_model_dir / "config.json").read_text()))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert arch.params == model.num_parameters()
    decoder_linear = sum(
        m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name
    )
    assert arch.layers * sum(i * o for i, o in arch.projections().values()) == decoder_linear
    for targets in ("all-linear", ["q_proj", "v_proj"], r".*\.(gate|down)_proj"):
        peft_model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=targets)
        )
        trainable, _ = peft_model.get_nb_trainable_parameters()
        assert sft_memory.adapter_params(arch, 4, targets) == trainable, targets


def test_a_folder_is_measured_by_its_config_and_an_unknown_model_is_said_not_estimated(tmp_path, tiny_model_dir):
    line = sft_memory.check(cfg(model=str(tiny_model_dir)), H100)
    assert re.search(r"shapes from .*config\.json\) holds \d+\.\d GiB", line), line
    assert sft_memory.check(cfg(model="nobody/no-such-model"), H100) == (
        "memory: not estimated (no config.json for nobody/no-such-model (not a preset, a folder, or a hub model in "
        "the local cache))"
    )
    missing = tmp_path / "no-such-folder"  # neither a folder nor a hub id: said, and the data check names it
    assert sft_memory.check(cfg(model=str(missing)), H100).startswith(
        f"memory: not estimated (no config.json for {missing}"
    )
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    assert "is not a Qwen2-style config (KeyError: 'num_attention_heads')" in sft_memory.check(
        cfg(model=str(tmp_path)), H100
    )


def test_every_presets_shapes_give_its_own_count_through_from_config():
    for preset in map(model_presets.preset, model_presets.names()):
        arch = preset.arch
        config = {
            "num_hidden_layers": arch.layers,
            "hidden_size": arch.hidden,
            "intermediate_size": arch.intermediate,
            "num_attention_heads": arch.heads,
            "num_key_value_heads": arch.kv_heads,
            "vocab_size": arch.vocab,
            "tie_word_embeddings": arch.tied_embeddings,
        }
        assert Arch.from_config(config) == arch, preset.name


def test_host_memory_is_the_kernels_and_a_cgroup_limit_caps_it(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32768000 kB\nMemFree:  1000 kB\nMemAvailable:   16384000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("max\n")
    (cgroup / "memory.current").write_text("0\n")
    assert sft_memory.host_memory(meminfo, cgroup).total_gib == pytest.approx(32768000 / 2**20)
    no_cgroup_v2 = sft_memory.host_memory(meminfo, tmp_path / "absent")  # cgroup v1: the kernel's numbers stand
    assert no_cgroup_v2.free_gib == pytest.approx(16384000 / 2**20)
    (cgroup / "memory.max").write_text(f"{8 * 2**30}\n")  # a container limited to 8 GiB, 3 of them in use
    (cgroup / "memory.current").write_text(f"{3 * 2**30}\n")
    capped = sft_memory.host_memory(meminfo, cgroup)
    assert (capped.total_gib, capped.free_gib, capped.gpu) == (8.0, 5.0, False)
    here = sft_memory.host_memory()  # this machine's, read for real
    assert 0 < here.free_gib <= here.total_gib
