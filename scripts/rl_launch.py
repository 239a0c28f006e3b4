"""The one launcher behind scripts/run_ppo.sh and scripts/run_grpo.sh: verl PPO/GRPO on GSM8K.

    bash scripts/run_ppo.sh [--dry-run] [hydra overrides...]      # what users run (env knobs: _launch_rl.sh)
    python -m scripts.rl_launch --algo grpo --n-gpus 1 --dry-run  # the same with flags (from the repo root)

Every launch, dry or real, builds one override list (`build`) and composes
verl_configs/<algo>_gsm8k.yaml with it, then checks it three ways (scripts/rl_config.py): Hydra's
struct mode plus a `+key` typo check, the rules verl enforces only inside its Ray workers, and
verl's own `validate_config` plus its reward loader (which must resolve rewards/gsm8k.py). A bad
config exits 2 naming the key, in about a second for all but verl's own checks.

`--dry-run` stops there: it prints a summary and writes the resolved YAML (default
<CHECKPOINT_DIR>/dry_run_config.yaml). It needs no GPU, Ray cluster or network when the model is a
local directory. A real launch goes on (scripts/rl_preflight.py):
  1. runs data/prepare_gsm8k.py if DATA_DIR lacks train/val parquet (or they are stale),
  2. preflight: visible GPUs = N_GPUS, /dev/shm, Ray cluster GPUs/CPUs, model files, free disk,
  3. MLflow: reachable; the run this checkpoint dir logs into is created once and its id kept in
     <CHECKPOINT_DIR>/mlflow_run_id; a rerun passes it as MLFLOW_RUN_ID (Ray runtime_env) so verl's
     tracker continues the same run while verl resumes from the last checkpoint,
  4. writes the resolved config to <CHECKPOINT_DIR>/launch_config.yaml and execs
     `python -m verl.trainer.main_ppo --config-path=verl_configs --config-name=<algo>_gsm8k <overrides>`.

Model: MODEL_PATH, else the SFT checkpoint models/sft/latest.json names, else
Qwen/Qwen2.5-0.5B-Instruct. EXPERIMENT defaults to <algo>-<model folder name> and CHECKPOINT_DIR to
models/rl/<EXPERIMENT>: rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scripts.lib.atomic import atomic_write
from scripts.lib.checkpoints import read_sft_manifest
from scripts.lib.paths import DEFAULT_MODEL, REPO_ROOT, SFT_MANIFEST
from scripts.rl_config import (
    CONFIG_DIR,
    REWARD_FILE,
    ConfigError,
    ConfigIssue,
    check_config,
    compose_config,
    cpu_overrides,
    normalize_overrides,
    uses_critic,
    uses_ref,
    verl_validate,
)
from scripts.rl_preflight import (
    DATA_FILES,
    RUN_ID_FILE,
    LaunchError,
    check_disk,
    check_gpus,
    check_ray,
    check_shm,
    check_world_size,
    checkpoint_bytes,
    data_status,
    ensure_mlflow_run,
    ensure_model,
    free_gpu_memory,
    latest_step,
    prepare_data,
    prune_checkpoints,
    ray_cpu_budget,
    read_run_id,
    require_mlflow,
)

logger = logging.getLogger(__name__)

CONFIG_NAMES = {"ppo": "ppo_gsm8k", "grpo": "grpo_gsm8k"}
LAUNCH_CONFIG = "launch_config.yaml"
DRY_RUN_CONFIG = "dry_run_config.yaml"
CPU_PLUGIN = "scripts.rl_cpu"  # the module verl imports on CPU (VERL_USE_EXTERNAL_MODULES)


@dataclass
class Settings:
    """What the environment decides; every hyperparameter lives in verl_configs/."""

    algo: str
    model: str
    model_reason: str
    n_gpus: int
    nnodes: int
    data_dir: Path
    experiment: str
    checkpoint_dir: Path
    mlflow_uri: str
    ray_address: str | None
    ray_num_cpus: int
    sft_run_id: str | None = None
    run_id: str | None = None

    @property
    def config_name(self) -> str:
        return CONFIG_NAMES[self.algo]

    @property
    def cpu(self) -> bool:
        """N_GPUS=0: verl on CPU (verl_configs/cpu.yaml, scripts/rl_cpu.py) with one declared GPU slot."""
        return self.n_gpus == 0

    @property
    def slots(self) -> int:
        """trainer.n_gpus_per_node: the GPUs, or on CPU the one slot verl's placement groups ask for."""
        return max(self.n_gpus, 1)


