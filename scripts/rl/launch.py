"""verl PPO/GRPO on GSM8K: the launcher behind scripts/run_ppo.sh and run_grpo.sh (docs/rl.md).

MODEL=qwen2.5-1.5b REWARD=gsm8k_flexible N_GPUS=1 bash scripts/run_grpo.sh [--dry-run] [--skip-preflight] [overrides]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import rewards
from data.readiness import RL_FILES
from scripts.lib import model_presets
from scripts.lib.atomic import atomic_write
from scripts.lib.checkpoints import latest_step, read_sft_manifest
from scripts.lib.paths import DATA_DIR, MODELS_DIR, SFT_MANIFEST, algorithms
from scripts.rl import config, memory, preflight
from scripts.rl.preflight import LaunchError

ENV_VARS = "+ray_kwargs.ray_init.runtime_env.env_vars"  # reaches verl's TaskRunner actor on every Ray node
CPU = config.CONFIG_DIR / "cpu.yaml"
CPU_PLUGIN = "scripts.rl.cpu_plugin"  # what verl imports in every process on CPU (VERL_USE_EXTERNAL_MODULES)
RESILIENT_MLFLOW = "scripts.lib.resilient_mlflow"  # ... and everywhere: verl's MLflow logging survives an outage
RAY_START = "scripts.lib.ray_start"  # ... and in the driver: a local Ray start that times out is retried
# verl's known noise, filtered in every process of a run (Python reads PYTHONWARNINGS at start; a cluster's workers
# get it through scripts/lib/ray_start.py): verl.workers.engine warns once per engine that is not installed
# (torchtitan, veomni, automodel, mindspeed, megatron) in every process that imports it, 30+ lines of a CPU PPO log.
# Only that module's UserWarnings; a filter the user sets comes after it, so it wins.
VERL_NOISE = "ignore::UserWarning:verl.workers.engine"


@dataclass
class Settings:
    """What the environment decides; every hyperparameter lives in verl_configs/."""

    algo: str
    model: str
    model_reason: str
    n_gpus: int  # 0: CPU (verl_configs/cpu.yaml, scripts/rl/cpu_plugin.py) on one declared GPU slot
    nnodes: int
    data_dir: Path
    experiment: str
    checkpoint_dir: Path
    mlflow_uri: str
    reward: str
    gsm8k_source: str
    external_modules: str
    ray_address: str | None
    sft_run_id: str | None = None
    run_id: str | None = None
    preset: str = model_presets.DEFAULT_PRESET  # verl_configs/models/<preset>.yaml: what depends on the size
    preset_reason: str = "the default preset (MODEL unset)"

    @classmethod
    def from_env(cls, algo: str, environ: Mapping[str, str] | None = None) -> Settings:
        """Every knob a launch reads (default: this process's environment, now), read here once; empty is unset."""
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if v}
        gpus, nodes = env.get("N_GPUS", "4"), env.get("NNODES", "1")
        for name, value in (("N_GPUS", gpus), ("NNODES", nodes)):
            if not value.isdigit() or (name == "NNODES" and value == "0") or (gpus == "0" and nodes != "1"):
                raise LaunchError(f"{name}={value!r} in the environment: use a whole number (N_GPUS=0: CPU, 1 node)")
        reward = env.get("REWARD", "gsm8k_strict")
        try:
            rewards.get_reward(reward)
        except KeyError as exc:
            raise LaunchError(f"REWARD: {exc.args[0]} (rewards/__init__.py)") from None
        try:  # MODEL picks the preset, BASE_MODEL may replace its model (scripts/lib/model_presets)
            preset, base, preset_why = model_presets.choose(env.get("MODEL"), env.get("BASE_MODEL"))
        except model_presets.PresetError as exc:
            raise LaunchError(str(exc)) from None
        model, why, manifest = choose_model(env.get("MODEL_PATH", ""), base, SFT_MANIFEST, preset_why)
        if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
            raise LaunchError(f"MODEL_PATH={model} is not a directory: point it at a model folder or a hub id")
        sft_base = model_presets.preset_for(str(manifest.get("base_model") or ""))
        if sft_base and sft_base.name != preset.name:  # an SFT of another size would train with this one's sizes
            raise LaunchError(
                f"{SFT_MANIFEST} names an SFT of {sft_base.id} (preset {sft_base.name}), but the preset is "
                f"{preset.name} ({preset_why}): set MODEL={sft_base.name}, rerun the SFT notebook with "
                f"model = {preset.name!r}, set MODEL_PATH, or remove the manifest to start from {base}"
            )
        experiment = env.get("EXPERIMENT") or default_experiment(algo, model)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", experiment):
            raise LaunchError(f"EXPERIMENT={experiment!r}: use letters, digits, '.', '_' and '-' only")
        ckpt = Path(env.get("CHECKPOINT_DIR", MODELS_DIR / "rl" / experiment)).expanduser().resolve()
        data = Path(env.get("DATA_DIR", DATA_DIR)).expanduser().resolve()
        ray = env.get("RAY_ADDRESS") or (None if gpus == "0" else local_ray_cluster(env))  # CPU: a Ray of its own
        return cls(
            algo=algo,
            model=model,
            model_reason=why,
            n_gpus=int(gpus),
            nnodes=int(nodes),
            data_dir=data,
            experiment=experiment,
            checkpoint_dir=ckpt,
            mlflow_uri=env.get("MLFLOW_TRACKING_URI", "http://mlflow:5000"),
            reward=reward,
            gsm8k_source=env.get("GSM8K_SOURCE", ""),
            external_modules=env.get("VERL_USE_EXTERNAL_MODULES", ""),
            ray_address=ray,
            sft_run_id=manifest.get("mlflow_run_id"),
            run_id=preflight.read_run_id(ckpt),
            preset=preset.name,
            preset_reason=preset_why,
        )

    @property
    def slots(self) -> int:
        """trainer.n_gpus_per_node: the GPUs, or on CPU the one slot verl's placement groups ask for."""
        return max(self.n_gpus, 1)

    def owned(self) -> dict[str, tuple[Any, str]]:
        """Config keys the environment owns: {key: (value, env knob)}."""
        return {
            "actor_rollout_ref.model.path": (self.model, "MODEL_PATH"),
            "trainer.nnodes": (self.nnodes, "NNODES"),
            "data.train_files": (str(self.data_dir / RL_FILES[0]), "DATA_DIR"),
            "data.val_files": (str(self.data_dir / RL_FILES[1]), "DATA_DIR"),
            "trainer.n_gpus_per_node": (self.slots, "N_GPUS"),
            "trainer.experiment_name": (self.experiment, "EXPERIMENT"),
            "trainer.default_local_dir": (str(self.checkpoint_dir), "CHECKPOINT_DIR"),
        }


