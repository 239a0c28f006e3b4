"""Compose verl_configs/<algo>_gsm8k.yaml as verl's main_ppo will, and check what verl would catch too late.

`check_config` needs no verl import (about a second); `verl_validate` imports verl and runs what main_ppo runs
on the driver, then loads and calls the reward as verl's reward workers will.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scripts.lib import vllm_cpu
from scripts.lib.paths import VERL_CONFIGS

CONFIG_DIR = VERL_CONFIGS
# `+parent.new_key=...` is legitimate only below these free-form mappings verl reads.
FREEFORM = {"env_vars", "runtime_env", "reward_kwargs", "engine_kwargs", "vllm", "override_config", "kw_args"}
# main_ppo never reads these top-level keys (only the fully-async trainer migrates them into `reward.*`).
LEGACY_REWARD_KEYS = ("custom_reward_function", "reward_model", "sandbox_fusion")


class ConfigError(Exception):
    """A config problem, reported as `key: message`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """The job config main_ppo receives for `--config-name=config_name` plus `overrides`."""
    from hydra import compose, initialize_config_dir

    # The YAML's `pkg://verl.trainer.config` search path imports verl (torch, ray) just to find the folder;
    # the same folder by path composes the same files in under a second.
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("verl", "verl is not installed in this Python environment")
    searchpath = f"hydra.searchpath=[file://{Path(list(spec.submodule_search_locations)[0]) / 'trainer' / 'config'}]"
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            return compose(config_name, overrides=[searchpath, *overrides])
    except Exception as exc:  # Hydra raises several types; an unknown key's OmegaConf error names it
        if (key := getattr(exc.__cause__, "full_key", None)) is None:
            raise ConfigError("hydra", " ".join(str(exc).split())) from exc
        hint = nearest_key(compose_config(config_name, []), key)  # the YAML alone composes
        raise ConfigError(key, f"not a key of verl's ppo_trainer config{hint}") from exc


def need_critic(cfg: DictConfig) -> bool:
    """verl.trainer.ppo.utils.need_critic, without importing verl (and its warning)."""
    enable = OmegaConf.select(cfg, "critic.enable")
    return bool(enable) if enable is not None else cfg.algorithm.adv_estimator == "gae"


def need_ref(cfg: DictConfig) -> bool:
    """verl.trainer.ppo.utils.need_reference_policy."""
    return bool(cfg.algorithm.get("use_kl_in_reward", False) or cfg.actor_rollout_ref.actor.use_kl_loss)


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """[('a.b.c', value), ...] of a plain mapping (OmegaConf.to_container); lists stay whole."""
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, node)]


def nearest_key(cfg: DictConfig, key: str) -> str:
    """'; did you mean X?' for the real key of `cfg` closest to a typo'd `key` ('' if none is close)."""
    keys = [k for k, _ in leaves(OmegaConf.to_container(cfg)) if k != key]
    return "".join(f"; did you mean {k}?" for k in difflib.get_close_matches(key, keys, n=1, cutoff=0.8))