def choose_model(model_path: str, manifest: Path = SFT_MANIFEST) -> tuple[str, str, dict[str, Any]]:
    """(model, why, manifest fields): MODEL_PATH > the SFT checkpoint in models/sft/latest.json > BASE_MODEL > Qwen."""
    if model_path:
        return model_path, "MODEL_PATH is set", {}
    try:
        data = read_sft_manifest(manifest)
    except ValueError as exc:
        raise LaunchError(
            f"{exc}: rerun the SFT notebook, remove the manifest to start from the released model, or set MODEL_PATH"
        ) from None
    if data is None:
        base = os.environ.get("BASE_MODEL") or DEFAULT_MODEL  # .env's BASE_MODEL in the stack
        return base, f"no SFT manifest at {manifest}: the base model (BASE_MODEL)", {}
    path = data["path"]
    accuracy = ", ".join(f"{k} {v}" for k, v in (data.get("eval_accuracy") or {}).items())
    details = [("MLflow run", data.get("mlflow_run_id")), ("created", data.get("created_at")), ("eval", accuracy)]
    shown = "; ".join(f"{label} {value}" for label, value in details if value)
    return str(path), f"latest SFT checkpoint in {manifest}" + (f" ({shown})" if shown else ""), data


def default_experiment(algo: str, model: str) -> str:
    """`ppo-qwen2.5-0.5b-instruct`, `grpo-<SFT run folder>`: says the algorithm and the model."""
    tag = re.sub(r"[^a-z0-9._-]+", "-", Path(model.rstrip("/")).name.lower()).strip("-.") or "model"
    return f"{algo}-{tag}"


def find_ray_address(cpu: bool = False) -> str | None:
    """The cluster `ray.init()` in main_ppo will join (RAY_ADDRESS, else this node's `ray start`), or None.

    A CPU run (N_GPUS=0) starts a Ray of its own in a fresh temp dir, where `ray.init()` finds no cluster: a
    `ray start` head on this node (the verl container's) is left alone, only RAY_ADDRESS would be joined."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    if cpu:
        return None
    # Ray's own lookup (ray._common.utils.get_default_system_temp_dir), without importing ray.
    temp = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform == "linux" else None) or "/tmp"
    current = Path(temp) / "ray" / "ray_current_cluster"
    return (current.read_text(encoding="utf-8").strip() or None) if current.is_file() else None


def settings_from_args(args: argparse.Namespace) -> Settings:
    model, reason, manifest = choose_model(args.model)
    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
        raise LaunchError(
            f"MODEL_PATH={model} is not a directory: point it at a model folder (config.json) or a hub id"
        )
    experiment = args.experiment or default_experiment(args.algo, model)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", experiment):
        raise LaunchError(f"EXPERIMENT={experiment!r}: use letters, digits, '.', '_' and '-' only")
    checkpoint_dir = Path(args.checkpoint_dir or REPO_ROOT / "models" / "rl" / experiment).expanduser().resolve()
    return Settings(
        algo=args.algo,
        model=model,
        model_reason=reason,
        n_gpus=args.n_gpus,
        nnodes=args.nnodes,
        data_dir=Path(args.data_dir or REPO_ROOT / "data" / "gsm8k").expanduser().resolve(),
        experiment=experiment,
        checkpoint_dir=checkpoint_dir,
        mlflow_uri=args.mlflow_uri,
        ray_address=find_ray_address(cpu=args.n_gpus == 0),
        ray_num_cpus=args.ray_num_cpus,  # 0: chosen in build() from the composed config
        sft_run_id=manifest.get("mlflow_run_id"),
        run_id=read_run_id(checkpoint_dir),
    )


def has_credentials(uri: str) -> bool:
    """True for http://user:password@host URIs."""
    return "@" in uri.partition("://")[2].split("/")[0]


def hydra_str(value: str) -> str:
    """A Hydra override value that stays a string whatever it holds (spaces, commas, '007', 'true')."""
    return "'" + value.replace("'", "\\'") + "'"


