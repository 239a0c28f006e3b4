"""Traps of a real verl 0.9.1 launch that the launcher catches before start-up (issue 10, section 3).

Each test shows the trap on the composed config or a checkpoint folder as verl would meet it: a Ray
too small for TransferQueue, a resume with another world size, GPU memory held by a forgotten kernel
(a fake nvidia-smi: no GPU here), checkpoints of earlier launches piling up, MLflow credentials that
cannot reach a Ray cluster, a working directory that shadows packages, and the test environment
missing the packages the default trainer path imports.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from scripts.rl import launch as rl_launch
from scripts.rl import preflight as rl_preflight
from scripts.rl.preflight import LaunchError

REPO = Path(__file__).resolve().parent.parent


def settings(tmp_path: Path, model: Path, data: Path, algo: str = "ppo", **env: str) -> rl_launch.Settings:
    """What run_ppo.sh / run_grpo.sh would launch with this environment (and no Ray cluster on this node)."""
    env = {
        "MODEL_PATH": str(model),
        "DATA_DIR": str(data),
        "CHECKPOINT_DIR": str(tmp_path / "ck"),
        "RAY_TMPDIR": str(tmp_path / "no-ray"),
        **env,
    }
    return rl_launch.Settings.from_env(algo, env)


# --- Ray CPU budget: TransferQueue holds CPUs before verl asks for its GPU bundles -------------------


def test_ray_cpu_budget_counts_transferqueue_and_plain_actors(tmp_path, tiny_model_dir, gsm8k_data_dir, monkeypatch):
    s = settings(tmp_path, tiny_model_dir, gsm8k_data_dir, N_GPUS="4")
    monkeypatch.setattr(rl_launch.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)  # a small container
    overrides, cfg, problems = rl_launch.build(s, [])
    # held for the run: GPU bundles, 8 storage units, their controller; then the plain actors, one CPU each to place
    # them: TaskRunner, 8 agent-loop and 8 reward workers, 4 vLLM servers (TP 1) and their load balancer
    assert rl_preflight.ray_cpu_budget(cfg) == 3 * 4 + 8 + 1 + 1 + 8 + 8 + 4 + 1
    assert "ray_kwargs.ray_init.num_cpus=43" in overrides and not problems  # the local default, from the config
    _, fewer, problems = rl_launch.build(s, ["ray_kwargs.ray_init.num_cpus=21"])  # what verl holds: no CPU to place
    assert [p.key for p in problems] == ["ray_kwargs.ray_init.num_cpus"]  # refused by the dry run too
    with pytest.raises(LaunchError, match=r"num_cpus=21 but verl needs 12 for 4 GPU .* 8 TransferQueue .* = 43"):
        rl_preflight.check_ray(None, 4, 1, fewer)
    units, workers = "transfer_queue.backend.SimpleStorage.num_data_storage_units", "actor_rollout_ref.rollout.agent"
    _, fewer_workers, _ = rl_launch.build(s, [f"{units}=2", f"{workers}.num_workers=2", "reward.num_workers=1"])
    assert rl_preflight.ray_cpu_budget(fewer_workers) == 12 + 2 + 1 + 1 + 2 + 1 + 4 + 1


def test_cpu_run_budget_and_overrides_come_from_cpu_yaml(tmp_path, tiny_model_dir, gsm8k_data_dir):
    s = settings(tmp_path, tiny_model_dir, gsm8k_data_dir, N_GPUS="0")
    overrides, cfg, problems = rl_launch.build(s, [])
    assert not problems, problems
    assert cfg.trainer.device == "cpu" and cfg.trainer.n_gpus_per_node == 1
    assert cfg.actor_rollout_ref.rollout.name == "vllm"  # verl's vLLM server, as on GPUs
    assert cfg.critic.model.override_config.attn_implementation == "sdpa"
    assert cfg.ray_kwargs.ray_init.num_cpus == 16 >= rl_preflight.ray_cpu_budget(cfg)  # cpu.yaml's 16 suffice
    assert "++trainer.device='cpu'" in overrides  # visible in the exec line, as in verl_configs/cpu.yaml
    s.ray_address = "10.0.0.1:6379"  # RAY_ADDRESS: a cluster would not load the CPU platform into its workers
    with pytest.raises(LaunchError, match=r"N_GPUS=0 runs verl on a local Ray .* unset RAY_ADDRESS"):
        rl_launch.build(s, [])


def test_cpu_run_leaves_this_nodes_ray_head_alone(tmp_path, tiny_model_dir, gsm8k_data_dir):
    """The CPU verl container runs a `ray start` head: a CPU launch starts its own Ray, a GPU launch joins it."""
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("172.18.0.3:6379\n")
    s = settings(tmp_path, tiny_model_dir, gsm8k_data_dir, RAY_TMPDIR=str(tmp_path))
    assert s.ray_address == "172.18.0.3:6379"
    assert settings(tmp_path, tiny_model_dir, gsm8k_data_dir, RAY_TMPDIR=str(tmp_path), N_GPUS="0").ray_address is None
    asked = settings(tmp_path, tiny_model_dir, gsm8k_data_dir, N_GPUS="0", RAY_ADDRESS="10.0.0.1:6379")
    assert asked.ray_address == "10.0.0.1:6379"  # asked for explicitly: refused in build()


def test_cpu_run_sizes_its_ray_from_cpu_yaml_not_the_heads_ray_num_cpus(tmp_path, tiny_model_dir, gsm8k_data_dir):
    """RAY_NUM_CPUS=4 in the CPU stack sizes the container's head; the CPU run's own Ray keeps cpu.yaml's 16."""
    s = settings(tmp_path, tiny_model_dir, gsm8k_data_dir, N_GPUS="0", RAY_NUM_CPUS="4")
    overrides, cfg, _ = rl_launch.build(s, [])
    assert cfg.ray_kwargs.ray_init.num_cpus == 16 and not [o for o in overrides if o.endswith("num_cpus=4")]


