"""What a real RL launch checks and prepares before verl starts, which would otherwise fail minutes later, hang at
0% GPU, or train untracked. Each check returns a line for the launch log or raises LaunchError saying what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from data.readiness import RL_FILES, DataNotReady, check_data
from scripts.lib import gpus
from scripts.lib.atomic import atomic_write
from scripts.lib.checkpoints import latest_step
from scripts.lib.mlflow_health import check_mlflow
from scripts.lib.paths import REPO_ROOT

logger = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
CPUS_PER_GPU = 3  # verl's ResourcePoolManager reserves these with every GPU bundle (max_colocate_count)
LAUNCH_PID = "launcher.pid"  # in each launch's RAY_TMPDIR: the launcher's pid, which main_ppo keeps (exec)


class LaunchError(Exception):
    """A preflight failure: what is wrong and what to do about it."""


def read_run_id(checkpoint_dir: Path) -> str | None:
    path = checkpoint_dir / RUN_ID_FILE
    return (path.read_text(encoding="utf-8").strip() or None) if path.is_file() else None


def data_status(data_dir: Path) -> tuple[bool, str, dict[str, int]]:
    """(ready, description, rows per file) of the RL parquet files in `data_dir` (data/readiness.py's check)."""
    try:
        rows = check_data(data_dir, RL_FILES)
    except DataNotReady as exc:
        return False, str(exc), {}
    return True, ", ".join(f"{name} {n} rows" for name, n in rows.items()), rows


def prepare_data(data_dir: Path, source: str) -> None:
    """Run data prep into `data_dir` from `source` (GSM8K_SOURCE; '' = its default, the hub)."""
    cmd = [sys.executable, "-m", "data.prepare_gsm8k", "--output-dir", str(data_dir)]
    cmd += ["--source", source] if source else []
    print(f"data: {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd, check=False, cwd=REPO_ROOT).returncode != 0:
        raise LaunchError("data prep failed (above): fix GSM8K_SOURCE / the network, or DATA_DIR")
    if not (status := data_status(data_dir))[0]:
        raise LaunchError(f"data prep ran but {data_dir} is still not usable: {status[1]}")


def check_gpus(n_gpus: int, cfg) -> str:
    """N_GPUS visible here, each with vLLM's gpu_memory_utilization share free (else: who holds it)."""
    found = gpus.visible()
    if len(found) < n_gpus:
        seen = f"{len(found)} ({'; '.join(g[4] for g in found)})" if found else "none (nvidia-smi finds no GPU)"
        fix = f"set N_GPUS={len(found)} (GPUs per node)" if found else "set N_GPUS=0 to train on CPU (cpu.yaml)"
        raise LaunchError(
            f"N_GPUS={n_gpus} but this node sees {seen}: {fix}, or give the container the GPUs "
            "(N_GPUS in .env: the first N_GPUS)"
        )
    if len(found) > n_gpus:
        logger.warning("this node sees %d GPUs and N_GPUS=%d: the other GPUs stay idle", len(found), n_gpus)
    ratio = float(cfg.actor_rollout_ref.rollout.gpu_memory_utilization)
    try:
        gpus.require_free(found[:n_gpus], ratio, "actor_rollout_ref.rollout.gpu_memory_utilization")
    except gpus.GpuMemoryError as exc:
        raise LaunchError(str(exc)) from None
    return f"{n_gpus} x {found[0][4]}, each with >= {ratio:.0%} of its memory free"


def check_world_size(checkpoint_dir: Path, world_size: int) -> str:
    """FSDP shards are named by world size: resuming with other N_GPUS x NNODES crashes minutes in."""
    if (step := latest_step(checkpoint_dir)) is None:
        return "none to resume"
    actor = checkpoint_dir / f"global_step_{step}" / "actor"
    sizes = {
        int(m[1]) for f in actor.glob("model_world_size_*") if (m := re.match(r"model_world_size_(\d+)_", f.name))
    }
    if sizes and world_size not in sizes:
        raise LaunchError(
            f"{actor} was saved by {min(sizes)} processes (model_world_size_{min(sizes)}_rank_*.pt) and this launch "
            f"runs {world_size} (N_GPUS x NNODES): FSDP cannot load those shards. Rerun with N_GPUS x NNODES = "
            f"{min(sizes)}, or start fresh from its weights: MODEL_PATH={actor / 'huggingface'} with a new EXPERIMENT"
        )
    return f"resume global_step_{step} (world size {world_size})"


def prune_checkpoints(checkpoint_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` complete global_step_N dirs, never the resume step; returns what went."""
    steps = sorted(
        (int(p.name[12:]), p) for p in checkpoint_dir.glob("global_step_*") if p.is_dir() and p.name[12:].isdigit()
    )
    kept = {n for n, p in steps if (p / "actor").is_dir()}
    kept = set(sorted(kept)[-max(keep, 1) :]) | {latest_step(checkpoint_dir)}
    gone = [p for n, p in steps if n not in kept]
    for path in gone:
        shutil.rmtree(path)
    return gone


def check_shm(min_gib: float = 16) -> str:
    st = os.statvfs("/dev/shm")
    if (gib := st.f_blocks * st.f_frsize / 2**30) < min_gib:
        raise LaunchError(
            f"/dev/shm is {gib:.1f} GiB; Ray's object store, NCCL and vLLM need >= {min_gib} GiB: "
            "give the container `shm_size: 16g` or `ipc: host` (docker-compose.yml)"
        )
    return f"{gib:.0f} GiB"


def ray_cpu_parts(cfg) -> dict[str, int]:
    """The CPUs a verl 0.9.1 run takes from Ray, by what takes them (read from verl's and TransferQueue's code).

    Held for the whole run: 3 per GPU bundle (ResourcePoolManager.max_colocate_count), TransferQueue's storage
    units and controller (num_cpus=1 each; the v1 trainer starts them first). Then plain actors, declared without
    num_cpus: the TaskRunner, the agent-loop and reward workers, one server per rollout replica (vLLM, SGLang) and
    the rollout load balancer. Ray places such an actor only where a CPU is free (ray/actor.py: 0 CPUs for its
    lifetime, +1 to place it), and a CPU run with fewer than one each hung at start-up: count one each. With too
    few CPUs verl waits forever, at 0% GPU and without an error.
    """
    from omegaconf import OmegaConf

    def get(key: str, default=0) -> int:
        return int(OmegaConf.select(cfg, key, default=default) or 0)

    gpus, rollout = get("trainer.n_gpus_per_node") * get("trainer.nnodes"), "actor_rollout_ref.rollout"
    v1 = OmegaConf.select(cfg, "trainer.use_v1", default=True)
    replica = max(get(f"{rollout}.tensor_model_parallel_size", 1), 1) * max(get(f"{rollout}.data_parallel_size", 1), 1)
    replica *= max(get(f"{rollout}.pipeline_model_parallel_size", 1), 1)
    servers = gpus // replica if OmegaConf.select(cfg, f"{rollout}.name") in ("vllm", "sglang", "trtllm") else 0
    return {
        f"for {gpus} GPU bundle(s) ({CPUS_PER_GPU} each)": CPUS_PER_GPU * gpus,
        "TransferQueue storage units": get("transfer_queue.backend.SimpleStorage.num_data_storage_units") if v1 else 0,
        "TransferQueue controller": 1 if v1 else 0,
        "TaskRunner": 1,
        "agent-loop workers": get(f"{rollout}.agent.num_workers"),
        "reward workers": get("reward.num_workers"),
        "rollout servers": servers,
        "rollout load balancer": 1 if servers else 0,
    }


def ray_cpu_budget(cfg) -> int:
    """The CPUs Ray must offer this run (`ray_cpu_parts`); fewer and verl waits forever at 0% GPU."""
    return sum(ray_cpu_parts(cfg).values())


def ray_cpu_needs(cfg) -> str:
    """`ray_cpu_parts` as one sentence for an error message."""
    parts = " + ".join(f"{n} {what}" for what, n in ray_cpu_parts(cfg).items() if n)
    return f"verl needs {parts} = {ray_cpu_budget(cfg)} CPUs from Ray, and with fewer waits forever (0% GPU, no error)"


def check_ray(
    address: str | None, n_gpus: int, nnodes: int, cfg, checkpoint_dir: Path | None = None, files=None
) -> str:
    """Enough GPUs and CPUs for verl's budget (`ray_cpu_budget`), in a running cluster or the local Ray; in a
    cluster, with `checkpoint_dir`, every node sees the same storage (`check_shared_storage`)."""
    if address is None and nnodes > 1:
        raise LaunchError(
            f"NNODES={nnodes} needs a running Ray cluster with the worker nodes joined to this head "
            "(`ray start --head` here, `ray start --address=<head>:6379` on each worker); none found "
            "(RAY_ADDRESS unset, no `ray start` on this node)"
        )
    need, budget = ray_cpu_budget(cfg), ray_cpu_needs(cfg)
    if address is None:
        if (local := cfg.ray_kwargs.ray_init.num_cpus) is not None and int(local) < need:
            raise LaunchError(
                f"ray_kwargs.ray_init.num_cpus={local} but {budget}: raise it to >= {need} or drop "
                "the override (logical CPUs: Ray does not pin cores)"
            )
        return f"none running: main_ppo starts a local Ray with num_cpus={local} (verl needs {need})"
    import ray

    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    except Exception as exc:  # ConnectionError, RuntimeError, ...
        ray.shutdown()
        raise LaunchError(
            f"the Ray cluster at {address} does not answer ({exc}): restart it (the verl container "
            "runs `ray start --head`), or `ray stop` and unset RAY_ADDRESS so main_ppo starts its own"
        ) from exc
    try:
        storage = "" if checkpoint_dir is None else "; " + check_shared_storage(nodes, checkpoint_dir, files or {})
    finally:
        ray.shutdown()
    found = [(n["NodeManagerAddress"], n["Resources"].get("GPU", 0), n["Resources"].get("CPU", 0)) for n in nodes]
    if sum(gpus >= n_gpus and cpus >= CPUS_PER_GPU * n_gpus for _, gpus, cpus in found) < nnodes:
        raise LaunchError(
            f"need {nnodes} Ray node(s) with >= {n_gpus} GPUs and >= {CPUS_PER_GPU * n_gpus} CPUs (verl reserves "
            f"{CPUS_PER_GPU} per GPU and otherwise waits forever at 0% GPU), the cluster has ["
            + ", ".join(f"{addr}: {gpus:g} GPU, {cpus:g} CPU" for addr, gpus, cpus in found)
            + "]: join the worker nodes (`ray start --address=<head>:6379`), restart Ray with more `--num-cpus` "
            "(logical CPUs: Ray does not pin cores), or lower NNODES / N_GPUS"
        )
    if (cpus := sum(n["Resources"].get("CPU", 0) for n in nodes)) < need:
        raise LaunchError(
            f"the Ray cluster at {address} offers {cpus:g} CPUs; {budget}: restart the head with "
            f"`ray start --num-cpus=N` so the nodes add up to >= {need}"
        )
    return f"cluster at {address}: {len(nodes)} node(s), {sum(gpus for _, gpus, _ in found):g} GPUs{storage}"


def check_shared_storage(nodes: list[dict], checkpoint_dir: Path, files: dict[str, Path], timeout_s=120.0) -> str:
    """Every Ray node in `nodes` sees what this node writes into `checkpoint_dir`, and the `files` ({what: path}).

    verl writes checkpoints, the dataloader state (data.pt) and the tracker file from whichever node a rank runs
    on, and every node reads the data and the model. On storage that is not shared, a resume reads one node's
    past, or none, and a rank on another node cannot find the data. One task per node (pinned to it, no CPU
    held) reads a marker written here; the marker is removed afterwards, also when the check fails.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def look(marker: str, paths: dict[str, str]) -> tuple[str, str, list[str]]:  # runs on each node
        import os
        import socket

        try:
            with open(marker, encoding="utf-8") as f:
                seen = f.read()
        except OSError:
            seen = ""
        return socket.gethostname(), seen, [what for what, path in paths.items() if not os.path.exists(path)]

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    marker = checkpoint_dir / f".shared-storage-{token[:8]}"
    marker.write_text(token, encoding="utf-8")
    task = ray.remote(num_cpus=0, max_retries=0)(look)
    paths = {what: str(path) for what, path in files.items()}
    try:
        refs = [
            task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                str(marker), paths
            )
            for n in nodes
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        answers = {ref.hex(): ray.get(ref) for ref in ready}
    finally:
        marker.unlink(missing_ok=True)
    problems = []
    for node, ref in zip(nodes, refs, strict=True):
        where = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]}"
        if ref.hex() not in answers:
            problems.append(f"{where}) ran no task in {timeout_s:g} s (busy, or its Ray workers cannot start)")
            continue
        host, seen, missing = answers[ref.hex()]
        where += f", host {host})"
        if seen != token:
            problems.append(f"{where} does not see {checkpoint_dir} as this node does (a marker written here)")
        problems += [f"{where} has no {what} at {files[what]}" for what in missing]
    if problems:
        raise LaunchError(
            "the Ray nodes do not share storage: "
            + "; ".join(problems)
            + ". Checkpoints, data.pt and the tracker file are written by whichever node a rank runs on and the "
            "data is read by all: mount the same storage at the same path on every node (docker-compose.worker.yml "
            "binds the checkout at /workspace: put it, or models/ and data/, on NFS), or set CHECKPOINT_DIR / "
            "DATA_DIR to a shared path. A model missing on a node: run the setup profile there "
            "(`docker compose --profile setup run --rm setup`) or put MODEL_PATH on shared storage"
        )
    return f"storage: {len(nodes)} node(s) see {checkpoint_dir}" + (f" and the {', '.join(files)}" if files else "")


def ensure_model(model: str) -> Path:
    """The local folder of `model`; a hub model is downloaded into HF_HOME once, here, not by every worker."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model))
    except Exception as exc:  # hub errors come in many types
        raise LaunchError(
            f"cannot fetch {model!r} from the Hugging Face hub ({type(exc).__name__}: {exc}): check "
            "the network / HF_TOKEN, or set MODEL_PATH to a local model directory"
        ) from exc


def checkpoint_bytes(model_dir: Path, hf_weights: bool, critic: bool) -> int:
    """Disk for one checkpoint: per parameter 12 B (fp32 weights + Adam moments) per model, +4 B HF copy."""
    weights = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    weights = weights or sum(f.stat().st_size for f in model_dir.glob("*.bin"))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"  # transformers 5 writes `dtype`
    return int(weights / (4 if dtype == "float32" else 2) * (12 + 4 * hf_weights + 12 * critic))


def check_disk(checkpoint_dir: Path, need: int) -> str:
    probe = next(p for p in [checkpoint_dir, *checkpoint_dir.parents] if p.exists())
    if (free := shutil.disk_usage(probe).free) < need:
        raise LaunchError(
            f"checkpoints need ~{need / 2**30:.1f} GiB and {probe} has {free / 2**30:.1f} GiB free: "
            "free space, set CHECKPOINT_DIR elsewhere, or lower trainer.max_actor_ckpt_to_keep"
        )
    return f"{free / 2**30:.0f} GiB free, ~{need / 2**30:.1f} GiB needed"


def ensure_mlflow_run(
    uri: str, experiment: str, run_name: str, checkpoint_dir: Path, tags: dict[str, str]
) -> tuple[str, str, dict[str, str]]:
    """(tracking URI, run id, params logged so far) of the MLflow run `checkpoint_dir` logs into, created on first
    launch. The URI is `uri`, or with ALLOW_NO_TRACKING=1 and the server down the local store check_mlflow chose."""
    try:
        uri = check_mlflow(uri, 5.0)  # verl itself would only warn and train untracked
    except ConnectionError as exc:
        raise LaunchError(f"{exc}; without it verl would train untracked") from None
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client, recorded = MlflowClient(tracking_uri=uri), read_run_id(checkpoint_dir)
    try:
        if recorded:
            try:
                run = client.get_run(recorded)
                if run.info.lifecycle_stage == "active":
                    return uri, recorded, dict(run.data.params)
            except MlflowException:
                pass
            logger.warning("MLflow run %s (in %s) is gone from %s: starting a new run", recorded, checkpoint_dir, uri)
        found = client.get_experiment_by_name(experiment)
        run = client.create_run(
            found.experiment_id if found else client.create_experiment(experiment), run_name=run_name, tags=tags
        )
    except MlflowException as exc:
        hint = " (add this host to `mlflow server --allowed-hosts`)" if "Invalid Host header" in str(exc) else ""
        raise LaunchError(f"MLflow at {uri} refused the request: {exc}{hint}") from exc
    atomic_write(checkpoint_dir / RUN_ID_FILE, run.info.run_id + "\n")
    return uri, run.info.run_id, {}


def processes_using(folders: list[Path]) -> dict[Path, list[int]]:
    """For each folder, the pids whose command line or open files name a path under it. Ray's agents rename
    themselves (`ray::DashboardAgent`) but keep their logs in the session folder open."""
    marks = {folder: f"{folder}/" for folder in folders}
    found: dict[Path, list[int]] = {folder: [] for folder in folders}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            names = [proc.joinpath("cmdline").read_bytes().decode(errors="replace")]
            fds = list(proc.joinpath("fd").iterdir())
        except OSError:  # gone meanwhile, or another user's
            continue
        for fd in fds:
            with contextlib.suppress(OSError):  # closed meanwhile
                names.append(os.readlink(fd))
        for folder, mark in marks.items():
            if any(mark in name for name in names):
                found[folder].append(int(proc.name))
    return found


def reap_killed_launches(tmp_root: Path = Path("/tmp")) -> list[str]:
    """Stop what earlier launches killed with -9 left of their own Ray: Ray's dashboard and runtime-env agents
    outlive the driver and stay until the container stops. A launch is dead when the pid in its RAY_TMPDIR's
    LAUNCH_PID is; a live launch, another user's Ray or a `ray start` cluster (/tmp/ray) is never touched, and
    the logs are kept. Returns a line per launch cleaned up."""
    dead = []
    for pid_file in tmp_root.glob(f"ray-*/{LAUNCH_PID}"):
        try:
            os.kill(int(pid_file.read_text(encoding="utf-8")), 0)
        except ProcessLookupError:
            dead.append(pid_file.parent)
        except (OSError, ValueError):  # not ours to judge: another user's, or unreadable
            continue
    done = []
    for folder, pids in processes_using(dead).items() if dead else ():
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            done.append(f"stopped {len(pids)} process(es) a killed launch left (logs kept: {folder})")
        (folder / LAUNCH_PID).unlink(missing_ok=True)  # looked at once: later launches skip this folder
    return done