def launcher_overrides(s: Settings) -> list[str]:
    """The overrides the environment decides, passed before the user's (which may override them)."""
    env_vars = "+ray_kwargs.ray_init.runtime_env.env_vars"
    overrides = [
        f"actor_rollout_ref.model.path={hydra_str(s.model)}",
        f"data.train_files={hydra_str(str(s.data_dir / DATA_FILES[0]))}",
        f"data.val_files={hydra_str(str(s.data_dir / DATA_FILES[1]))}",
        f"trainer.n_gpus_per_node={s.slots}",
        f"trainer.nnodes={s.nnodes}",
        f"trainer.experiment_name={hydra_str(s.experiment)}",
        f"trainer.default_local_dir={hydra_str(str(s.checkpoint_dir))}",
        f"reward.custom_reward_function.path={hydra_str(str(REWARD_FILE))}",
    ]
    # verl's MLflow tracker runs inside the TaskRunner Ray actor. Actors of a cluster started with
    # `ray start` get that process's environment, not this shell's; the job's runtime_env reaches
    # every actor on every node. (The compose file also sets the URI for `ray start`: belt and braces.)
    if not has_credentials(s.mlflow_uri):  # credentials never go into the config (MLflow logs it as params)
        overrides.append(f"{env_vars}.MLFLOW_TRACKING_URI={hydra_str(s.mlflow_uri)}")
    elif s.ray_address is not None:
        raise LaunchError(
            f"MLFLOW_TRACKING_URI carries credentials and Ray runs as a cluster ({s.ray_address}): its actors get "
            "the URI only through the job config, which must not hold secrets, so verl would train untracked. "
            "Use a URI without user:password@ and set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD where "
            "`ray start` runs, or `ray stop` so main_ppo starts a local Ray (it inherits the URI from this process)"
        )
    if s.run_id:
        overrides.append(f"{env_vars}.MLFLOW_RUN_ID={hydra_str(s.run_id)}")
    if s.cpu and s.ray_address is not None:
        raise LaunchError(
            f"N_GPUS=0 runs verl on a local Ray the launcher starts (it hands that Ray the CPU platform), but "
            f"RAY_ADDRESS={s.ray_address} asks to join a cluster: unset RAY_ADDRESS, or set N_GPUS to its GPUs"
        )
    if s.cpu:
        overrides += cpu_overrides()  # verl_configs/cpu.yaml
    if s.ray_address is None and s.ray_num_cpus and not s.cpu:
        # RAY_NUM_CPUS for the local Ray main_ppo starts (never passed when joining a running cluster). On CPU,
        # cpu.yaml's num_cpus: there RAY_NUM_CPUS sizes the verl container's `ray start` head, not this Ray.
        overrides.append(f"ray_kwargs.ray_init.num_cpus={s.ray_num_cpus}")
    return overrides