def choose_model(
    model_path: str, base: str, manifest: Path = SFT_MANIFEST, base_why: str = "BASE_MODEL"
) -> tuple[str, str, dict[str, Any]]:
    """(model, why, manifest fields): MODEL_PATH > the SFT checkpoint models/sft/latest.json names > `base` (the
    MODEL preset's model or BASE_MODEL, chosen `base_why`)."""
    if model_path:
        return model_path, "MODEL_PATH is set", {}
    try:
        data = read_sft_manifest(manifest)
    except ValueError as exc:
        raise LaunchError(
            f"{exc}: rerun the SFT notebook, remove the manifest to start from the released model, or set MODEL_PATH"
        ) from None
    if data is None:
        return base, f"no SFT manifest at {manifest}: the base model ({base_why})", {}
    accuracy = ", ".join(f"{k} {v}" for k, v in (data.get("eval_accuracy") or {}).items())
    details = [("MLflow run", data.get("mlflow_run_id")), ("created", data.get("created_at")), ("eval", accuracy)]
    shown = "; ".join(f"{label} {value}" for label, value in details if value)
    return str(data["path"]), f"latest SFT checkpoint in {manifest}" + (f" ({shown})" if shown else ""), data


def default_experiment(algo: str, model: str) -> str:
    """`ppo-qwen2.5-0.5b-instruct`, `grpo-<SFT run folder>`: says the algorithm and the model."""
    return f"{algo}-" + (re.sub(r"[^a-z0-9._-]+", "-", Path(model.rstrip("/")).name.lower()).strip("-.") or "model")


