"""scripts/init_env.sh: the first set-up command writes a private, complete .env and never clobbers one; the .env
it writes for one machine, a cluster head or a worker renders with plain `docker compose` (COMPOSE_FILE in it), and
scripts/doctor.sh judges the settings it derives (Ray token, bind address and MLflow's allowed hosts)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_images import run_doctor

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "init_env.sh"
COMPOSE_BIN = Path(sys.executable).with_name("docker-compose")
ROLE_KNOBS = {"SUDO_UID", "SUDO_GID", "CLUSTER", "RAY_HEAD_IP", "RAY_AUTH_TOKEN", "BIND_ADDRESS"}
SHARED = ("models", "data", "notebooks")  # what jupyter and verl write in the checkout


def checkout(root: Path) -> Path:
    """What init_env.sh works on: a copy of the script and .env.example, and the folders the containers write
    (a copy, so that run as root it never hands this repository's folders to another user)."""
    if not (root / SCRIPT.relative_to(REPO)).is_file():
        (root / "scripts").mkdir(parents=True)
        shutil.copy2(SCRIPT, root / "scripts")
        shutil.copy2(REPO / ".env.example", root)
        for folder in SHARED:
            (root / folder).mkdir()
    return root


def run_raw(env_file: Path, path_dirs: list[Path] = (), **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ROLE_KNOBS}
    base["PATH"] = os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"])
    script = checkout(env_file.parent / "checkout") / SCRIPT.relative_to(REPO)
    return subprocess.run(
        ["bash", str(script)], env={**base, "ENV_FILE": str(env_file), **env}, capture_output=True, text=True
    )


def run(env_file: Path, path_dirs: list[Path] = (), **env: str) -> subprocess.CompletedProcess:
    proc = run_raw(env_file, path_dirs, **env)
    assert proc.returncode == 0, proc.stderr
    return proc


def plain_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess:
    """`docker compose <args>` as typed in the checkout: no -f, the files come from COMPOSE_FILE in the .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "RAY_", "JUPYTER_"))}
    cmd = [str(COMPOSE_BIN), "--project-directory", str(REPO), "--env-file", str(env_file), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def parse(env_file: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", env_file.read_text(), flags=re.M))


def fake_nvidia_smi(tmp_path: Path, gpus: int) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    lines = "".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'\n" for i in range(gpus))
    tool.write_text(f"#!/bin/sh\n{lines}")
    tool.chmod(0o755)
    return bin_dir


def test_cpu_machine_gets_secrets_owner_and_the_cpu_variant(tmp_path):
    env_file = tmp_path / ".env"
    out = run(env_file).stdout
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = parse(env_file)
    example = parse(REPO / ".env.example")
    assert set(example) <= set(values)  # every setting of the example is there
    assert re.fullmatch(r"[0-9a-f]{64}", values["JUPYTER_TOKEN"])
    assert re.fullmatch(r"[0-9a-f]{64}", values["POSTGRES_PASSWORD"])
    assert re.fullmatch(r"[0-9a-f]{64}", values["RAY_AUTH_TOKEN"])
    assert len({values["JUPYTER_TOKEN"], values["POSTGRES_PASSWORD"], values["RAY_AUTH_TOKEN"]}) == 3
    assert values["HF_TOKEN"] == ""  # the user's own: never invented
    assert values["N_GPUS"] == "0"
    assert values["COMPOSE_FILE"] == "docker-compose.yml:docker-compose.cpu.yml"
    assert values["HOST_UID"] != "0"  # JupyterLab refuses root: never chosen, even when run as root
    assert f"token={values['JUPYTER_TOKEN']}" in out and "docker compose up -d" in out
    assert not list(tmp_path.glob(".env.*"))  # no temp file left behind


def test_gpu_machine_gets_its_gpus(tmp_path):
    env_file = tmp_path / ".env"
    run(env_file, [fake_nvidia_smi(tmp_path, 2)])
    values = parse(env_file)
    assert values["N_GPUS"] == "2" and "GPU_DEVICES" not in values
    assert "COMPOSE_FILE" not in values


def test_sudo_user_owns_the_files(tmp_path):
    env_file = tmp_path / ".env"
    run(env_file, SUDO_UID="1234", SUDO_GID="2345")
    assert (parse(env_file)["HOST_UID"], parse(env_file)["HOST_GID"]) == ("1234", "2345")


def test_existing_env_is_kept_and_differences_listed(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("JUPYTER_TOKEN=mine\nMY_OWN=1\n")
    out = run(env_file).stdout
    assert env_file.read_text() == "JUPYTER_TOKEN=mine\nMY_OWN=1\n"
    assert "MY_OWN" in out and "HOST_UID" in out and "mv " in out


def test_secrets_differ_between_runs(tmp_path):
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    run(first)
    run(second)
    assert parse(first)["JUPYTER_TOKEN"] != parse(second)["JUPYTER_TOKEN"]


def test_a_private_network_bind_address_is_added_to_mlflows_allowed_hosts(tmp_path):
    env_file = tmp_path / ".env"
    out = run(env_file, BIND_ADDRESS="10.0.0.7").stdout
    values = parse(env_file)
    assert values["BIND_ADDRESS"] == "10.0.0.7"
    assert values["MLFLOW_ALLOWED_HOSTS"].split(",")[-2:] == ["10.0.0.7", "10.0.0.7:*"]
    assert "mlflow:5000" in values["MLFLOW_ALLOWED_HOSTS"].split(",")  # the defaults stay
    assert values["MLFLOW_CORS_ALLOWED_ORIGINS"].endswith(",http://10.0.0.7:*")
    assert "-L 8888:10.0.0.7:8888" in out  # the tunnel goes where the port is published
    doctor = run_doctor(tmp_path, **values).stdout
    assert "mlflow allowed hosts" not in doctor and "Tunnels go to 10.0.0.7" in doctor


def test_doctor_fails_a_bind_address_mlflow_would_refuse(tmp_path):
    proc = run_doctor(tmp_path, JUPYTER_TOKEN="x" * 32, RAY_AUTH_TOKEN="y" * 32, BIND_ADDRESS="10.0.0.7")
    line = next(line for line in proc.stdout.splitlines() if "mlflow allowed hosts" in line)
    assert line.startswith("FAIL") and "10.0.0.7:*" in line and "init_env.sh" in line
    assert proc.returncode == 1


def test_doctor_names_a_missing_ray_token(tmp_path):
    proc = run_doctor(tmp_path, JUPYTER_TOKEN="x" * 32)
    assert next(line for line in proc.stdout.splitlines() if "RAY_AUTH_TOKEN" in line).startswith("FAIL .env:")
    ok = run_doctor(tmp_path, JUPYTER_TOKEN="x" * 32, RAY_AUTH_TOKEN="y" * 64).stdout
    assert "PASS .env: RAY_AUTH_TOKEN set (64 characters" in ok and "y" * 64 not in ok


def test_the_head_gets_the_multinode_override_for_every_plain_compose_command(tmp_path):
    env_file = tmp_path / ".env"
    out = run(env_file, [fake_nvidia_smi(tmp_path, 2)], CLUSTER="head", RAY_HEAD_IP="10.0.0.1").stdout
    values = parse(env_file)
    assert values["COMPOSE_FILE"] == "docker-compose.yml:docker-compose.multinode.yml"
    assert (values["RAY_HEAD_IP"], values["BIND_ADDRESS"]) == ("10.0.0.1", "10.0.0.1")
    assert "10.0.0.1:*" in values["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert f"RAY_AUTH_TOKEN=<RAY_AUTH_TOKEN in {env_file}>" in out and values["RAY_AUTH_TOKEN"] not in out
    proc = plain_compose(env_file, "config", "--format", "json")  # what `docker compose up -d` would start
    assert proc.returncode == 0, proc.stderr
    verl = json.loads(proc.stdout)["services"]["verl"]
    assert verl["network_mode"] == "host" and verl["environment"]["RAY_NODE_IP"] == "10.0.0.1"
    assert verl["environment"]["MLFLOW_TRACKING_URI"] == "http://10.0.0.1:5000"
    assert "RAY_HEAD_IP" not in run_doctor(tmp_path, **values).stdout  # no "override missing" warning


def test_a_worker_gets_the_heads_token_and_its_own_setup(tmp_path):
    env_file = tmp_path / ".env"
    token = "f" * 64
    run(env_file, CLUSTER="worker", RAY_HEAD_IP="10.0.0.1", RAY_AUTH_TOKEN=token)
    values = parse(env_file)
    assert values["COMPOSE_FILE"] == "docker-compose.worker.yml" and values["RAY_AUTH_TOKEN"] == token
    # docs/operations.md's worker commands: `docker compose --profile setup run --rm setup`, `docker compose up -d`
    proc = plain_compose(env_file, "--profile", "setup", "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    assert set(services) == {"verl-worker", "setup"}
    assert services["verl-worker"]["environment"]["RAY_AUTH_TOKEN"] == token
    assert services["verl-worker"]["command"] == ["ray-node.sh", "worker", "10.0.0.1:6379"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLUSTER": "worker", "RAY_HEAD_IP": "10.0.0.1"}, "CLUSTER=worker needs RAY_AUTH_TOKEN"),
        ({"CLUSTER": "head"}, "CLUSTER=head needs RAY_HEAD_IP"),
        ({"CLUSTER": "head", "RAY_HEAD_IP": "head-node"}, "got 'head-node'"),
        ({"CLUSTER": "boss", "RAY_HEAD_IP": "10.0.0.1"}, "CLUSTER must be head or worker"),
        ({"BIND_ADDRESS": "my-server"}, "BIND_ADDRESS must be an IPv4 address"),
    ],
    ids=["worker-without-token", "head-without-ip", "head-ip-not-an-ip", "unknown-role", "bind-not-an-ip"],
)
def test_bad_roles_and_addresses_are_refused_before_anything_is_written(tmp_path, env, message):
    env_file = tmp_path / ".env"
    proc = run_raw(env_file, **env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not env_file.exists() and not list(tmp_path.glob(".env*"))


def as_user(uid: int, gid: int, *cmd: str) -> subprocess.CompletedProcess:
    """`cmd` as the containers' user (HOST_UID:HOST_GID), the way jupyter and verl run."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *cmd], capture_output=True, text=True
    )


