"""scripts/init_env.sh: the first set-up command writes a private, complete .env and never clobbers one."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "init_env.sh"


def run(env_file: Path, path_dirs: list[Path] = (), **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"SUDO_UID", "SUDO_GID"}}
    base["PATH"] = os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"])
    proc = subprocess.run(
        ["bash", str(SCRIPT)], env={**base, "ENV_FILE": str(env_file), **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc


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
    assert values["JUPYTER_TOKEN"] != values["POSTGRES_PASSWORD"]
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
    assert (values["N_GPUS"], values["GPU_DEVICES"]) == ("2", "0,1")
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