def local_ray_cluster(env: Mapping[str, str]) -> str | None:
    """This node's `ray start` cluster, which main_ppo's `ray.init()` joins (Ray's own lookup, without ray)."""
    current = Path(env.get("RAY_TMPDIR") or env.get("TMPDIR") or "/tmp") / "ray" / "ray_current_cluster"
    return (current.read_text(encoding="utf-8").strip() or None) if current.is_file() else None


def hydra_str(value: Any) -> str:
    """A Hydra override value; strings stay strings whatever they hold (spaces, commas, '007', 'true')."""
    return "'" + str(value).replace("'", "\\'") + "'" if isinstance(value, str | Path) else json.dumps(value)


def launcher_overrides(settings: Settings) -> list[str]:
    """The overrides the environment decides, before the user's (which may override them)."""
    fn = rewards.get_reward(settings.reward)  # a function, or a functools.partial of one, in a file under rewards/
    func = getattr(fn, "func", fn)
    overrides = [f"{key}={hydra_str(value)}" for key, (value, _) in settings.owned().items()]
    overrides += [
        f"reward.custom_reward_function.path={hydra_str(inspect.getsourcefile(func))}",
        f"reward.custom_reward_function.name={func.__name__}",
        *(
            f"++reward.custom_reward_function.reward_kwargs.{k}={hydra_str(v)}"
            for k, v in getattr(fn, "keywords", {}).items()
        ),
    ]
    if "@" not in settings.mlflow_uri.partition("://")[2].split("/")[0]:  # credentials never go into the config
        overrides.append(f"{ENV_VARS}.MLFLOW_TRACKING_URI={hydra_str(settings.mlflow_uri)}")
    elif settings.ray_address:  # a local Ray inherits the URI from this process, a `ray start` cluster does not
        raise LaunchError(
            f"MLFLOW_TRACKING_URI carries credentials and Ray runs as a cluster ({settings.ray_address}): "
            "its actors get the URI only through the job config, which must not hold secrets, so verl "
            "would train untracked. Use a URI without user:password@ and set MLFLOW_TRACKING_USERNAME "
            "/ MLFLOW_TRACKING_PASSWORD instead (they reach every Ray worker, never the config: "
            "scripts/lib/ray_start.py), or `ray stop` so main_ppo starts a local Ray"
        )
    if settings.n_gpus == 0 and settings.ray_address:
        raise LaunchError(
            f"N_GPUS=0 runs verl on a local Ray the launcher starts (it hands that Ray the CPU "
            f"platform), but RAY_ADDRESS={settings.ray_address} asks to join a cluster: unset RAY_ADDRESS, "
            "or set N_GPUS to its GPUs"
        )
    # The MODEL preset's size-dependent values (verl_configs/models/<preset>.yaml) as `++key=value`, as cpu.yaml's.
    overrides += [f"++{k}={hydra_str(v)}" for k, v in config.leaves(model_presets.preset(settings.preset).rl)]
    if settings.n_gpus == 0:  # verl_configs/cpu.yaml as `++key=value`, in the file's order
        overrides += [f"++{k}={hydra_str(v)}" for k, v in config.leaves(OmegaConf.to_container(OmegaConf.load(CPU)))]
    return overrides


def shared_files(cfg: DictConfig, model_dir: Path) -> dict[str, Path]:
    """What every node of a cluster must see where this node does, besides the checkpoint folder: {what: path}."""

    def paths(value: Any) -> list[str]:  # data.train_files / val_files: a path or a list of paths
        return [value] if isinstance(value, str) else [p for v in value for p in paths(v)]

    data = paths(cfg.data.train_files) + paths(cfg.data.val_files)
    return {f"data {Path(f).name}": Path(f) for f in data} | {"model": model_dir / "config.json"}


def add(overrides: list[str], cfg: DictConfig, key: str, value: Any) -> None:
    """Append `key=value` to the overrides and set it in the composed config: the same as composing with it."""
    overrides[:] = [o for o in overrides if not o.startswith(f"{key}=")] + [f"{key}={hydra_str(value)}"]
    OmegaConf.update(cfg, key.lstrip("+"), value, force_add=True)


