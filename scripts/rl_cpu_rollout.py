"""A `transformers` rollout backend for verl 0.9.1: token-in/token-out generation without vLLM (CPU runs).

Registered (by name) by scripts/rl_cpu.py as `actor_rollout_ref.rollout.name=transformers` (verl_configs/cpu.yaml):

- `TransformersReplica` (verl's RolloutReplicaRegistry): one `TransformersServer` Ray actor per replica,
  named like verl's vLLM servers (`transformers_server_<replica>_0`),
- `TransformersServer`: the calls verl's agent loop and checkpoint manager make on a vLLM server
  (`generate` -> TokenOutput, wake_up/sleep/clear_kv_cache/...: no-ops here) over a plain
  `AutoModelForCausalLM`, one request at a time,
- `ServerAdapter` (verl's rollout-class map, in each trainer worker): verl's naive colocated weight
  sync hands it the actor's full weights after every update; rank 0 loads them into the server.

Slow by design (no batching, no KV-cache reuse across requests): it exists so the real trainer loop
runs on a laptop or in CI with a tiny model, not to train a real model on CPU.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import ray
import torch
from verl.utils.fs import copy_to_local
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from scripts.rl_cpu import ROLLOUT


class TransformersServer:
    """The rollout server: generates with transformers' `generate`, loads weights verl syncs."""

    def __init__(self, model_path: str, response_length: int) -> None:
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
        self.model.eval()
        gen = GenerationConfig.from_model_config(self.model.config)
        self.eos = gen.eos_token_id
        self.pad = gen.pad_token_id if gen.pad_token_id is not None else self.eos
        self.response_length = response_length
        self.global_steps: int | None = None
        self.lock = asyncio.Lock()

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str, **_: Any):
        async with self.lock:
            tokens, logps = await asyncio.to_thread(self._generate, list(prompt_ids), dict(sampling_params))
        return TokenOutput(
            token_ids=tokens,
            log_probs=logps if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    @torch.no_grad()
    def _generate(self, prompt_ids: list[int], params: dict[str, Any]) -> tuple[list[int], list[float]]:
        limit = params.get("max_tokens") or params.get("max_new_tokens") or self.response_length
        temperature = float(params.get("temperature") or 0.0)
        sample = {"do_sample": temperature > 0}
        if temperature > 0:
            top_k = int(params.get("top_k") or 0)
            sample.update(temperature=temperature, top_p=float(params.get("top_p") or 1.0), top_k=max(top_k, 0))
        ids = torch.tensor([prompt_ids])
        out = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=min(int(limit), self.response_length),
            eos_token_id=self.eos,
            pad_token_id=self.pad,
            return_dict_in_generate=True,
            output_logits=True,
            **sample,
        )
        tokens = out.sequences[0, len(prompt_ids) :].tolist()
        logps = [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, tokens, strict=False)]
        return tokens, logps

    async def load_weights(self, weights: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Copy verl's HF-named full tensors into the model; unknown names are an error."""
        missing, unexpected = self.model.load_state_dict(weights, strict=False)
        if unexpected:
            raise KeyError(f"rollout weights with names the model does not have: {sorted(unexpected)[:5]}")
        if global_steps is not None:
            self.global_steps = global_steps
        return len(weights)

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def abort_all_requests(self, **_: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, **_: Any) -> dict[str, Any]:
        return {"aborted": False, "request_id": request_id}

    async def _noop(self, *_: Any, **__: Any) -> None:
        return None

    # Memory and scheduling controls of a vLLM server: nothing to free or resume here.
    wake_up = sleep = clear_kv_cache = release_kv_cache = resume_kv_cache = _noop
    resume_generation = wait_for_requests_to_drain = start_profile = stop_profile = _noop


def server_name(replica_rank: int) -> str:
    return f"{ROLLOUT}_server_{replica_rank}_0"


class TransformersReplica(RolloutReplica):
    """One TransformersServer per replica (verl's RolloutReplica contract: servers + handle + address)."""

    async def launch_servers(self) -> None:
        if self.world_size != 1:
            raise ValueError(
                f"the {ROLLOUT} rollout serves one process per replica; rollout tensor/data/pipeline "
                f"parallel sizes multiply to {self.world_size}: set them to 1 (verl_configs/cpu.yaml)"
            )
        name = server_name(self.replica_rank)
        server = ray.remote(num_cpus=0)(TransformersServer).options(name=name)
        path = copy_to_local(self.model_config.path)  # what verl's HFModelConfig loads (a local dir here)
        self.servers = [server.remote(path, self.config.response_length)]
        self._server_handle, self._server_address = self.servers[0], name


class ServerAdapter(BaseRollout):
    """In each trainer worker: forwards verl's naive (colocated) weight sync to its replica's server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        self.replica_rank = int(os.environ.get("RANK", "0")) if replica_rank == -1 else replica_rank
        self.is_leader_rank = True

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(self, weights, global_steps: int | None = None, **_: Any) -> None:
        full = {}
        for name, tensor in weights:  # every rank iterates: FSDP gathers the full tensors collectively
            tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            full[name] = tensor.detach().to("cpu", copy=True)
        await ray.get_actor(server_name(self.replica_rank)).load_weights.remote(full, global_steps)
