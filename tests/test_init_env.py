"""scripts/init_env.sh: the first set-up command writes a private, complete .env and never clobbers one; the .env
it writes for one machine, a cluster head or a worker renders with plain `docker compose` (COMPOSE_FILE in it), and
scripts/doctor.sh judges the settings it derives (Ray token, bind address and MLflow's allowed hosts)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_images import run_doctor

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "init_env.sh"
COMPOSE_BIN = Path(sys.executable).with_name("docker-compose")
ROLE_KNOBS = {"SUDO_UID", "SUDO_GID", "CLUSTER", "RAY_HEAD_IP", "RAY_AUTH_TOKEN", "BIND_ADDRESS"}


def run_raw(env_file: Path, path_dirs: list[Path] = (), **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ROLE_KNOBS}
    base["PATH"] = os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"])
    return subprocess.run(
        ["bash", str(SCRIPT)], env={**base, "ENV_FILE": str(env_file), **env}, capture_output=True, text=True
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
    # The README's worker commands, literally: `docker compose --profile setup run --rm setup`, `docker compose up -d`
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