# --- resume with another world size ---------------------------------------------------------------


def test_resume_with_another_world_size_is_refused_with_the_numbers(tmp_path):
    ckpt = tmp_path / "ppo"
    actor = ckpt / "global_step_25" / "actor"
    actor.mkdir(parents=True)
    for rank in range(4):
        (actor / f"model_world_size_4_rank_{rank}.pt").touch()
    (ckpt / "latest_checkpointed_iteration.txt").write_text("25")
    assert rl_preflight.check_world_size(ckpt, 4) == "resume global_step_25 (world size 4)"
    with pytest.raises(LaunchError) as refused:
        rl_preflight.check_world_size(ckpt, 2)
    text = str(refused.value)
    assert "saved by 4 processes" in text and "this launch runs 2" in text
    assert "N_GPUS x NNODES = 4" in text and f"MODEL_PATH={actor / 'huggingface'}" in text


# --- GPU memory held by another process (fake nvidia-smi) -----------------------------------------

FAKE_SMI = """#!/usr/bin/env bash
case "$*" in
  *--query-gpu=index,uuid*) echo "0, GPU-aaa, 81559, 80000, NVIDIA H100"
                            echo "1, GPU-bbb, 81559, 12000, NVIDIA H100" ;;
  *--query-compute-apps*) echo "GPU-bbb, 4242, /opt/conda/bin/python, 69000" ;;
esac
"""


def test_busy_gpu_names_the_process_holding_it(tmp_path, tiny_model_dir, gsm8k_data_dir, monkeypatch):
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:/usr/bin:/bin")
    _, cfg, _ = rl_launch.build(settings(tmp_path, tiny_model_dir, gsm8k_data_dir, N_GPUS="1"), [])
    assert rl_preflight.check_gpus(1, cfg) == "1 x NVIDIA H100, each with >= 50% of its memory free"  # GPU 0 only
    _, two, _ = rl_launch.build(settings(tmp_path, tiny_model_dir, gsm8k_data_dir, N_GPUS="2"), [])
    with pytest.raises(LaunchError, match=r"GPU 1 has 12000 of 81559 MiB free.*pid 4242 /opt/conda/bin/python"):
        rl_preflight.check_gpus(2, two)
    with pytest.raises(LaunchError, match=r"N_GPUS=3 but this node sees 2 \(NVIDIA H100; NVIDIA H100\): set N_GPUS=2"):
        rl_preflight.check_gpus(3, two)


