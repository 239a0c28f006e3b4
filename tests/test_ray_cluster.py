"""A real `ray start` cluster, as the compose stack runs one (a head, and worker nodes that join it).

- The launching shell's settings reach its workers (scripts/lib/ray_start.py): a cluster's workers run with the
  raylet's environment, not the shell's, so HF_HUB_OFFLINE, HF_TOKEN, VERL_USE_EXTERNAL_MODULES or NCCL_* set for
  one run were silently ignored there. Checked through verl's own driver code (main_ppo.run_ppo), with the
  TaskRunner swapped for an actor that reports its environment; without the forwarding it sees none of them.
- Ray's token authentication is on, as in the stack (RAY_AUTH_MODE=token, one RAY_AUTH_TOKEN for every node and
  client): without it a head started after any local ray.init() (which writes ~/.ray/auth_token) turns token
  auth on by itself, and nodes and drivers that do not read that file are refused.
- Every node sees the same storage (scripts/rl/preflight.check_shared_storage): a second node started in its own
  mount namespace, with an empty tmpfs over the folder the head writes, is a node whose storage is not shared.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.rl import launch as rl_launch
from scripts.rl import preflight as rl_preflight
from scripts.rl.preflight import LaunchError

REPO_ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # docker-compose.yml's x-ray-auth


def clean_env(**extra: str) -> dict[str, str]:
    """What a container's `ray start` has: the cluster's token, none of the settings a user exports for one run."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {k: v for k, v in os.environ.items() if k in keep} | {"RAY_USAGE_STATS_ENABLED": "0"} | AUTH | extra