@pytest.fixture
def open_tmp():
    """A temporary folder other users may traverse (pytest's tmp_path lies under a 0700 folder of root's)."""
    path = Path(tempfile.mkdtemp(prefix="init-env-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_a_checkout_cloned_by_root_is_handed_to_the_containers_user(open_tmp):
    """Root runs init_env.sh in a checkout root owns (cloud GPU machines): the containers' user can then write
    data/gsm8k, save the notebook and read a model file root wrote 0600; also when .env already exists."""
    root = checkout(open_tmp / "checkout")
    (root / "data" / "gsm8k").mkdir()
    (root / "notebooks" / "sft_training.ipynb").write_text("{}")
    model = root / "models" / "sft" / "run" / "model.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    model.chmod(0o600)
    out = run(open_tmp / ".env").stdout
    uid, gid = (int(parse(open_tmp / ".env")[key]) for key in ("HOST_UID", "HOST_GID"))
    assert uid != 0 and "models/ data/ notebooks/ now belong to" in out
    assert as_user(uid, gid, "touch", str(root / "data" / "gsm8k" / "train.parquet")).returncode == 0
    assert as_user(uid, gid, "touch", str(root / "notebooks" / "sft_training.ipynb")).returncode == 0
    assert as_user(uid, gid, "cat", str(model)).stdout == "weights"
    # a later root-written file (a checkpoint from a root shell): rerunning the set-up step hands it over too
    late = root / "models" / "rl" / "late.pt"
    late.parent.mkdir()
    late.write_bytes(b"x")
    late.chmod(0o600)
    assert "now belong to" in run(open_tmp / ".env").stdout and as_user(uid, gid, "cat", str(late)).stdout == "x"
