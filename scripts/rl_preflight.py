"""Checks and side effects a real RL launch needs before verl starts (scripts/rl_launch.py calls them).

Each check returns a one-line description for the launch log, or raises LaunchError saying what is
wrong and what to do; verl itself would otherwise fail minutes later, hang, or train untracked:

    >>> check_shm(min_gib=0.001)                                     # doctest: +SKIP
    '32 GiB'
    >>> ensure_mlflow_run("http://mlflow:5000", "gsm8k-rl", "ppo-x", Path("models/rl/ppo-x"), {})  # doctest: +SKIP
    ('3f2a...', {})

- GSM8K parquet present and built with today's prompt (else data/prepare_gsm8k.py runs),
- visible GPUs = N_GPUS, /dev/shm large enough, a Ray cluster (if one runs) with enough GPUs and the
  CPUs verl reserves per GPU, the model's files local, free disk for the checkpoints to keep,
- MLflow reachable, and the MLflow run this checkpoint directory logs into (created once, its id kept
  in <CHECKPOINT_DIR>/mlflow_run_id so a resumed job continues it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from scripts.lib.atomic import atomic_write
from scripts.lib.mlflow_health import check_mlflow
from scripts.lib.paths import REPO_ROOT
from scripts.lib.prompt_check import stale_prompt

logger = logging.getLogger(__name__)

DATA_FILES = ("train.parquet", "val.parquet")
RUN_ID_FILE = "mlflow_run_id"
# verl's ResourcePoolManager reserves this many CPUs with every GPU bundle (max_colocate_count); a
# Ray node with fewer leaves the placement group, and the job, pending forever at 0% GPU.
CPUS_PER_GPU = 3
SHM_MIN_GIB = 16


class LaunchError(Exception):
    """A preflight failure: what is wrong and what to do about it."""


def read_run_id(checkpoint_dir: Path) -> str | None:
    """The MLflow run id recorded beside the checkpoints, or None."""
    path = checkpoint_dir / RUN_ID_FILE
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


# --- data ------------------------------------------------------------------------------------------


def data_status(data_dir: Path) -> tuple[bool, str, dict[str, int]]:
    """(ready, description, rows per file) of the RL parquet files in `data_dir`."""
    missing = [name for name in DATA_FILES if not (data_dir / name).is_file()]
    if missing:
        return False, f"missing {', '.join(missing)}", {}
    if why := stale_prompt(data_dir):
        return False, f"stale: {why}", {}
    import pyarrow.parquet as pq

    rows = {name: pq.ParquetFile(data_dir / name).metadata.num_rows for name in DATA_FILES}
    return True, ", ".join(f"{name} {n} rows" for name, n in rows.items()), rows


def prepare_data(data_dir: Path) -> None:
    """Run data/prepare_gsm8k.py into `data_dir` (GSM8K_SOURCE: a hub id or a local copy; default the hub)."""
    cmd = [sys.executable, str(REPO_ROOT / "data" / "prepare_gsm8k.py"), "--output-dir", str(data_dir)]
    if os.environ.get("GSM8K_SOURCE"):
        cmd += ["--source", os.environ["GSM8K_SOURCE"]]
    print(f"data: {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd, check=False).returncode != 0:
        raise LaunchError("data/prepare_gsm8k.py failed (above): fix GSM8K_SOURCE / the network, or DATA_DIR")
    ready, desc, _ = data_status(data_dir)
    if not ready:
        raise LaunchError(f"data/prepare_gsm8k.py ran but {data_dir} is still not usable: {desc}")


# --- hardware and Ray ------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """The GPUs this container can use, as 'name, memory' (CUDA_VISIBLE_DEVICES narrows nvidia-smi's list)."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
    out = subprocess.run(query, capture_output=True, text=True, timeout=60, check=False)
    gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible and visible != "all":
        gpus = gpus[: len([d for d in visible.split(",") if d.strip()])]
    return gpus


def check_gpus(n_gpus: int) -> str:
    gpus = visible_gpus()
    if len(gpus) < n_gpus:
        seen = f"{len(gpus)} ({'; '.join(gpus)})" if gpus else "none (nvidia-smi finds no GPU)"
        raise LaunchError(
            f"N_GPUS={n_gpus} but this node sees {seen}: set N_GPUS={len(gpus) or 1} (GPUs per node), "
            "or give the container the GPUs (GPU_DEVICES in .env)"
        )
    if len(gpus) > n_gpus:
        logger.warning("this node sees %d GPUs and N_GPUS=%d: the other GPUs stay idle", len(gpus), n_gpus)
    return f"{len(gpus)} x {gpus[0]}"


def free_gpu_memory(cfg) -> str:
    """vLLM refuses to start unless each GPU has gpu_memory_utilization x its memory free: name who holds it."""
    ratio = float(cfg.actor_rollout_ref.rollout.gpu_memory_utilization)
    n = int(cfg.trainer.n_gpus_per_node)

    def smi(*query: str) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
        return [[f.strip() for f in line.split(",")] for line in out.stdout.splitlines() if line.strip()]

    if shutil.which("nvidia-smi") is None:
        return "not checked (no nvidia-smi)"
    gpus = smi("--query-gpu=index,uuid,memory.total,memory.free")[:n]
    apps = smi("--query-compute-apps=gpu_uuid,pid,process_name,used_memory")
    for index, uuid, total, free in gpus:
        need = ratio * float(total)
        if float(free) < need:
            users = [f"pid {pid} {name} ({used} MiB)" for gpu, pid, name, used in apps if gpu == uuid]
            raise LaunchError(
                f"GPU {index} has {float(free):.0f} of {float(total):.0f} MiB free; vLLM needs "
                f"actor_rollout_ref.rollout.gpu_memory_utilization={ratio} x {float(total):.0f} = {need:.0f} MiB "
                f"free. Held by: {'; '.join(users) or 'a process nvidia-smi cannot see (another container?)'}. "
                "Stop it (a notebook kernel left running is the usual one: Kernel > Shut Down) or lower "
                "gpu_memory_utilization"
            )
    return f"{len(gpus)} GPU(s) with >= {ratio:.0%} free"


def latest_step(checkpoint_dir: Path) -> int | None:
    """The step verl resumes from (latest_checkpointed_iteration.txt), or None for a fresh start."""
    try:
        return int((checkpoint_dir / "latest_checkpointed_iteration.txt").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def check_world_size(checkpoint_dir: Path, world_size: int) -> str:
    """FSDP shards are named by world size: resuming with other N_GPUS x NNODES crashes minutes in."""
    step = latest_step(checkpoint_dir)
    if step is None:
        return "none to resume"
    actor = checkpoint_dir / f"global_step_{step}" / "actor"
    sizes = {int(m.group(1)) for f in actor.glob("model_world_size_*_rank_*.pt")
             if (m := re.match(r"model_world_size_(\d+)_rank_", f.name))}  # fmt: skip
    if sizes and world_size not in sizes:
        saved = min(sizes)
        raise LaunchError(
            f"{actor} was saved by {saved} processes (model_world_size_{saved}_rank_*.pt) and this launch runs "
            f"{world_size} (N_GPUS x NNODES): FSDP cannot load those shards. Rerun with N_GPUS x NNODES = {saved}, "
            f"or start fresh from its weights: MODEL_PATH={actor / 'huggingface'} with a new EXPERIMENT"
        )
    return f"resume global_step_{step} (world size {world_size})"


def prune_checkpoints(checkpoint_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` global_step_N dirs (never the one verl resumes from); returns what went.

    verl prunes only what its own process saved, and leaves global_step_N/data.pt behind when it does,
    so checkpoints of earlier launches would pile up.
    """
    latest = latest_step(checkpoint_dir)
    steps = sorted((int(p.name.rpartition("_")[2]), p) for p in checkpoint_dir.glob("global_step_*")
                   if p.is_dir() and p.name.rpartition("_")[2].isdigit())  # fmt: skip
    whole = [(n, p) for n, p in steps if (p / "actor").is_dir()]
    kept = {n for n, _ in whole[-max(keep, 1) :]} | {latest}
    gone = [p for n, p in steps if n not in kept]
    for path in gone:
        shutil.rmtree(path)
    return gone


def check_shm(min_gib: float = SHM_MIN_GIB) -> str:
    st = os.statvfs("/dev/shm")
    gib = st.f_blocks * st.f_frsize / 2**30
    if gib < min_gib:
        raise LaunchError(
            f"/dev/shm is {gib:.1f} GiB; Ray's object store, NCCL and vLLM need >= {min_gib} GiB: give the "
            "container `shm_size: 16g` or `ipc: host` (docker-compose.yml)"
        )
    return f"{gib:.0f} GiB"


def ray_cpu_budget(cfg) -> int:
    """CPUs verl 0.9.1 holds for the whole run: 3 per GPU bundle, TransferQueue's storage units, the TaskRunner.

    The default (v1) trainer starts TransferQueue's controller and storage units first, one CPU each,
    and then waits, with no timeout, for its {"CPU": 3, "GPU": 1} bundles. The controller shares the
    TaskRunner's slot in practice; the "+1" is that slot.
    """
    from omegaconf import OmegaConf

    gpus = int(cfg.trainer.n_gpus_per_node) * int(cfg.trainer.nnodes)
    units = OmegaConf.select(cfg, "transfer_queue.backend.SimpleStorage.num_data_storage_units", default=0)
    units = int(units or 0) if OmegaConf.select(cfg, "trainer.use_v1", default=True) else 0
    return CPUS_PER_GPU * gpus + units + 1


def _budget_text(cfg) -> str:
    units = cfg.transfer_queue.backend.SimpleStorage.num_data_storage_units
    gpus = int(cfg.trainer.n_gpus_per_node) * int(cfg.trainer.nnodes)
    return f"{CPUS_PER_GPU} x {gpus} GPU bundle(s) + {units} TransferQueue storage units + 1 = {ray_cpu_budget(cfg)}"


def check_ray(address: str | None, n_gpus: int, nnodes: int, cfg) -> str:
    """Enough GPUs and CPUs for verl's budget (`ray_cpu_budget`), in a running cluster or the local Ray."""
    if address is None:
        if nnodes > 1:
            raise LaunchError(
                f"NNODES={nnodes} needs a running Ray cluster with the worker nodes joined to this head "
                "(`ray start --head` here, `ray start --address=<head>:6379` on each worker); none found "
                "(RAY_ADDRESS unset, no `ray start` on this node)"
            )
        local, need = cfg.ray_kwargs.ray_init.num_cpus, ray_cpu_budget(cfg)
        if local is not None and int(local) < need:
            raise LaunchError(
                f"ray_kwargs.ray_init.num_cpus={local} but verl holds {_budget_text(cfg)} CPUs for the whole "
                f"run and waits forever (0% GPU, no error) with fewer: set RAY_NUM_CPUS >= {need} or drop the "
                "override (logical CPUs: Ray does not pin cores)"
            )
        return f"none running: main_ppo starts a local Ray with num_cpus={local} (verl needs {need})"
    import ray

    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ...
        raise LaunchError(
            f"the Ray cluster at {address} does not answer ({exc}): restart it (the verl container runs "
            "`ray start --head`), or `ray stop` and unset RAY_ADDRESS so main_ppo starts its own"
        ) from exc
    finally:
        if ray.is_initialized():
            ray.shutdown()
    need, need_cpus = ray_cpu_budget(cfg), CPUS_PER_GPU * n_gpus
    usable = [n for n in nodes if n["Resources"].get("GPU", 0) >= n_gpus]
    if len(usable) < nnodes:
        have = ", ".join(f"{n['NodeManagerAddress']} {n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
        raise LaunchError(
            f"need {nnodes} Ray node(s) with >= {n_gpus} GPUs, the cluster has [{have}]: join the worker "
            "nodes (`ray start --address=<head>:6379`) or lower NNODES / N_GPUS"
        )
    short = [n for n in usable if n["Resources"].get("CPU", 0) < need_cpus]
    if len(usable) - len(short) < nnodes:
        node = short[0]
        raise LaunchError(
            f"Ray node {node['NodeManagerAddress']} offers {node['Resources'].get('CPU', 0):g} CPUs; verl reserves "
            f"{CPUS_PER_GPU} per GPU, so {n_gpus} GPUs need >= {need_cpus} or the job waits forever at 0% GPU: "
            f"restart Ray with `--num-cpus={need_cpus}` or more (logical CPUs: Ray does not pin cores)"
        )
    cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
    if cpus < need:
        raise LaunchError(
            f"the Ray cluster at {address} offers {cpus:g} CPUs; verl holds {_budget_text(cfg)} for the whole run "
            f"and waits forever (0% GPU, no error) with fewer: restart the head with `ray start --num-cpus=N` so "
            f"the nodes add up to >= {need} (logical CPUs: Ray does not pin cores)"
        )
    gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
    return f"cluster at {address}: {len(nodes)} node(s), {gpus:g} GPUs"


def ensure_model(model: str) -> Path:
    """The local directory of `model`; a hub model is downloaded into HF_HOME once, here, not by every worker."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as exc:  # hub errors come in many types
        raise LaunchError(
            f"cannot fetch {model!r} from the Hugging Face hub ({type(exc).__name__}: {exc}): check the "
            "network / HF_TOKEN, or set MODEL_PATH to a local model directory"
        ) from exc


def checkpoint_bytes(model_dir: Path, hf_weights: bool, critic: bool) -> int:
    """Disk for one checkpoint: per parameter 12 B (fp32 weights + Adam moments) per model, +4 B HF copy."""
    weights = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    weights = weights or sum(f.stat().st_size for f in model_dir.glob("*.bin"))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"  # transformers 5 writes `dtype`
    params = weights / (4 if dtype == "float32" else 2)
    return int(params * (12 + 4 * hf_weights + 12 * critic))


def check_disk(checkpoint_dir: Path, need: int) -> str:
    probe = checkpoint_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise LaunchError(
            f"checkpoints need ~{need / 2**30:.1f} GiB and {probe} has {free / 2**30:.1f} GiB free: free space, "
            "set CHECKPOINT_DIR elsewhere, or lower trainer.max_actor_ckpt_to_keep"
        )
    return f"{free / 2**30:.0f} GiB free, ~{need / 2**30:.1f} GiB needed"


# --- MLflow ----------------------------------------------------------------------------------------


def require_mlflow(uri: str, timeout: float = 5.0) -> None:
    """Fail unless an MLflow server answers at `uri` (verl itself would only warn and train untracked)."""
    try:
        check_mlflow(uri, timeout)
    except ConnectionError as exc:
        raise LaunchError(f"{exc}; without it verl would train untracked") from None


def ensure_mlflow_run(
    uri: str, experiment: str, run_name: str, checkpoint_dir: Path, tags: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """(run id, params logged so far) of the MLflow run `checkpoint_dir` logs into.

    The run recorded in <checkpoint_dir>/mlflow_run_id if it still exists, else a new run in
    `experiment` (verl's trainer.project_name) whose id is recorded there. verl's tracker calls
    `mlflow.start_run(run_id=$MLFLOW_RUN_ID)` when that variable is set, so a resumed job continues
    this run (same metric history and step axis) instead of opening a second one.
    """
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    recorded = read_run_id(checkpoint_dir)
    try:
        if recorded:
            try:
                run = client.get_run(recorded)
            except MlflowException:
                run = None
            if run is not None and run.info.lifecycle_stage == "active":
                return recorded, dict(run.data.params)
            logger.warning("MLflow run %s (recorded in %s) is gone from %s: starting a new run", recorded,
                           checkpoint_dir / RUN_ID_FILE, uri)  # fmt: skip
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    except MlflowException as exc:
        rejected = "Invalid Host header" in str(exc) or "403" in str(exc)
        hint = " (add this host to `mlflow server --allowed-hosts`)" if rejected else ""
        raise LaunchError(f"MLflow at {uri} refused the request: {exc}{hint}") from exc
    atomic_write(checkpoint_dir / RUN_ID_FILE, run.info.run_id + "\n")
    return run.info.run_id, {}