class Cluster:
    """`ray start --head` on 127.0.0.1, plus worker nodes; stopped by killing what its temp dir names."""

    def __init__(self, ray: Path):
        self.ray, self.port = ray, free_port()
        self.tmp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's AF_UNIX paths end at 107 bytes
        self.address = f"127.0.0.1:{self.port}"

    def start(self, *args: str, namespace: str = "") -> None:
        """Start a node; `namespace`: a shell command run first in a private mount namespace of its own."""
        node = [str(self.ray), "start", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args]
        if namespace:
            script = f"{namespace} && exec {' '.join(node)}"
            node = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        out = subprocess.run(node, env=clean_env(), capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr

    def head(self) -> Cluster:
        self.start("--head", f"--port={self.port}", f"--temp-dir={self.tmp}", "--include-dashboard=false")
        return self

    def stop(self) -> None:
        subprocess.run(["pkill", "-9", "-f", self.tmp], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def cluster(verl_python: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    from ray._private.authentication_test_utils import reset_auth_token_state  # Ray reads its auth mode once

    for name, value in AUTH.items():  # this process's own ray.init (the preflight) is a client of the cluster too
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    reset_auth_token_state()
    c = Cluster(verl_python.parent / "ray").head()
    try:
        yield c
    finally:
        c.stop()
        monkeypatch.undo()
        reset_auth_token_state()


PROBE = textwrap.dedent(
    """
    import json, os, sys

    import ray
    from verl.trainer.main_ppo import run_ppo

    from scripts.rl.config import compose_config

    OUT = sys.argv[1]  # the driver's argument (a worker's sys.argv is its own)
    NAMES = ["HF_HUB_OFFLINE", "HF_TOKEN", "HF_ENDPOINT", "NCCL_SOCKET_IFNAME", "VERL_USE_EXTERNAL_MODULES", "HOME"]


    @ray.remote(num_cpus=0)
    class EnvProbe:  # in place of verl's TaskRunner: what a worker of this job sees
        def run(self, config):
            with open(OUT, "w") as f:
                json.dump({name: os.environ.get(name) for name in NAMES}, f)


    env_vars = "+ray_kwargs.ray_init.runtime_env.env_vars"
    run_ppo(compose_config("ppo_gsm8k", [f"{env_vars}.HF_ENDPOINT=http://from-the-config"]), EnvProbe)
    """
)


def worker_env(verl_python: Path, cluster: Cluster, tmp_path: Path, modules: str) -> dict[str, str | None]:
    """What verl's TaskRunner sees when run_ppo.sh's shell exported the run's settings."""
    (script := tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    out = tmp_path / f"seen-{len(modules)}.json"
    shell = clean_env(
        PYTHONPATH=str(REPO_ROOT),
        RAY_ADDRESS=cluster.address,
        HF_HUB_OFFLINE="1",
        HF_TOKEN="hf_secret_of_this_run",
        HF_ENDPOINT="http://from-the-shell",
        NCCL_SOCKET_IFNAME="eth7",
        VERL_USE_EXTERNAL_MODULES=modules,
        HOME=str(tmp_path),  # the driver's, not the raylet's
    )
    run = subprocess.run(
        [str(verl_python), str(script), str(out)], env=shell, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "hf_secret_of_this_run" not in run.stdout + run.stderr  # verl prints its ray.init kwargs: never the token
    return json.loads(out.read_text(encoding="utf-8"))


def test_the_launching_shells_settings_reach_a_clusters_workers(verl_python, cluster, tmp_path):
    seen = worker_env(verl_python, cluster, tmp_path, "scripts.lib.ray_start")
    assert seen == {
        "HF_HUB_OFFLINE": "1",
        "HF_TOKEN": "hf_secret_of_this_run",
        "HF_ENDPOINT": "http://from-the-config",  # a value set in the config wins
        "NCCL_SOCKET_IFNAME": "eth7",
        "VERL_USE_EXTERNAL_MODULES": "scripts.lib.ray_start",  # so verl imports our modules in the TaskRunner
        "HOME": os.environ["HOME"],  # not forwarded: each node's own
    }
    # Without the forwarding (the launcher before it), the same job's workers see none of the run's settings.
    before = worker_env(verl_python, cluster, tmp_path, "")
    assert before["HF_HUB_OFFLINE"] is None and before["HF_TOKEN"] is None and before["NCCL_SOCKET_IFNAME"] is None


def test_a_node_that_does_not_share_the_storage_is_refused_by_name(cluster, tmp_path, tiny_model_dir, gsm8k_data_dir):
    """check_ray as the launch calls it (N_GPUS=1, NNODES=1), on a cluster whose GPU node has a disk of its own."""
    import ray

    local, shared = tmp_path / "node-local", tmp_path / "shared"
    shutil.copytree(gsm8k_data_dir, local / "data")
    shared.mkdir()
    # The GPU node: same machine, but an empty tmpfs where the head has node-local/ (another machine's disk).
    node = [f"--address={cluster.address}", "--num-cpus=64", "--num-gpus=1"]
    cluster.start(*node, namespace=f"mount -t tmpfs tmpfs {local}")
    env = {"N_GPUS": "1", "MODEL_PATH": str(tiny_model_dir), "DATA_DIR": str(local / "data")}
    env |= {"CHECKPOINT_DIR": str(local / "ckpt"), "RAY_ADDRESS": cluster.address}
    s = rl_launch.Settings.from_env("ppo", env)
    _, cfg, _ = rl_launch.build(s, [])
    files = rl_launch.shared_files(cfg, tiny_model_dir)
    assert set(files) == {"data train.parquet", "data val.parquet", "model"}

    with pytest.raises(LaunchError) as refused:
        rl_preflight.check_ray(s.ray_address, s.slots, s.nnodes, cfg, s.checkpoint_dir, files)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    second = next(n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))
    ray.shutdown()
    where = f"node {second['NodeManagerAddress']} ({second['NodeID'][:8]}, host {socket.gethostname()})"
    msg = str(refused.value)
    assert f"{where} does not see {local / 'ckpt'} as this node does" in msg
    assert f"{where} has no data train.parquet at {local / 'data' / 'train.parquet'}" in msg
    assert msg.count("does not see") == 1 and "has no model" not in msg  # the head sees it; both see the model
    assert "mount the same storage at the same path on every node" in msg
    assert not list((local / "ckpt").iterdir())  # the marker is gone, also after a refusal

    s.checkpoint_dir, files = shared / "ckpt", {"model": tiny_model_dir / "config.json"}
    ok = rl_preflight.check_ray(s.ray_address, s.slots, s.nnodes, cfg, s.checkpoint_dir, files)
    assert ok.endswith(f"2 node(s), 1 GPUs; storage: 2 node(s) see {shared / 'ckpt'} and the model")