def build(settings: Settings, user: list[str]) -> tuple[list[str], DictConfig, list[config.ConfigError]]:
    """(overrides, composed config, problems): the one code path dry runs and real launches share."""
    overrides = [*launcher_overrides(settings), *user]
    cfg = config.compose_config(f"{settings.algo}_gsm8k", overrides)
    if settings.ray_address is None and OmegaConf.select(cfg, "ray_kwargs.ray_init.num_cpus") is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # Logical CPUs: Ray does not pin cores, so the machine's count, or verl's budget where that is larger.
        add(overrides, cfg, "ray_kwargs.ray_init.num_cpus", max(cpus, preflight.ray_cpu_budget(cfg)))
    if settings.run_id:
        add(overrides, cfg, f"{ENV_VARS}.MLFLOW_RUN_ID", settings.run_id)
    problems = config.check_config(cfg, user)
    # The Ray main_ppo starts: too small is refused here, so that a dry run refuses it as the launch does.
    local = OmegaConf.select(cfg, "ray_kwargs.ray_init.num_cpus")
    if settings.ray_address is None and local is not None and int(local) < (need := preflight.ray_cpu_budget(cfg)):
        why = f"{local}, but {preflight.ray_cpu_needs(cfg)}: raise it to >= {need}"
        why += " (logical CPUs: Ray does not pin cores)"
        problems.append(config.ConfigError("ray_kwargs.ray_init.num_cpus", why))
    problems += [
        config.ConfigError(key, f"set it with the {env} environment variable, not a Hydra override")
        for key, (value, env) in settings.owned().items()
        if OmegaConf.select(cfg, key) != value
    ]
    # GPU memory, estimated per role (scripts/rl/memory.py): a preset that cannot fit is refused here, so that a
    # dry run refuses it as the launch does. On CPU there is no GPU to fill.
    if settings.n_gpus and not (estimate := memory_estimate(settings, cfg)).fits:
        problems.append(config.ConfigError("memory", estimate.refusal(settings.preset)))
    return overrides, cfg, problems


def memory_estimate(settings: Settings, cfg: DictConfig) -> memory.Estimate:
    """Per-GPU memory of `cfg` for the preset's shapes (an SFT checkpoint or a local copy has its base model's)."""
    return memory.estimate(cfg, model_presets.preset(settings.preset).arch)


FITS_ALGOS = ("ppo", "grpo")  # PPO: actor, critic and reference; GRPO: actor and reference (the others: no more)
FITS_GPUS = (1, 2, 4, 8)


def fits_table() -> str:
    """docs/rl.md's "What fits" table: for each preset and algorithm, the estimated peak memory per GPU
    (scripts/rl/memory.py) of the config a launch composes (build()), on 1, 2, 4 and 8 H100 80GB. Regenerate it with
    `python -c "from scripts.rl.launch import fits_table; print(fits_table())"`; tests/test_model_presets.py checks
    that the doc's copy is this."""
    head = [f"{g} GPU{'s' if g > 1 else ''}" for g in FITS_GPUS]
    rows = ["| preset | algorithm | " + " | ".join(head) + " |", "| --- | --- |" + " --- |" * len(FITS_GPUS)]
    for name in model_presets.names():
        preset = model_presets.preset(name)
        for algo in FITS_ALGOS:  # composed once (on 4 GPUs: nothing else in the config depends on the count)
            env = {
                "MODEL": name,
                "MODEL_PATH": preset.id,
                "CHECKPOINT_DIR": "/nonexistent",
                "RAY_TMPDIR": "/nonexistent",
            }
            _, cfg, _ = build(Settings.from_env(algo, env), [])
            cells = [memory.estimate(cfg, preset.arch, gpus) for gpus in FITS_GPUS]
            rows.append(
                f"| `{name}` | {algo} | " + " | ".join(f"{fit_word(e)}, {e.peak.gib:.1f}" for e in cells) + " |"
            )
    return "\n".join(rows)


def fit_word(estimate: memory.Estimate) -> str:
    """fits / tight (over 90% of the GPU: within the estimate's error) / **no** (the launch refuses it)."""
    return "**no**" if not estimate.fits else "tight" if estimate.peak.gib > 0.9 * memory.GPU_GIB else "fits"