def check_config(cfg: DictConfig, user: list[str]) -> list[ConfigError]:
    """What verl 0.9.1 checks only on its Ray workers, minutes in, or never (silently ignored keys)."""
    problems: list[ConfigError] = []

    def add(key: str, message: str) -> None:
        problems.append(ConfigError(key, message))

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key)

    for override in user:  # Hydra adds `+key=value` anywhere; verl reads it only below a free-form mapping
        key = override[1:].split("=", 1)[0]
        if override.startswith("+") and not override.startswith("++") and not FREEFORM & set(key.split(".")[:-1]):
            add(key, f"verl would never read '+{key}' (use '++' to force it){nearest_key(cfg, key)}")
    for top in (k for k in LEGACY_REWARD_KEYS if k in cfg):
        for key, _ in (leaf for leaf in leaves(OmegaConf.to_container(cfg[top]), top) if leaf[1] is not None):
            add(
                key,
                f"verl 0.9.1's main_ppo ignores the top-level '{top}' (only the fully-async trainer migrates "
                f"it) and would score with its built-in GSM8K scorer: use 'reward.{key}'",
            )
    path = get("reward.custom_reward_function.path")
    if not path or not Path(path).is_absolute() or not Path(path).is_file():
        add(
            "reward.custom_reward_function.path",
            f"{path!r}: not an existing absolute file; verl would score with its built-in GSM8K scorer",
        )
    if not Path(str(get("trainer.default_local_dir"))).is_absolute():
        add("trainer.default_local_dir", "is relative: verl resolves it in each Ray worker's cwd")

    actor_ref = "actor_rollout_ref"
    gpus = int(get("trainer.n_gpus_per_node")) * int(get("trainer.nnodes"))
    n, batch = int(get(f"{actor_ref}.rollout.n")), int(get("data.train_batch_size"))
    seqs, max_seq = batch * n, int(get("data.max_prompt_length")) + int(get("data.max_response_length"))
    replica = 1
    for size in ("tensor_model", "data", "pipeline_model"):  # GPUs per vLLM replica must divide the GPUs
        replica *= int(get(f"{actor_ref}.rollout.{size}_parallel_size"))
    if gpus % replica:
        add(f"{actor_ref}.rollout.tensor_model_parallel_size", f"{gpus} GPUs do not split into replicas of {replica}")
    if seqs % gpus:
        add(
            "data.train_batch_size",
            f"train_batch_size * rollout.n = {seqs} sequences do not split over {gpus} "
            "GPUs (trainer.n_gpus_per_node * trainer.nnodes)",
        )

    def micro(key: str, per_gpu: int, what: str) -> None:
        """Without dynamic batching, the per-GPU micro batch `key` must divide `per_gpu` sequences."""
        if get(key) is None:
            add(key, f"unset: set a micro batch that divides {what} ({per_gpu}), or use_dynamic_bsz=true")
        elif per_gpu % int(get(key)):
            add(key, f"{get(key)} does not divide {what} ({per_gpu} sequences)")

    def tokens(key: str) -> None:
        if int(get(key)) < max_seq:
            add(
                key,
                f"{get(key)} tokens per GPU cannot hold one sequence of max_prompt_length + "
                f"max_response_length = {max_seq}",
            )

    share = seqs // gpus, "each GPU's share of the step"  # forward-only passes: log-probs, values
    roles = [(f"{actor_ref}.actor", f"{actor_ref}.rollout.log_prob")] + (
        [("critic", "critic.forward")] if need_critic(cfg) else []
    )
    for role, forward in roles:  # the PPO update, then the forward-only pass, of the actor and the critic
        sp, mini = int(get(f"{role}.ulysses_sequence_parallel_size")), int(get(f"{role}.ppo_mini_batch_size"))
        dynamic = bool(get(f"{role}.use_dynamic_bsz"))
        if gpus % sp:
            add(f"{role}.ulysses_sequence_parallel_size", f"{sp} does not divide the {gpus} GPUs")
            continue
        if batch < mini or batch % mini:
            add(f"{role}.ppo_mini_batch_size", f"{mini} prompts must divide data.train_batch_size ({batch})")
        if (mini * n) % (gpus // sp):
            add(
                f"{role}.ppo_mini_batch_size",
                f"ppo_mini_batch_size * rollout.n = {mini * n} sequences do not split "
                f"over {gpus // sp} data-parallel GPUs (n_gpus / ulysses_sequence_parallel_size)",
            )
        elif not dynamic:
            micro(f"{role}.ppo_micro_batch_size_per_gpu", mini * n // (gpus // sp), "the per-GPU mini batch")
        for key in [f"{role}.ppo_max_token_len_per_gpu", f"{forward}_max_token_len_per_gpu"] if dynamic else []:
            tokens(key)
        if not dynamic:
            micro(f"{forward}_micro_batch_size_per_gpu", *share)
    actor_dynamic = bool(get(f"{actor_ref}.actor.use_dynamic_bsz"))
    if bool(get(f"{actor_ref}.rollout.log_prob_use_dynamic_bsz")) != actor_dynamic:  # the actor worker asserts it
        add(
            f"{actor_ref}.rollout.log_prob_use_dynamic_bsz",
            f"must equal {actor_ref}.actor.use_dynamic_bsz ({actor_dynamic})",
        )
    if need_ref(cfg):
        if get(f"{actor_ref}.ref.log_prob_use_dynamic_bsz"):
            tokens(f"{actor_ref}.ref.log_prob_max_token_len_per_gpu")
        else:
            micro(f"{actor_ref}.ref.log_prob_micro_batch_size_per_gpu", *share)
    return problems


def verl_validate(cfg: DictConfig, reward: Any) -> str:
    """verl's driver-side checks, then its reward loader, which must load `reward`: 'file:function {kwargs}'."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))  # verl may mutate it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.utils import need_critic as verl_need_critic
    from verl.trainer.ppo.utils import need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    model = cfg.actor_rollout_ref.model.path
    # With LoRA, validate_config imports verl's vLLM rollout, which reads vLLM's version under the distribution name
    # `vllm`; the CPU build's is `vllm-cpu` (a no-op where the GPU build is installed).
    vllm_cpu.alias_version()
    try:
        validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=verl_need_critic(cfg))
        # What the workers build first: the model (HF config, tokenizer, chat template) and the rollout settings.
        tokenizer = omega_conf_to_dataclass(cfg.actor_rollout_ref.model).tokenizer
        omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    except Exception as exc:  # AssertionError, ValueError, OSError, Hydra's InstantiationException...
        key = getattr(exc, "full_key", None) or "verl.validate_config"
        text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if isinstance(exc, OSError) or "HFModelConfig" in text:
            key, text = "actor_rollout_ref.model.path", f"{text} (model {model!r}: a local folder or a hub id)"
        raise ConfigError(key, f"verl rejects the config: {text}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("actor_rollout_ref.model.path", f"{model}: the tokenizer has no chat template")

    key, want = "reward.custom_reward_function", getattr(reward, "func", reward)
    fn = get_custom_reward_fn(cfg)
    raw = fn.args[0] if fn is not None and getattr(fn, "args", None) else fn
    where = f"{Path(inspect.getsourcefile(raw) or '').resolve()}:{raw.__name__}" if raw else "its built-in scorer"
    if raw is None or where != f"{Path(inspect.getsourcefile(want) or '').resolve()}:{want.__name__}":
        raise ConfigError(key, f"verl's loader resolves {where}, not the chosen reward's {want.__name__}")
    try:  # the call verl's reward workers make for one finished sample (reward_kwargs merged in)
        result = fn(data_source="openai/gsm8k", solution_str="6 * 7 = 42\n#### 42", ground_truth="42", extra_info={})
    except Exception as exc:  # it would fail in every reward worker
        raise ConfigError(f"{key}.reward_kwargs", f"the reward raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, dict) or result.get("score") != 1.0:
        raise ConfigError(f"{key}.reward_kwargs", f"a correct '#### 42' answer scored {result!r}, expected 1.0")
    return f"{where} {dict(fn.args[1]) if fn.args else {}}"