def local_ray_cpus(cfg: DictConfig) -> int:
    """Logical CPUs for a Ray main_ppo starts itself: this machine's, at least verl's budget (Ray does not pin)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(cpus, ray_cpu_budget(cfg))


def build(s: Settings, user: list[str]) -> tuple[list[str], DictConfig, list[ConfigIssue]]:
    """(overrides, composed config, problems): the one code path dry runs and real launches share."""
    launcher = launcher_overrides(s)
    overrides = [*launcher, *normalize_overrides(s.config_name, launcher, user)]
    cfg = compose_config(s.config_name, overrides)
    if s.ray_address is None and OmegaConf.select(cfg, "ray_kwargs.ray_init.num_cpus") is None:
        cpus = local_ray_cpus(cfg)  # the same as composing with this override
        overrides.append(f"ray_kwargs.ray_init.num_cpus={cpus}")
        OmegaConf.update(cfg, "ray_kwargs.ray_init.num_cpus", cpus)
    problems = check_config(cfg)
    # The environment owns these (the preflight, run-id file and summary use them): one place each.
    owned = {
        "actor_rollout_ref.model.path": (s.model, "MODEL_PATH"),
        "data.train_files": (str(s.data_dir / DATA_FILES[0]), "DATA_DIR"),
        "data.val_files": (str(s.data_dir / DATA_FILES[1]), "DATA_DIR"),
        "trainer.n_gpus_per_node": (s.slots, "N_GPUS"),
        "trainer.nnodes": (s.nnodes, "NNODES"),
        "trainer.experiment_name": (s.experiment, "EXPERIMENT"),
        "trainer.default_local_dir": (str(s.checkpoint_dir), "CHECKPOINT_DIR"),
    }
    for key, (value, env) in owned.items():
        if OmegaConf.select(cfg, key) != value:
            problems.append(ConfigIssue(key, f"set it with the {env} environment variable, not a Hydra override"))
    return overrides, cfg, problems


def flat(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as {'a.b.c': value} (lists kept whole)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def data_line(s: Settings, cfg: DictConfig) -> str:
    ready, desc, rows = data_status(s.data_dir)
    if not ready:
        return f"{s.data_dir}: {desc} (a real launch runs data/prepare_gsm8k.py first)"
    batch, epochs = cfg.data.train_batch_size, cfg.trainer.total_epochs
    steps = rows[DATA_FILES[0]] // batch
    warn = f" (!) fewer train rows than data.train_batch_size={batch}" if not steps else ""
    total = cfg.trainer.total_training_steps
    cap = f", capped at trainer.total_training_steps={total}" if total else ""
    return f"{s.data_dir}: {desc} -> {steps} steps/epoch x {epochs} epochs = {steps * epochs} steps{cap}{warn}"


def summary(s: Settings, cfg: DictConfig, facts: dict[str, Any], written: tuple[str, Path]) -> str:
    """The short human summary of what will run (or would, for a dry run)."""

    def g(key: str) -> Any:
        return OmegaConf.select(cfg, key)

    ar, gpus, critic = "actor_rollout_ref", s.slots * s.nnodes, uses_critic(cfg)
    n, batch, mini = g(f"{ar}.rollout.n"), g("data.train_batch_size"), g(f"{ar}.actor.ppo_mini_batch_size")
    tp = g(f"{ar}.rollout.tensor_model_parallel_size")
    if g("algorithm.use_kl_in_reward"):
        kl = f"KL in reward {g('algorithm.kl_ctrl.kl_coef')}"
    elif g(f"{ar}.actor.use_kl_loss"):
        kl = f"KL loss {g(f'{ar}.actor.kl_loss_type')} {g(f'{ar}.actor.kl_loss_coef')}"
    else:
        kl = "no KL"
    if g(f"{ar}.actor.use_dynamic_bsz"):
        tokens = f"dynamic batches of <= {g(f'{ar}.actor.ppo_max_token_len_per_gpu')} tokens/GPU"
    else:
        tokens = f"micro batch {g(f'{ar}.actor.ppo_micro_batch_size_per_gpu')}/GPU"
    loggers = list(g("trainer.logger"))
    run = s.run_id or f"new (created at launch; its id is kept in {RUN_ID_FILE})"
    mlflow = f" -> {s.mlflow_uri}, experiment {g('trainer.project_name')}, run {run}" if "mlflow" in loggers else ""
    step = latest_step(s.checkpoint_dir)
    rows = [
        ("config", f"{CONFIG_DIR / s.config_name}.yaml (+ gsm8k_base.yaml)"),
        ("model", f"{s.model}  ({s.model_reason})"),
        ("algorithm", f"{s.algo}: adv_estimator={g('algorithm.adv_estimator')}, critic {'on' if critic else 'off'}, "
                      f"ref {'on' if uses_ref(cfg) else 'off'} ({kl}), actor {g(f'{ar}.actor.strategy')}"),
        ("GPUs", ("none: CPU (verl_configs/cpu.yaml, scripts/rl_cpu.py), 1 slot" if s.cpu else
                  f"{s.nnodes} node(s) x {s.n_gpus} = {gpus}") + f"; rollout {g(f'{ar}.rollout.name')} TP {tp} -> "
                 f"{gpus // tp} replica(s)"),
        ("batch", f"{batch} prompts x n={n} = {batch * n} sequences/step; mini batch {mini} prompts "
                  f"({batch // mini} updates/step); {tokens}"),
        ("data", data_line(s, cfg)),
        ("reward", f"{facts['reward_source']} {facts['reward_kwargs']} (as verl's loader resolves it)"),
        ("logger", ", ".join(loggers) + mlflow),
        ("checkpoints", f"{g('trainer.default_local_dir')} every {g('trainer.save_freq')} steps (keep "
                        f"{g('trainer.max_actor_ckpt_to_keep')}); HF weights in global_step_N/actor/huggingface"),
        ("resume", f"from global_step_{step}" if step else "fresh start"),
        ("ray", f"cluster at {s.ray_address}" if s.ray_address else
                f"local start, num_cpus={g('ray_kwargs.ray_init.num_cpus')} (verl needs {ray_cpu_budget(cfg)})"),
        written,
    ]  # fmt: skip
    return "\n".join(f"  {key:<12}{value}" for key, value in rows)


def print_issues(problems: list[ConfigIssue]) -> bool:
    """Print problems (errors to stderr); True if any is an error."""
    for p in problems:
        print(p, file=sys.stderr if p.severity == "error" else sys.stdout)
    return any(p.severity == "error" for p in problems)


def check_resume(s: Settings, cfg: DictConfig, logged_params: dict[str, str]) -> None:
    """Refuse a rerun whose config differs from the one its MLflow run already logged as params."""
    saved = s.checkpoint_dir / LAUNCH_CONFIG
    if not (saved.is_file() and logged_params):
        return
    old, new = flat(OmegaConf.load(saved)), flat(cfg)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<unset>") != new.get(k, "<unset>"))
    if changed:
        raise LaunchError(
            f"{s.checkpoint_dir} was launched with another config (changed: {', '.join(changed[:8])}"
            f"{', ...' if len(changed) > 8 else ''}). MLflow refuses changed parameters on the run this job "
            "would continue, and verl would then train untracked. Rerun with the old settings, choose a new "
            f"EXPERIMENT, or delete {s.checkpoint_dir / RUN_ID_FILE} to continue in a new MLflow run"
        )


def launch(args: argparse.Namespace, user: list[str]) -> int:
    t0 = time.monotonic()
    s = settings_from_args(args)
    print(f"model: {s.model}\n  why: {s.model_reason}", flush=True)
    overrides, cfg, problems = build(s, user)
    if print_issues(problems):
        return 2
    facts = verl_validate(cfg)
    print(f"config: Hydra, worker rules, verl's validate_config and reward loader: ok ({time.monotonic() - t0:.1f} s)")

    if args.dry_run:
        out = Path(args.output).resolve() if args.output else s.checkpoint_dir / DRY_RUN_CONFIG
        atomic_write(out, OmegaConf.to_yaml(cfg, resolve=True))
        print(f"\nverl {s.algo.upper()} on GSM8K, dry run (nothing launched):")
        print(summary(s, cfg, facts, ("resolved", out)))
        print(f"dry run took {time.monotonic() - t0:.1f} s")
        return 0

    if not data_status(s.data_dir)[0]:
        prepare_data(s.data_dir)
    print(f"preflight: checkpoints {check_world_size(s.checkpoint_dir, s.slots * s.nnodes)}", flush=True)
    keep = cfg.trainer.max_actor_ckpt_to_keep or 0
    for gone in prune_checkpoints(s.checkpoint_dir, keep) if keep else []:
        print(f"preflight: removed {gone} (trainer.max_actor_ckpt_to_keep={keep}; verl prunes only its own)")
    if not args.skip_preflight:
        if not s.cpu:
            print(f"preflight: GPUs {check_gpus(s.n_gpus)}; /dev/shm {check_shm()}", flush=True)
            print(f"preflight: GPU memory {free_gpu_memory(cfg)}", flush=True)
        print(f"preflight: Ray {check_ray(s.ray_address, s.slots, s.nnodes, cfg)}", flush=True)
        # verl deletes its oldest before it saves the next: at most `keep` new ones (the kept old ones are on disk)
        hf = "hf_model" in cfg.actor_rollout_ref.actor.checkpoint.save_contents
        need = max(keep, 1) * checkpoint_bytes(ensure_model(s.model), hf_weights=hf, critic=uses_critic(cfg))
        print(f"preflight: disk {check_disk(s.checkpoint_dir, need)}", flush=True)
    logged: dict[str, str] = {}
    if "mlflow" in cfg.trainer.logger:
        require_mlflow(s.mlflow_uri)
        tags = {"algorithm": s.algo, "model": s.model, "model_source": s.model_reason, "launcher": "rl_launch.py"}
        if s.sft_run_id:
            tags["sft_mlflow_run_id"] = str(s.sft_run_id)
        project, name = cfg.trainer.project_name, cfg.trainer.experiment_name
        s.run_id, logged = ensure_mlflow_run(s.mlflow_uri, project, name, s.checkpoint_dir, tags)
        overrides, cfg, _ = build(s, user)  # now with MLFLOW_RUN_ID in the Ray runtime_env
    check_resume(s, cfg, logged)
    saved = s.checkpoint_dir / LAUNCH_CONFIG
    atomic_write(saved, OmegaConf.to_yaml(cfg, resolve=True))
    print(f"\nverl {s.algo.upper()} on GSM8K:")
    print(summary(s, cfg, facts, ("config", saved)))
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={CONFIG_DIR}"]
    cmd += [f"--config-name={s.config_name}", *overrides]
    env = dict(os.environ, MLFLOW_TRACKING_URI=s.mlflow_uri)
    if s.run_id:
        env["MLFLOW_RUN_ID"] = s.run_id  # for a Ray instance main_ppo starts itself (it inherits this env)
    if s.ray_address is None:  # a local Ray of its own for each run (short: AF_UNIX paths end at 107 bytes)
        env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        print(f"ray logs: {env['RAY_TMPDIR']}/ray/session_latest/logs")
    if s.cpu:  # verl imports scripts/rl_cpu.py in every process (Ray workers inherit this env)
        modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m and m != CPU_PLUGIN]
        env.update(VERL_PLATFORM="cpu", VERL_USE_EXTERNAL_MODULES=",".join([*modules, CPU_PLUGIN]))
    # Ray puts the driver's cwd first on every worker's sys.path: not scripts/ (our names would shadow
    # packages), the checkpoint dir, which holds no Python.
    os.chdir(s.checkpoint_dir)
    print(f"exec (in {s.checkpoint_dir}): " + " ".join(cmd), flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Other arguments: Hydra overrides.")
    parser.add_argument("--algo", choices=sorted(CONFIG_NAMES), required=True)
    parser.add_argument("--dry-run", action="store_true", help="compose + validate, print, write YAML; no launch")
    # The environment knobs (scripts/_launch_rl.sh lists them) are read here, once, as the flags' defaults.
    env = {k: v for k, v in os.environ.items() if v}
    for name in ("N_GPUS", "NNODES", "RAY_NUM_CPUS"):
        if not env.get(name, "0").isdigit():
            parser.error(f"{name}={env[name]!r} in the environment: use a whole number (N_GPUS=0: CPU)")
    parser.add_argument("--model", default=env.get("MODEL_PATH", ""), help="MODEL_PATH (default: SFT manifest)")
    parser.add_argument("--n-gpus", type=int, default=env.get("N_GPUS", "4"), help="N_GPUS per node (0: CPU)")
    parser.add_argument("--nnodes", type=int, default=env.get("NNODES", "1"), help="NNODES (>1: a joined cluster)")
    parser.add_argument("--data-dir", default=env.get("DATA_DIR", ""), help="DATA_DIR (default: data/gsm8k)")
    parser.add_argument("--experiment", default=env.get("EXPERIMENT", ""), help="EXPERIMENT: MLflow run + folder")
    parser.add_argument("--checkpoint-dir", default=env.get("CHECKPOINT_DIR", ""), help="CHECKPOINT_DIR")
    parser.add_argument("--mlflow-uri", default=env.get("MLFLOW_TRACKING_URI", "http://mlflow:5000"))
    parser.add_argument("--ray-num-cpus", type=int, default=env.get("RAY_NUM_CPUS", "0"), help="RAY_NUM_CPUS")
    parser.add_argument("--output", default="", help="dry run: where to write the resolved YAML")
    parser.add_argument("--skip-preflight", action="store_true", help="skip the GPU/shm/Ray/disk checks")
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("--")]
    if unknown:
        parser.error(f"unknown option(s) {' '.join(unknown)}; Hydra overrides look like key=value")
    if args.n_gpus < 0 or args.nnodes < 1:
        parser.error("N_GPUS must be >= 0 (0: CPU) and NNODES >= 1")
    if args.n_gpus == 0 and args.nnodes != 1:
        parser.error(f"N_GPUS=0 (CPU) runs on one node: NNODES={args.nnodes} is not supported")
    return args, overrides


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args, user = parse_args(argv)
    try:
        return launch(args, user)
    except ConfigError as exc:
        print(f"error: {exc.key}: {exc.message}", file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