def summary(settings: Settings, cfg: DictConfig, reward: str, written: tuple[str, Path]) -> str:
    """What will run (or would, for a dry run), one line per topic."""

    def get(key: str) -> Any:
        return OmegaConf.select(cfg, key)

    actor_ref, gpus = "actor_rollout_ref", settings.slots * settings.nnodes
    n, batch, mini = (
        get(f"{actor_ref}.rollout.n"),
        get("data.train_batch_size"),
        get(f"{actor_ref}.actor.ppo_mini_batch_size"),
    )
    tp, critic, ref = (
        get(f"{actor_ref}.rollout.tensor_model_parallel_size"),
        config.need_critic(cfg),
        config.need_ref(cfg),
    )
    kl = (
        f"KL loss {get(f'{actor_ref}.actor.kl_loss_type')} {get(f'{actor_ref}.actor.kl_loss_coef')}"
        if ref
        else "no KL"
    )
    kl = f"KL in reward {get('algorithm.kl_ctrl.kl_coef')}" if get("algorithm.use_kl_in_reward") else kl
    ready, data, rows = preflight.data_status(settings.data_dir)
    if ready:
        data += f" -> {rows[RL_FILES[0]] // batch} steps/epoch x {get('trainer.total_epochs')} epochs"
        data += f", capped at {cap} steps" if (cap := get("trainer.total_training_steps")) else ""
    else:
        data += " (a real launch runs data/prepare_gsm8k.py first)"
    micro = f"micro batch {get(f'{actor_ref}.actor.ppo_micro_batch_size_per_gpu')}/GPU"
    if get(f"{actor_ref}.actor.use_dynamic_bsz"):
        micro = f"dynamic batches of <= {get(f'{actor_ref}.actor.ppo_max_token_len_per_gpu')} tokens/GPU"
    where = (
        f"{settings.nnodes} node(s) x {settings.n_gpus} = {gpus}"
        if settings.n_gpus
        else "none: CPU (verl_configs/cpu.yaml), 1 slot"
    )
    loggers = ", ".join(get("trainer.logger"))
    if "mlflow" in loggers:
        loggers += (
            f" -> {settings.mlflow_uri}, experiment {get('trainer.project_name')}, run {settings.run_id or 'new'}"
        )
    actor = f"{actor_ref}.actor"
    loss = (
        f"{get(f'{actor}.policy_loss.loss_mode')} policy loss, clip [{get(f'{actor}.clip_ratio_low')}, "
        f"{get(f'{actor}.clip_ratio_high')}], {get(f'{actor}.loss_agg_mode')} aggregation"
    )
    if get("algorithm.filter_groups.enable"):
        loss += f", dynamic sampling (drops groups of equal {get('algorithm.filter_groups.metric')})"
    if (manager := get("reward.reward_manager.name")) not in (None, "naive"):
        loss += f", reward manager {manager}"
    model = f"{actor_ref}.model"
    lora = get(f"{model}.lora_rank") and (  # docs/rl.md, LoRA
        f"rank {get(f'{model}.lora_rank')}, alpha {get(f'{model}.lora_alpha')}, {get(f'{model}.target_modules')}; "
        "vLLM serves the adapter; checkpoints merged for evaluation (scripts/lib/lora.py)"
    )
    step, keep = latest_step(settings.checkpoint_dir), get("trainer.max_actor_ckpt_to_keep")
    ray = f"local start, num_cpus={get('ray_kwargs.ray_init.num_cpus')} (verl needs {preflight.ray_cpu_budget(cfg)})"
    rows = {
        "config": f"{config.CONFIG_DIR / settings.algo}_gsm8k.yaml (+ gsm8k_base.yaml)",
        "model": f"{settings.model}  ({settings.model_reason})",
        "preset": f"{settings.preset}: {model_presets.preset(settings.preset).path} ({settings.preset_reason})",
        "algorithm": f"{settings.algo}: adv_estimator={get('algorithm.adv_estimator')}, "
        f"critic {'on' if critic else 'off'}, ref {'on' if ref else 'off'} ({kl})",
        "loss": loss,
        **({"lora": lora} if lora else {}),
        "GPUs": f"{where}; rollout {get(f'{actor_ref}.rollout.name')} TP {tp} -> {gpus // tp} replica(s)",
        "batch": f"{batch} prompts x n={n} = {batch * n} sequences/step; mini batch {mini} "
        f"({batch // mini} updates/step); {micro}",
        "data": f"{settings.data_dir}: {data}",
        "reward": f"REWARD={settings.reward}: {reward} (as verl's loader resolves it)",
        "logger": loggers,
        "checkpoints": f"{get('trainer.default_local_dir')} every {get('trainer.save_freq')} steps (keep {keep})",
        "resume": f"from global_step_{step}" if step else "fresh start",
        "ray": f"cluster at {settings.ray_address}" if settings.ray_address else ray,
        **(
            memory_estimate(settings, cfg).rows(settings.preset)
            if settings.n_gpus
            else {"memory": "no GPU estimate on CPU"}
        ),
        written[0]: written[1],
    }
    return "\n".join(f"  {key:<12}{value}" for key, value in rows.items())


