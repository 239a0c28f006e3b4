"""scripts/export_checkpoint.sh turns a verl FSDP actor checkpoint into a loadable Hugging Face model.

The checkpoint is laid out exactly as verl's FSDP checkpoint manager writes it for 2 GPUs
(models/rl/<experiment>/latest_checkpointed_iteration.txt, global_step_N/actor/
model_world_size_2_rank_{0,1}.pt holding DTensor shards, fsdp_config.json, huggingface/ with config
and tokenizer), built from the tiny model; the merge is verl's own `python -m verl.model_merger`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "export_checkpoint.sh"


def write_fsdp_checkpoint(model_dir: Path, actor: Path, world_size: int = 2) -> dict[str, torch.Tensor]:
    """Shard the model's weights over `world_size` ranks as FSDP2 does (DTensor, Shard(0)) and save them."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from transformers import AutoModelForCausalLM

    full = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    (actor / "huggingface").mkdir(parents=True)
    for rank in range(world_size):  # one process plays each rank in turn; no collective is needed
        dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=world_size)
        try:
            mesh = init_device_mesh("cpu", (world_size,), mesh_dim_names=("fsdp",))
            shards = {
                key: DTensor.from_local(
                    value.chunk(world_size, dim=0)[rank].clone(), mesh, [Shard(0)], run_check=False
                )
                for key, value in full.items()
            }
            torch.save(shards, actor / f"model_world_size_{world_size}_rank_{rank}.pt")
        finally:
            dist.destroy_process_group()
    (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": world_size}))
    for path in model_dir.iterdir():  # verl always saves config + tokenizer here, weights only with hf_model
        if path.suffix != ".safetensors":
            shutil.copy(path, actor / "huggingface" / path.name)
    return full


def export(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def experiment(tmp_path, tiny_model_dir) -> tuple[Path, dict[str, torch.Tensor]]:
    exp = tmp_path / "models" / "rl" / "ppo-tiny"
    full = write_fsdp_checkpoint(tiny_model_dir, exp / "global_step_3" / "actor")
    (exp / "latest_checkpointed_iteration.txt").write_text("3")
    return exp, full


@pytest.mark.slow
def test_merges_the_latest_checkpoint_into_a_loadable_model(experiment):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    exp, full = experiment
    result = export(str(exp))
    assert result.returncode == 0, result.stderr[-3000:]
    hf_dir = exp / "global_step_3" / "actor" / "huggingface"
    assert f"Hugging Face model: {hf_dir}" in result.stdout
    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    merged = model.state_dict()
    for key, value in full.items():  # the merger stores bf16: each weight equals the original rounded to bf16
        assert torch.equal(merged[key].float(), value.bfloat16().float()), key
    assert AutoTokenizer.from_pretrained(hf_dir).eos_token == "<|im_end|>"
    assert not list(hf_dir.parent.glob("huggingface.partial*"))  # nothing half-written left behind

    # Now the weights are there: a rerun merges nothing; an explicit TARGET gets a copy.
    again = export(str(exp / "global_step_3"))
    assert again.returncode == 0 and "already saved with the checkpoint" in again.stdout
    target = exp.parent / "ppo-tiny-hf"
    copied = export(str(exp), str(target))
    assert copied.returncode == 0, copied.stderr
    assert (target / "config.json").is_file() and list(target.glob("*.safetensors"))


def test_rejects_a_folder_that_is_not_a_checkpoint(tmp_path):
    result = export(str(tmp_path))
    assert result.returncode == 1
    assert "is not an FSDP actor checkpoint (no fsdp_config.json)" in result.stderr
