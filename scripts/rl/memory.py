"""Peak memory per GPU of a verl 0.9.1 RL run, per role, from the composed config: an estimate, not a measurement.

The dry run prints it; `build()` in scripts/rl/launch.py (the path dry runs and launches share) refuses a config
whose peak is over one GPU (H100 80GB: 79.6 GiB); docs/rl.md's "What fits" table comes from it. Numbers are GiB.

Where things live. verl colocates every role on every GPU (its hybrid engine): the actor and the reference (one FSDP
worker process), the critic (PPO only; a second), and a vLLM server (a third). A step runs in phases: vLLM
generates, then the log-prob and value passes, then the critic's and the actor's updates. With vLLM's sleep mode
(rollout.enable_sleep_mode and free_cache_engine, verl's defaults) vLLM frees its weights and KV cache while the
others run, so generation and training peak separately; without it vLLM's share stays through every phase.

Per role, for N GPUs (trainer.n_gpus_per_node x trainer.nnodes), P parameters and the preset's shapes (an SFT
checkpoint has its base model's; scripts.lib.model_presets):

- actor and critic train with FSDP sharding every tensor over all N GPUs: fp32 master weights 4 B
  (fsdp_config.model_dtype), fp32 gradients 4 B, AdamW's two fp32 moments 8 B: 16 B/param / N while the role
  trains. verl 0.9.1's engine loads what is offloaded back for the whole update (verl/workers/engine/base.py,
  BaseEngineCtx), so offload does not lower a role's own update; it moves the role's weights (param_offload, 4 B)
  and Adam moments (optimizer_offload, 8 B) to host memory while the other roles run. Gradients are freed after
  each update. The critic's value head replaces the LM head: P - vocab x hidden when embeddings are not tied.
- activations for a micro batch of T tokens per GPU (the token budget with dynamic batches, else the micro batch x
  (max_prompt_length + max_response_length)): a layer keeps act_layer_bytes() per token for the backward pass; with
  gradient checkpointing (model.enable_gradient_checkpointing, verl's default) only each layer's bf16 input
  (2 x hidden bytes) and the one layer being recomputed. A forward-only pass (log-probs, values) holds one layer's.
- logits: T x vocab x LOGIT_BYTES_TRAIN (8) in an update, x LOGIT_BYTES_FORWARD (6) in a log-prob pass; for the
  small models here they are most of the activation memory (vocab 152k, hidden 896-3584). The critic has none.
- reference: verl 0.9.1 runs forward-only models with FSDP2's CPUOffloadPolicy
  (verl/workers/engine/fsdp/transformer_impl.py): its weights stay in host memory and stream in a layer at a time,
  so the GPU holds only its pass's activations and logits (ref.fsdp_config.param_offload changes nothing).
- vLLM: rollout.gpu_memory_utilization x the GPU while it generates, on each GPU of a replica: the bf16 weights /
  tensor parallel size, VLLM_RESERVE_GIB for its activations and CUDA graphs, the rest KV cache. Weights that leave
  no KV cache are refused (vLLM would not start).
- OVERHEAD_GIB on every GPU in every phase: CUDA contexts of up to three processes, NCCL buffers, allocator slack.

Each phase adds up its own pass and what the other roles keep between phases; the peak is the largest phase.
Not modelled: the weight sync before generation (vLLM's weights plus the actor's, briefly), sequence parallelism,
LoRA, host memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scripts.lib.model_presets import Arch
from scripts.rl import config

GIB = 2**30
GPU_GIB = 81559 / 1024  # H100 80GB: 81,559 MiB as nvidia-smi reports it = 79.6 GiB
GPU_NAME = "H100 80GB"
STATE_BYTES, WEIGHT_BYTES, ADAM_BYTES = 16, 4, 8  # per parameter: fp32 weights + grads + Adam; weights; Adam
LOGIT_BYTES_TRAIN = 8  # per token x vocab entry: bf16 logits, their bf16 gradient, an fp32 log-softmax/entropy copy
LOGIT_BYTES_FORWARD = 6  # bf16 logits and an fp32 working copy
OVERHEAD_GIB = 4.0
VLLM_RESERVE_GIB = 2.0  # inside vLLM's share: its activation profile run and CUDA graphs


def act_layer_bytes(arch: Arch) -> int:
    """Bytes per token one decoder layer keeps for its backward pass, bf16: 2 x (10 h + 4 i).

    After Korthikanti et al. 2022 (arXiv:2205.05198, section 4.1), with flash attention (no s x s scores) and no
    dropout: ~10 h values for the attention block and the norms (RMSNorm inputs and outputs, Q, K, V, attention
    output; K and V at full width, an upper bound under GQA) and 4 i for the SwiGLU MLP of width i (gate, up,
    SiLU(gate), their product).
    """
    return 2 * (10 * arch.hidden + 4 * arch.intermediate)


@dataclass
class Phase:
    name: str
    parts: dict[str, float]  # GiB by what holds it

    @property
    def gib(self) -> float:
        return sum(self.parts.values())

    def explain(self) -> str:
        return " + ".join(f"{k} {v:.1f}" for k, v in self.parts.items() if v >= 0.05)


@dataclass
class Estimate:
    """Per-GPU memory of one configuration on `gpus` GPUs; `fits` when the largest phase fits one GPU."""

    gpus: int
    roles: dict[str, str] = field(default_factory=dict)  # role -> what it takes, one line
    phases: list[Phase] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what no phase sum shows (vLLM without KV cache)

    @property
    def peak(self) -> Phase:
        return max(self.phases, key=lambda p: p.gib)

    @property
    def fits(self) -> bool:
        return self.peak.gib <= GPU_GIB and not self.problems

    def verdict(self) -> str:
        peak = self.peak
        return f"{peak.gib:.1f} GiB of {GPU_GIB:.1f} in {peak.name} ({peak.explain()}): " + (
            "fits" if self.fits else "does NOT fit"
        )

    def rows(self, preset: str) -> dict[str, str]:
        """The dry run's summary rows: a head line, one per role, the peak."""
        head = f"estimate per GPU, {self.gpus} x {GPU_NAME}, {preset}'s shapes (scripts/rl/memory.py)"
        rows = {"memory": head} | {f"  {role}": line for role, line in self.roles.items()}
        return rows | {"  peak": self.verdict()} | {f"  problem {i}": p for i, p in enumerate(self.problems, 1)}

    def refusal(self, preset: str) -> str:
        """The ConfigError message: the numbers, then what to change."""
        peak = self.peak
        hint = {
            "generation": "offload the actor and critic between phases (fsdp_config / critic.fsdp param_offload and "
            "optimizer_offload=true) or lower rollout.gpu_memory_utilization",
            "actor update": "use more GPUs (N_GPUS) to shard its 16 B/param, or lower actor.ppo_max_token_len_per_gpu",
            "critic update": "use more GPUs (N_GPUS) to shard its 16 B/param, or offload the actor between phases",
        }.get(peak.name, "lower the log_prob_max_token_len_per_gpu budgets, or offload between phases")
        return (
            f"preset {preset} on {self.gpus} x {GPU_NAME} needs ~{peak.gib:.1f} GiB per GPU at its peak, over the "
            f"{GPU_GIB:.1f} GiB there are: {self.verdict()}."
            + "".join(f" {problem}" for problem in self.problems)
            + "".join(f" {role}: {line}." for role, line in self.roles.items())
            + f" To fit: {hint}; or pick a smaller MODEL preset (estimates: docs/rl.md, 'Model presets')"
        )


