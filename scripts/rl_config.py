"""Compose and check the verl PPO/GRPO config exactly as `python -m verl.trainer.main_ppo` will see it.

Used by scripts/rl_launch.py (the dry run and every real launch):

    >>> cfg = compose_config("ppo_gsm8k", ["actor_rollout_ref.model.path=/models/tiny"])  # doctest: +SKIP
    >>> check_config(cfg)                        # worker-only rules verl checks too late   # doctest: +SKIP
    []
    >>> verl_validate(cfg)["reward_source"]      # verl's own validate_config + reward loader  # doctest: +SKIP
    '/workspace/rewards/gsm8k.py:compute_score'

Three layers, cheapest first, so a bad config fails in about a second:

1. `compose_config`: Hydra composes verl_configs/<name>.yaml on top of verl's packaged ppo_trainer with
   the launcher's and the user's overrides (Hydra's struct mode rejects `key=value` typos).
   `normalize_overrides` also rejects `+key=value` additions verl would never read (`+trainr.x=1`),
   and turns `+key` into `++key` when verl_configs already sets that key.
2. `check_config`: the divisibility, micro-batch and dynamic-batch rules that verl 0.9.1 enforces only
   inside its Ray workers, after minutes of start-up, plus keys verl silently ignores (the legacy
   top-level `custom_reward_function`, `reward_model`, `sandbox_fusion`).
3. `verl_validate`: imports verl (torch, ray: seconds) and runs what main_ppo runs on the driver:
   `validate_config` (which loads the critic's HF config and tokenizer for PPO), the model and rollout
   dataclasses the workers build, and verl's reward loader, which must resolve to rewards/gsm8k.py.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scripts.lib.paths import REPO_ROOT

logger = logging.getLogger(__name__)

CONFIG_DIR = REPO_ROOT / "verl_configs"
REWARD_FILE = REPO_ROOT / "rewards" / "gsm8k.py"
CPU_FILE = CONFIG_DIR / "cpu.yaml"

# Keys verl reads as free-form mappings: `+parent.new_key=...` below these is legitimate.
FREEFORM_PARENTS = {
    "env_vars",
    "runtime_env",
    "reward_kwargs",
    "engine_kwargs",
    "vllm",
    "sglang",
    "override_config",
    "apply_chat_template_kwargs",
    "mm_processor_kwargs",
    "sampler_kwargs",
    "kw_args",
}
# verl 0.9.1 keeps these top-level keys only for the fully-async trainer, which migrates them into
# `reward.*`; main_ppo never reads them, so a value there is silently ignored.
LEGACY_REWARD_KEYS = ("custom_reward_function", "reward_model", "sandbox_fusion")


class ConfigError(Exception):
    """A config problem, reported as `key: message`."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass
class ConfigIssue:
    """One finding of `check_config`: errors stop the launch, warnings are printed."""

    key: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.severity}: {self.key}: {self.message}"


def verl_config_dir() -> Path:
    """verl's packaged trainer/config directory, located without importing verl (which costs seconds)."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("verl", "verl is not installed in this Python environment")
    return Path(list(spec.submodule_search_locations)[0]) / "trainer" / "config"


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    # The YAML's `hydra.searchpath: [pkg://verl.trainer.config]` imports verl (torch, ray) just to find
    # the directory; pointing Hydra at the same directory by path composes the same files in < 1 s.
    searchpath = f"hydra.searchpath=[file://{verl_config_dir()}]"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name, overrides=[searchpath, *overrides])


def _parse(override: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override)


def _suggest(cfg: DictConfig, key: str) -> str:
    """' (did you mean a.b.c?)' for the closest sibling key of `key` in `cfg`, or ''."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return ""
    close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1, cutoff=0.6)
    return f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""