def check_resume(settings: Settings, cfg: DictConfig, logged_params: dict[str, str]) -> None:
    """Refuse a rerun whose config differs from the one its MLflow run already logged as params."""
    if not ((saved := settings.checkpoint_dir / "launch_config.yaml").is_file() and logged_params):
        return
    old, new = (dict(config.leaves(OmegaConf.to_container(c, resolve=True))) for c in (OmegaConf.load(saved), cfg))
    if changed := sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>")):
        raise LaunchError(
            f"{settings.checkpoint_dir} was launched with another config (changed: {', '.join(changed[:8])}"
            f"{', ...' if len(changed) > 8 else ''}). MLflow refuses changed parameters on the run this "
            "job would continue, and verl would then train untracked. Rerun with the old settings, "
            f"choose a new EXPERIMENT, or delete {settings.checkpoint_dir / preflight.RUN_ID_FILE} to continue in a "
            "new MLflow run"
        )


def launch(settings: Settings, user: list[str], dry_run: bool = False, skip_preflight: bool = False) -> int:
    t0 = time.monotonic()
    print(f"model: {settings.model}\n  why: {settings.model_reason}", flush=True)
    overrides, cfg, problems = build(settings, user)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    reward = config.verl_validate(cfg, rewards.get_reward(settings.reward))
    print(f"config: checks, verl's validate_config and reward loader: ok ({time.monotonic() - t0:.1f} s)")
    if dry_run:
        atomic_write(out := settings.checkpoint_dir / "dry_run_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        print(f"\nverl {settings.algo.upper()} on GSM8K, dry run (nothing launched):")
        print(summary(settings, cfg, reward, ("resolved", out)) + f"\ndry run took {time.monotonic() - t0:.1f} s")
        return 0

    if not preflight.data_status(settings.data_dir)[0]:
        preflight.prepare_data(settings.data_dir, settings.gsm8k_source)
    world_size = settings.slots * settings.nnodes
    print(
        f"preflight: checkpoints {preflight.check_world_size(settings.checkpoint_dir, world_size)}",
        flush=True,
    )
    keep = cfg.trainer.max_actor_ckpt_to_keep or 0
    for gone in preflight.prune_checkpoints(settings.checkpoint_dir, keep) if keep else []:
        print(f"preflight: removed {gone} (trainer.max_actor_ckpt_to_keep={keep}; verl prunes only its own)")
    if not skip_preflight:
        if settings.n_gpus:
            print(
                f"preflight: GPUs {preflight.check_gpus(settings.n_gpus, cfg)}; /dev/shm {preflight.check_shm()}",
                flush=True,
            )
        model_dir = preflight.ensure_model(settings.model)
        shared = shared_files(cfg, model_dir)
        ray = preflight.check_ray(
            settings.ray_address, settings.slots, settings.nnodes, cfg, settings.checkpoint_dir, shared
        )
        print(f"preflight: Ray {ray}", flush=True)
        # verl deletes its oldest checkpoint before it saves the next: at most `keep` new ones on disk
        hf = "hf_model" in cfg.actor_rollout_ref.actor.checkpoint.save_contents
        need = max(keep, 1) * preflight.checkpoint_bytes(model_dir, hf_weights=hf, critic=config.need_critic(cfg))
        print(f"preflight: disk {preflight.check_disk(settings.checkpoint_dir, need)}", flush=True)
    logged: dict[str, str] = {}
    if "mlflow" in cfg.trainer.logger:
        tags = {
            "algorithm": settings.algo,
            "model": settings.model,
            "model_source": settings.model_reason,
            "reward": settings.reward,
        }
        tags |= {
            "launcher": "scripts.rl.launch",
            **({"sft_mlflow_run_id": str(settings.sft_run_id)} if settings.sft_run_id else {}),
        }
        uri, settings.run_id, logged = preflight.ensure_mlflow_run(
            settings.mlflow_uri, cfg.trainer.project_name, settings.experiment, settings.checkpoint_dir, tags
        )
        if uri != settings.mlflow_uri:  # ALLOW_NO_TRACKING=1 with the server down: verl logs into the local store
            settings.mlflow_uri = uri
            add(overrides, cfg, f"{ENV_VARS}.MLFLOW_TRACKING_URI", uri)
        # New on a first launch: into Ray's runtime_env.
        add(overrides, cfg, f"{ENV_VARS}.MLFLOW_RUN_ID", settings.run_id)
    check_resume(settings, cfg, logged)
    atomic_write(saved := settings.checkpoint_dir / "launch_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    print(f"\nverl {settings.algo.upper()} on GSM8K:\n{summary(settings, cfg, reward, ('config', saved))}")
    cmd = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        f"--config-path={config.CONFIG_DIR}",
        f"--config-name={settings.algo}_gsm8k",
        *overrides,
    ]
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=settings.mlflow_uri,
        **({"MLFLOW_RUN_ID": settings.run_id} if settings.run_id else {}),
    )
    if settings.ray_address is None:  # a local Ray of its own for each run (short: AF_UNIX paths end at 107 bytes)
        for line in preflight.reap_killed_launches():
            print(f"preflight: {line}", flush=True)
        env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        Path(env["RAY_TMPDIR"], preflight.LAUNCH_PID).write_text(str(os.getpid()), encoding="utf-8")
        print(f"ray logs: {env['RAY_TMPDIR']}/ray/session_latest/logs")
    # verl imports these in every process (Ray workers inherit this env): metrics that outlive an MLflow outage,
    # a local Ray start that survives a busy machine, and on CPU scripts/rl/cpu_plugin.py.
    ours = (RESILIENT_MLFLOW, RAY_START, CPU_PLUGIN)
    modules = [m for m in settings.external_modules.split(",") if m and m not in ours]
    modules += [RESILIENT_MLFLOW, RAY_START, *([CPU_PLUGIN] if settings.n_gpus == 0 else [])]
    env["VERL_USE_EXTERNAL_MODULES"] = ",".join(modules)
    env["PYTHONWARNINGS"] = ",".join(w for w in (VERL_NOISE, os.environ.get("PYTHONWARNINGS")) if w)
    if settings.n_gpus == 0:
        env["VERL_PLATFORM"] = "cpu"
    # Ray puts the driver's cwd first on every worker's sys.path: not scripts/ (our names would shadow
    # packages) but the checkpoint dir, which holds no Python.
    os.chdir(settings.checkpoint_dir)
    print(f"exec (in {settings.checkpoint_dir}): " + " ".join(cmd), flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run_rl.sh", description=__doc__.splitlines()[0], epilog="Other arguments: Hydra overrides."
    )
    parser.add_argument("--algo", choices=algorithms(), required=True, help="verl_configs/<algo>_gsm8k.yaml")
    parser.add_argument("--dry-run", action="store_true", help="compose + validate, print, write YAML; no launch")
    parser.add_argument("--skip-preflight", action="store_true", help="skip the GPU/shm/Ray/disk checks")
    args, user = parser.parse_known_args(argv)
    if unknown := [o for o in user if o.startswith("-")]:
        parser.error(
            f"unknown option(s) {' '.join(unknown)}: settings are environment variables (docs/rl.md); "
            "Hydra overrides look like key=value"
        )
    try:
        return launch(Settings.from_env(args.algo), user, args.dry_run, args.skip_preflight)
    except (config.ConfigError, LaunchError) as exc:  # a config problem exits 2, anything else a launch needs 1
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, config.ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