# --- checkpoints of earlier launches ---------------------------------------------------------------


def test_old_checkpoints_are_pruned_at_launch_and_the_resume_step_kept(tmp_path):
    ckpt = tmp_path / "ppo"
    for step, parts in {25: ["data.pt"], 50: ["data.pt", "actor"], 75: ["actor"], 100: ["actor"]}.items():
        for part in parts:  # verl's own pruning leaves global_step_N/data.pt behind
            path = ckpt / f"global_step_{step}" / part
            path.mkdir(parents=True) if part == "actor" else (
                path.parent.mkdir(parents=True, exist_ok=True),
                path.touch(),
            )
    (ckpt / "latest_checkpointed_iteration.txt").write_text("100")
    gone = rl_preflight.prune_checkpoints(ckpt, keep=2)
    assert sorted(p.name for p in gone) == ["global_step_25", "global_step_50"]
    assert sorted(p.name for p in ckpt.glob("global_step_*")) == ["global_step_100", "global_step_75"]
    assert rl_preflight.prune_checkpoints(ckpt, keep=1) == [ckpt / "global_step_75"]


# --- MLflow credentials and a Ray cluster ----------------------------------------------------------


def test_tracking_uri_with_credentials_is_never_dropped_silently(tmp_path, tiny_model_dir, gsm8k_data_dir):
    uri = "https://alice:s3cret@mlflow.example.org"
    s = settings(tmp_path, tiny_model_dir, gsm8k_data_dir, MLFLOW_TRACKING_URI=uri)
    s.run_id = "abc123"
    overrides, cfg, _ = rl_launch.build(s, [])  # local Ray: it inherits the URI from the launcher's env
    assert not any("s3cret" in o for o in overrides) and "s3cret" not in str(cfg)
    assert "+ray_kwargs.ray_init.runtime_env.env_vars.MLFLOW_RUN_ID='abc123'" in overrides
    s.ray_address = "10.0.0.1:6379"  # a `ray start` cluster: its actors would get the run id but no URI
    with pytest.raises(LaunchError, match=r"carries credentials .* MLFLOW_TRACKING_USERNAME"):
        rl_launch.launcher_overrides(s)


# --- the working directory verl starts in ----------------------------------------------------------


def test_verl_is_execd_from_a_folder_without_python(tmp_path, tiny_model_dir, gsm8k_data_dir, monkeypatch):
    monkeypatch.chdir(REPO / "scripts")  # Ray would put scripts/ first on every worker's sys.path
    seen = {}

    def fake_exec(path, cmd, env):
        seen.update(cwd=Path.cwd(), env=env)
        raise SystemExit(0)

    monkeypatch.setattr(rl_launch.os, "execvpe", fake_exec)
    s = settings(tmp_path, tiny_model_dir, gsm8k_data_dir, "grpo", N_GPUS="0")
    with pytest.raises(SystemExit):
        rl_launch.launch(s, ["trainer.logger=[console]"], skip_preflight=True)
    assert seen["cwd"] == tmp_path / "ck" and not list(seen["cwd"].glob("*.py"))
    assert seen["env"]["VERL_PLATFORM"] == "cpu"
    modules = "scripts.lib.resilient_mlflow,scripts.lib.ray_start,scripts.rl.cpu_plugin"
    assert seen["env"]["VERL_USE_EXTERNAL_MODULES"] == modules
    assert Path(seen["env"]["RAY_TMPDIR"]).parent == Path("/tmp")  # a Ray of its own, short socket paths
    (pid_file := Path(seen["env"]["RAY_TMPDIR"], rl_preflight.LAUNCH_PID)).unlink()  # the launch's pid, for the next
    pid_file.parent.rmdir()


# --- the test environment imports the default trainer path ----------------------------------------