def _hydra_error(exc: Exception, config_name: str) -> ConfigError:
    text = str(exc)
    match = re.search(r"Could not (?:override|append to config|delete from config)[^']*'([^']+)'", text)
    if match is None:
        match = re.search(r"full_key: (\S+)", text)
    if match is None:
        return ConfigError("hydra", text.strip().splitlines()[0] if text.strip() else repr(exc))
    key = match.group(1)
    if "is not in struct" in text or "Could not override" in text:
        try:
            hint = _suggest(_compose(config_name, []), key)
        except Exception:  # a hint is best effort
            hint = ""
        return ConfigError(key, f"not a key of verl's ppo_trainer config{hint}")
    if "An item is already at" in text:
        return ConfigError(key, "already set by the config: drop the leading '+' (or use '++' to force)")
    return ConfigError(key, text.strip().splitlines()[0])


def normalize_overrides(config_name: str, launcher: list[str], user: list[str]) -> list[str]:
    """The user's overrides as they will be passed to verl, after checking every `+key=value` addition.

    `+a.b.c=v` must add below a free-form mapping verl reads (env_vars, reward_kwargs, engine_kwargs,
    an empty `{}` in verl's defaults, ...); anything else is a typo verl would silently ignore and
    raises ConfigError naming it. `+key` for a key verl_configs already sets becomes `++key`, so the
    documented `+reward.custom_reward_function.reward_kwargs.mode=flexible` works. `++key` is
    passed through unchecked (the explicit escape hatch).
    """
    from hydra.core.override_parser.types import OverrideType

    parsed = [(o, _parse(o)) for o in user]
    adds = [(o, p) for o, p in parsed if p.type == OverrideType.ADD]
    if not adds:
        return list(user)
    base_user = [o for o, p in parsed if p.type != OverrideType.ADD]
    try:
        base = _compose(config_name, [*launcher, *base_user])
    except Exception as exc:  # Hydra raises several exception types
        raise _hydra_error(exc, config_name) from exc
    out = []
    for original, ov in parsed:
        if ov.type != OverrideType.ADD:
            out.append(original)
            continue
        key = ov.key_or_group
        if OmegaConf.select(base, key, default="__missing__") != "__missing__":
            logger.info("'+%s' -> '++%s' (verl_configs already sets %s)", key, key, key)
            out.append("+" + original)
            continue
        parts = key.split(".")
        depth = 0  # how many leading parts of the key already exist as a mapping
        for i in range(len(parts) - 1, 0, -1):
            if isinstance(OmegaConf.select(base, ".".join(parts[:i])), DictConfig):
                depth = i
                break
        parent = ".".join(parts[:depth])
        node = OmegaConf.select(base, parent) if depth else base
        if depth and (parts[depth - 1] in FREEFORM_PARENTS or len(node) == 0):
            out.append(original)
            continue
        if depth:
            what = f"'{parent}' has no key '{parts[depth]}'"
        else:
            what = f"'{parts[0]}' is not a top-level key of verl's ppo_trainer config"
        hint = _suggest(base, ".".join(parts[: depth + 1]))
        raise ConfigError(key, f"{what}{hint}: verl would never read '+{key}' (use '++' to force it)")
    return out


def cpu_overrides(path: Path = CPU_FILE) -> list[str]:
    """verl_configs/cpu.yaml as `++key=value` overrides (N_GPUS=0), in the file's order."""
    import json

    def value(v: Any) -> str:
        return json.dumps(v) if isinstance(v, str | bool) or v is None else str(v)

    leaves = _leaves(OmegaConf.load(path), "")
    return [f"++{key[1:]}={value(v)}" for key, v in leaves]


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """The job config main_ppo will receive for `--config-name=config_name` plus `overrides`."""
    try:
        return _compose(config_name, overrides)
    except Exception as exc:  # Hydra raises several exception types
        raise _hydra_error(exc, config_name) from exc


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def uses_critic(cfg: DictConfig) -> bool:
    """verl.trainer.ppo.utils.need_critic without importing verl."""
    enable = _get(cfg, "critic.enable")
    return bool(enable) if enable is not None else _get(cfg, "algorithm.adv_estimator") == "gae"