def estimate(cfg: DictConfig, arch: Arch, gpus: int | None = None) -> Estimate:
    """Per-GPU memory of `cfg` (a composed verl config) for a model of shapes `arch`, on `gpus` GPUs (default: the
    config's trainer.n_gpus_per_node x trainer.nnodes)."""

    def get(key: str, default: Any = None) -> Any:
        value = OmegaConf.select(cfg, key, default=default)
        return default if value is None else value

    n = gpus or int(get("trainer.n_gpus_per_node")) * int(get("trainer.nnodes"))
    seq = int(get("data.max_prompt_length")) + int(get("data.max_response_length"))
    ar = "actor_rollout_ref"
    actor_dynamic = bool(get(f"{ar}.actor.use_dynamic_bsz"))
    est = Estimate(gpus=n)
    keep: dict[str, float] = {}  # what each role holds between phases
    passes: list[tuple[Phase, str | None]] = []  # each with the role whose kept memory it replaces

    def tokens(dynamic: bool, budget: str, micro: str) -> int:
        """Tokens in one micro batch on one GPU: the token budget, or micro batch x the longest sequence."""
        return int(get(budget, 0)) if dynamic else int(get(micro) or 1) * seq

    def train_act(t: int, checkpointing: bool) -> float:
        """Checkpointed: each layer's bf16 input and the one layer being recomputed; else every layer's tensors."""
        per_token = arch.layers * (2 * arch.hidden if checkpointing else act_layer_bytes(arch))
        return t * (per_token + (act_layer_bytes(arch) if checkpointing else 0)) / GIB

    def forward_act(t: int) -> float:
        return t * (act_layer_bytes(arch) + 2 * arch.hidden) / GIB

    def trained(role: str, params: int, offload: str, ckpt: bool, t_train: int, t_fwd: int, logits: bool) -> None:
        """The actor or the critic: its update, its forward-only pass (weights loaded back if offloaded, Adam where
        it is), and what it keeps between phases."""
        param_off, optim_off = bool(get(f"{offload}.param_offload")), bool(get(f"{offload}.optimizer_offload"))
        keep[role] = ((0 if param_off else WEIGHT_BYTES) + (0 if optim_off else ADAM_BYTES)) * params / n / GIB
        states, act = STATE_BYTES * params / n / GIB, train_act(t_train, ckpt)
        update = {role: states + act + (t_train * arch.vocab * LOGIT_BYTES_TRAIN / GIB if logits else 0.0)}
        forward = {
            role: (WEIGHT_BYTES + (0 if optim_off else ADAM_BYTES)) * params / n / GIB,
            "activations": forward_act(t_fwd),
            **({"logits": t_fwd * arch.vocab * LOGIT_BYTES_FORWARD / GIB} if logits else {}),
        }
        offloaded = " and ".join(what for what, off in (("weights", param_off), ("Adam", optim_off)) if off)
        est.roles[role] = (
            f"{update[role]:.1f} GiB to train: weights+grads+Adam {states:.1f}, activations {act:.1f} ({t_train} "
            f"tokens{', checkpointed' if ckpt else ''})"
            + (f", logits {update[role] - states - act:.1f}" if logits else "")
            + f"; {'log-probs' if logits else 'values'} {sum(forward.values()):.1f} ({t_fwd} tokens); keeps "
            f"{keep[role]:.1f} between phases" + (f" ({offloaded} offloaded)" if offloaded else "")
        )
        passes.append((Phase(f"{role} update", update), role))
        passes.append((Phase(f"{role} {'log-probs' if logits else 'values'}", forward), role))

    trained(
        "actor",
        arch.params,
        f"{ar}.actor.fsdp_config",
        bool(get(f"{ar}.model.enable_gradient_checkpointing", True)),
        tokens(actor_dynamic, f"{ar}.actor.ppo_max_token_len_per_gpu", f"{ar}.actor.ppo_micro_batch_size_per_gpu"),
        tokens(
            bool(get(f"{ar}.rollout.log_prob_use_dynamic_bsz", actor_dynamic)),
            f"{ar}.rollout.log_prob_max_token_len_per_gpu",
            f"{ar}.rollout.log_prob_micro_batch_size_per_gpu",
        ),
        logits=True,
    )
    if config.need_critic(cfg):  # PPO: the value head replaces the LM head
        # verl 0.9.1's v1 trainer (trainer.use_v1, its default) sizes the critic's update and value batches from
        # ppo_infer_max_token_len_per_gpu (a CriticConfig field, 32768 unless set), the legacy trainer from
        # ppo_max_token_len_per_gpu: the larger of the two.
        budget = max(
            int(get("critic.ppo_max_token_len_per_gpu", 0)), int(get("critic.ppo_infer_max_token_len_per_gpu", 32768))
        )
        t_critic = (
            budget if get("critic.use_dynamic_bsz") else int(get("critic.ppo_micro_batch_size_per_gpu") or 1) * seq
        )
        trained(
            "critic",
            arch.params - (0 if arch.tied_embeddings else arch.vocab * arch.hidden),
            "critic.fsdp",
            bool(get("critic.model.enable_gradient_checkpointing", True)),
            t_critic,
            t_critic,
            logits=False,
        )
    if config.need_ref(cfg):  # weights in host memory (FSDP2 CPUOffloadPolicy), streamed in a layer at a time
        t_ref = tokens(
            bool(get(f"{ar}.ref.log_prob_use_dynamic_bsz", actor_dynamic)),
            f"{ar}.ref.log_prob_max_token_len_per_gpu",
            f"{ar}.ref.log_prob_micro_batch_size_per_gpu",
        )
        ref = {"activations": forward_act(t_ref), "logits": t_ref * arch.vocab * LOGIT_BYTES_FORWARD / GIB}
        est.roles["reference"] = (
            f"{sum(ref.values()):.1f} GiB for its log-probs: activations {ref['activations']:.1f}, logits "
            f"{ref['logits']:.1f} ({t_ref} tokens); weights in host memory (verl's forward-only CPU offload)"
        )
        passes.append((Phase("reference log-probs", ref), None))

    # vLLM: its share of each GPU of a replica while it generates; with sleep mode, nothing in between
    utilization = float(get(f"{ar}.rollout.gpu_memory_utilization"))
    share, tp = utilization * GPU_GIB, int(get(f"{ar}.rollout.tensor_model_parallel_size", 1))
    weights = 2 * arch.params / tp / GIB
    kv_cache = max(share - weights - VLLM_RESERVE_GIB, 0.0)
    kv_token = 2 * arch.layers * max(1, arch.kv_heads // tp) * arch.head_dim * 2  # K and V, bf16, this GPU's heads
    asleep = bool(get(f"{ar}.rollout.enable_sleep_mode", True)) and bool(get(f"{ar}.rollout.free_cache_engine", True))
    est.roles["vLLM"] = (
        f"{share:.1f} GiB while generating (gpu_memory_utilization {utilization}): weights {weights:.1f} (TP {tp}), "
        f"KV cache {kv_cache:.1f} = {kv_cache * GIB / kv_token / 1e6:.2f}M tokens per replica; "
        + ("0 while the others run (sleep mode)" if asleep else "kept through every phase (no sleep mode)")
    )
    if kv_cache * GIB < seq * kv_token:
        est.problems.append(
            f"vLLM: its bf16 weights ({weights:.1f} GiB per GPU at TP {tp}) leave no KV cache for one "
            f"{seq}-token sequence in gpu_memory_utilization x {GPU_GIB:.1f} = {share:.1f} GiB: raise "
            "rollout.tensor_model_parallel_size or gpu_memory_utilization."
        )

    def held(owner: str | None) -> dict[str, float]:
        """What the roles other than `owner` keep between phases."""
        return {f"{role} kept": gib for role, gib in keep.items() if role != owner}

    est.phases.append(Phase("generation", {"vLLM": share, **held(None), "overhead": OVERHEAD_GIB}))
    for phase, owner in passes:
        phase.parts |= held(owner) | ({} if asleep else {"vLLM": share}) | {"overhead": OVERHEAD_GIB}
        est.phases.append(phase)
    return est