def pins(lock: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", lock.read_text(), re.M)
    return {name.lower().replace("_", "-"): version for name, version in found}


def test_test_lock_has_the_images_transferqueue_and_tensordict():
    image, cpu, test = (
        pins(REPO / p)
        for p in ("services/verl/requirements.lock", "services/verl/requirements-cpu.lock", "requirements/test.lock")
    )
    for name in ("verl", "transferqueue", "tensordict", "transformers"):
        assert test.get(name) == image[name] == cpu[name], name
    import transfer_queue  # what verl's default (v1) trainer imports first

    assert transfer_queue.__name__ == "transfer_queue"


def test_the_critic_trains_on_32k_tokens_per_gpu_in_both_trainers(tmp_path, tiny_model_dir, gsm8k_data_dir):
    """verl 0.9.1's v1 trainer sizes the critic's update and value batches from CriticConfig's
    ppo_infer_max_token_len_per_gpu (not in verl's YAML); the legacy trainer reads ppo_max_token_len_per_gpu. The
    composed PPO config gives the critic 32k per GPU in both, as docs/rl.md says."""
    from verl.workers.config import CriticConfig

    budget = CriticConfig.__dataclass_fields__["ppo_infer_max_token_len_per_gpu"].default
    _, cfg, problems = rl_launch.build(settings(tmp_path, tiny_model_dir, gsm8k_data_dir, N_GPUS="4"), [])
    assert not problems, problems
    assert cfg.critic.ppo_max_token_len_per_gpu == cfg.critic.get("ppo_infer_max_token_len_per_gpu", budget) == 32768


# --- A launch killed with -9 leaves Ray's agents behind: the next launch stops them ---------------------------

LOCAL_RAY = """
import os, sys, time
from pathlib import Path

import ray

Path(sys.argv[1]).write_text(str(os.getpid()))  # as the launcher does before it execs main_ppo
ray.init(num_cpus=1)  # verl's local Ray: with the dashboard, its agent and the runtime-env agent
print("up", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_what_a_killed_launch_left_of_its_ray_is_stopped_by_the_next(verl_python):
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    live_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # a launch still running: never touched
    (live_tmp / rl_preflight.LAUNCH_PID).write_text(str(os.getpid()))
    (live_tmp / "raylet.out").touch()
    driver = subprocess.Popen(
        [str(verl_python), "-c", LOCAL_RAY, str(ray_tmp / rl_preflight.LAUNCH_PID)],
        env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    with (live_tmp / "raylet.out").open():  # this process holds a file of the live launch open
        try:
            assert driver.stdout.readline().strip() == "up"
            time.sleep(3)  # the agents are up
            driver.kill()  # kill -9 the launch (main_ppo, the launcher's pid): Ray's own processes follow it...
            driver.wait(timeout=30)
            deadline = time.monotonic() + 30
            while len(left := rl_preflight.processes_using([ray_tmp])[ray_tmp]) > 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            titles = sorted(Path(f"/proc/{pid}/cmdline").read_bytes().strip(b"\0").decode() for pid in left)
            assert titles == ["ray::DashboardAgent", "ray::RuntimeEnvAgent"]  # ...but these two stay
            assert rl_preflight.processes_using([live_tmp])[live_tmp] == [os.getpid()]

            lines = rl_preflight.reap_killed_launches()
            assert f"stopped 2 process(es) a killed launch left (logs kept: {ray_tmp})" in lines
            deadline = time.monotonic() + 10
            while rl_preflight.processes_using([ray_tmp])[ray_tmp] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not rl_preflight.processes_using([ray_tmp])[ray_tmp]
            assert list(ray_tmp.glob("ray/session_*/logs/dashboard_agent*"))  # the logs are kept
            assert (live_tmp / rl_preflight.LAUNCH_PID).is_file()  # the live launch (this process) runs on
            assert rl_preflight.reap_killed_launches() == []  # done once
        finally:
            subprocess.run(["pkill", "-9", "-f", str(ray_tmp)], check=False)
            for pid in rl_preflight.processes_using([ray_tmp])[ray_tmp]:
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(ray_tmp, ignore_errors=True)
            shutil.rmtree(live_tmp, ignore_errors=True)