def uses_ref(cfg: DictConfig) -> bool:
    """verl.trainer.ppo.utils.need_reference_policy without importing verl."""
    return bool(_get(cfg, "algorithm.use_kl_in_reward") or _get(cfg, "actor_rollout_ref.actor.use_kl_loss"))


def _leaves(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, DictConfig):
        return [leaf for k in node.keys() for leaf in _leaves(node[k], f"{prefix}.{k}")]
    return [(prefix, node)]


def check_config(cfg: DictConfig) -> list[ConfigIssue]:
    """Rules verl 0.9.1 enforces only on its Ray workers (or never), checked on the composed config."""
    problems: list[ConfigIssue] = []

    def add(key: str, message: str, severity: str = "error") -> None:
        problems.append(ConfigIssue(key, message, severity))

    def num(key: str) -> int:
        return int(_get(cfg, key))

    # Keys main_ppo silently ignores.
    for top in LEGACY_REWARD_KEYS:
        for key, value in _leaves(cfg[top], top) if top in cfg else []:
            if value is not None:
                add(
                    key,
                    f"verl 0.9.1's main_ppo ignores the top-level '{top}' (only the fully-async trainer "
                    f"migrates it) and would score with its built-in GSM8K scorer: use 'reward.{key}'",
                )
    reward_path = _get(cfg, "reward.custom_reward_function.path")
    if not reward_path:
        add("reward.custom_reward_function.path", "unset: verl would score with its built-in GSM8K scorer")
    elif not Path(reward_path).is_absolute() or not Path(reward_path).is_file():
        add("reward.custom_reward_function.path", f"{reward_path!r} is not an existing absolute file path")
    ckpt = str(_get(cfg, "trainer.default_local_dir"))
    if not Path(ckpt).is_absolute():
        add("trainer.default_local_dir", f"{ckpt!r} is relative: verl resolves it in each Ray worker's cwd")

    ar = "actor_rollout_ref"
    n_gpus = num("trainer.n_gpus_per_node") * num("trainer.nnodes")
    n, batch = num(f"{ar}.rollout.n"), num("data.train_batch_size")
    seqs = batch * n  # sequences per step
    max_seq = num("data.max_prompt_length") + num("data.max_response_length")

    # Each vLLM replica takes tp * dp * pp GPUs; the rollout worker asserts they divide the GPUs.
    replica = num(f"{ar}.rollout.tensor_model_parallel_size") * num(f"{ar}.rollout.data_parallel_size")
    replica *= num(f"{ar}.rollout.pipeline_model_parallel_size")
    if n_gpus % replica:
        add(f"{ar}.rollout.tensor_model_parallel_size", f"{n_gpus} GPUs do not split into replicas of {replica}")
    elif num(f"{ar}.rollout.max_num_seqs") < seqs // (n_gpus // replica):
        add(
            f"{ar}.rollout.max_num_seqs",
            f"below the {seqs // (n_gpus // replica)} sequences each vLLM replica "
            "gets per step: they queue in turns (slower, still correct)",
            "warning",
        )
    if seqs % n_gpus:
        add(
            "data.train_batch_size",
            f"train_batch_size * rollout.n = {seqs} sequences do not split over "
            f"{n_gpus} GPUs (trainer.n_gpus_per_node * trainer.nnodes)",
        )

    def micro_rule(key: str, fixed: bool, per_gpu: int, what: str) -> None:
        """Without dynamic batching, `key` (a *_per_gpu micro batch) must divide `per_gpu` sequences."""
        micro = _get(cfg, key)
        if not fixed:
            return
        if micro is None:
            add(key, f"unset: set a micro batch that divides {what} ({per_gpu}), or use_dynamic_bsz=true")
        elif per_gpu % int(micro):
            add(key, f"{micro} does not divide {what} ({per_gpu} sequences)")

    def update_rules(role: str, sp: int, dynamic: bool, token_keys: list[str]) -> None:
        """PPO-update rules for the actor or the critic (`role`)."""
        mini_key = f"{role}.ppo_mini_batch_size"
        if n_gpus % sp:
            add(f"{role}.ulysses_sequence_parallel_size", f"{sp} does not divide the {n_gpus} GPUs")
            return
        dp, mini = n_gpus // sp, num(mini_key)
        if batch < mini or batch % mini:
            add(mini_key, f"{mini} prompts must divide data.train_batch_size ({batch})")
        if (mini * n) % dp:
            add(
                mini_key,
                f"ppo_mini_batch_size * rollout.n = {mini * n} sequences do not split over {dp} "
                "data-parallel GPUs (n_gpus / ulysses_sequence_parallel_size)",
            )
        elif not dynamic:
            micro_rule(f"{role}.ppo_micro_batch_size_per_gpu", True, mini * n // dp, "the per-GPU mini batch")
        for key in token_keys if dynamic else []:
            if num(key) < max_seq:
                add(
                    key,
                    f"{num(key)} tokens per GPU cannot hold one sequence of max_prompt_length + "
                    f"max_response_length = {max_seq}",
                )

    actor_dyn = bool(_get(cfg, f"{ar}.actor.use_dynamic_bsz"))
    update_rules(
        f"{ar}.actor",
        num(f"{ar}.actor.ulysses_sequence_parallel_size"),
        actor_dyn,
        [f"{ar}.actor.ppo_max_token_len_per_gpu", f"{ar}.rollout.log_prob_max_token_len_per_gpu"],
    )
    # The actor worker asserts actor.use_dynamic_bsz == rollout.log_prob_use_dynamic_bsz.
    if bool(_get(cfg, f"{ar}.rollout.log_prob_use_dynamic_bsz")) != actor_dyn:
        add(f"{ar}.rollout.log_prob_use_dynamic_bsz", f"must equal {ar}.actor.use_dynamic_bsz ({actor_dyn})")
    # Forward-only passes (old/ref log-probs, values) run over each GPU's share of the whole step.
    share, what = seqs // n_gpus, "each GPU's share of the step"
    micro_rule(f"{ar}.rollout.log_prob_micro_batch_size_per_gpu", not actor_dyn, share, what)
    if uses_ref(cfg):
        ref_dyn = bool(_get(cfg, f"{ar}.ref.log_prob_use_dynamic_bsz"))
        micro_rule(f"{ar}.ref.log_prob_micro_batch_size_per_gpu", not ref_dyn, share, what)
        if ref_dyn and num(f"{ar}.ref.log_prob_max_token_len_per_gpu") < max_seq:
            add(f"{ar}.ref.log_prob_max_token_len_per_gpu", f"cannot hold one sequence ({max_seq} tokens)")
    if uses_critic(cfg):
        critic_dyn = bool(_get(cfg, "critic.use_dynamic_bsz"))
        update_rules(
            "critic",
            num("critic.ulysses_sequence_parallel_size"),
            critic_dyn,
            ["critic.ppo_max_token_len_per_gpu", "critic.forward_max_token_len_per_gpu"],
        )
        micro_rule("critic.forward_micro_batch_size_per_gpu", not critic_dyn, share, what)

    # Global (not per-GPU) micro batch sizes pass validate_config; the engine workers then ignore them
    # and assert on the missing *_per_gpu value.
    for key in (
        f"{ar}.actor.ppo_micro_batch_size",
        f"{ar}.rollout.log_prob_micro_batch_size",
        f"{ar}.ref.log_prob_micro_batch_size",
        "critic.ppo_micro_batch_size",
    ):
        if _get(cfg, key) is not None:
            add(key, f"global micro batch sizes are ignored by verl 0.9.1's workers: use {key}_per_gpu")

    # vLLM's SchedulerConfig refuses these at server start-up, minutes into the run.
    seqs_cap, tokens_cap = num(f"{ar}.rollout.max_num_seqs"), num(f"{ar}.rollout.max_num_batched_tokens")
    if tokens_cap < seqs_cap:
        add(f"{ar}.rollout.max_num_batched_tokens", f"{tokens_cap} < max_num_seqs ({seqs_cap}): vLLM refuses it")
    if not _get(cfg, f"{ar}.rollout.enable_chunked_prefill") and tokens_cap < max_seq:
        add(f"{ar}.rollout.max_num_batched_tokens", f"{tokens_cap} < one sequence ({max_seq}) without chunked prefill")
    max_model_len = _get(cfg, f"{ar}.rollout.max_model_len")
    if max_model_len is not None and int(max_model_len) < max_seq:
        add(f"{ar}.rollout.max_model_len", f"{max_model_len} < max_prompt_length + max_response_length ({max_seq})")
    if "mlflow" not in list(_get(cfg, "trainer.logger") or []):
        add("trainer.logger", "mlflow is not among the loggers: this run will not be tracked", "warning")
    if "hf_model" not in list(_get(cfg, f"{ar}.actor.checkpoint.save_contents") or []):
        add(f"{ar}.actor.checkpoint.save_contents", "no hf_model: export with scripts/export_checkpoint.sh", "warning")
    return problems


def verl_validate(cfg: DictConfig) -> dict[str, Any]:
    """Run verl's own driver-side validation and reward loading; returns facts for the summary.

    Raises ConfigError naming the key when verl rejects the config or the reward does not resolve to
    this repo's rewards/gsm8k.py:compute_score.
    """
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))  # verl may mutate; keep the caller's copy intact
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    model = _get(cfg, "actor_rollout_ref.model.path")
    try:
        validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
        # What the trainer and agent-loop workers build first: the model (HF config + tokenizer + chat
        # template) and the rollout settings.
        model_cfg = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
        omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    except Exception as exc:  # verl raises AssertionError, ValueError, Hydra InstantiationException, OSError...
        text = str(exc).strip()
        where = re.search(r"full_key: (\S+)", text)
        key = where.group(1) if where else "verl.validate_config"
        if isinstance(exc, OSError) or "HFModelConfig" in text:
            key = "actor_rollout_ref.model.path"
            text += f" (model {model!r}: a local model dir, or a hub id this machine can download)"
        raise ConfigError(key, f"verl rejects the config: {type(exc).__name__}: {text}") from exc
    if not getattr(model_cfg.tokenizer, "chat_template", None):
        raise ConfigError("actor_rollout_ref.model.path", f"{model}: the tokenizer has no chat template")

    key = "reward.custom_reward_function"
    fn = get_custom_reward_fn(cfg)
    if fn is None:
        raise ConfigError(f"{key}.path", "verl's loader found no custom reward: it would use its built-in scorer")
    raw = fn.args[0] if getattr(fn, "args", None) else fn
    source = Path(inspect.getsourcefile(raw) or "").resolve()
    if source != REWARD_FILE.resolve() or raw.__name__ != "compute_score":
        raise ConfigError(key, f"verl resolves {source}:{raw.__name__}, not {REWARD_FILE}:compute_score")
    try:
        # The call verl's naive reward manager makes for one finished sample (reward_kwargs merged in).
        result = fn(data_source="openai/gsm8k", solution_str="6 * 7 = 42\n#### 42", ground_truth="42", extra_info={})
    except Exception as exc:  # any failure here would happen in every reward worker
        raise ConfigError(f"{key}.reward_kwargs", f"the reward raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, dict) or result.get("score") != 1.0:
        raise ConfigError(f"{key}.reward_kwargs", f"a correct '#### 42' answer scored {result!r}, expected 1.0")
    return {"reward_source": f"{source}:{raw.__name__}", "reward_kwargs": dict(fn.args[1]) if fn.args else {}}
