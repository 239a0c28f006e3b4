"""The stack on a real Docker engine (and GPUs): build, up healthy, RL dry run, shared files, set-up profile.

    .venv/bin/python -m pytest tests/test_compose_engine.py -q      # on the GPU server; skips itself elsewhere

Everything runs under its own Compose project name (gsm8k-posttrain-test) with a throw-away .env, and is
removed with its volumes at the end; the real stack's volumes are never touched. The bind mount is this
checkout, as in production: the shared-file test writes (and deletes) one folder under models/.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = "gsm8k-posttrain-test"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True).stdout
    return sum(line.startswith("GPU ") for line in out.splitlines())


# The containers need the host's GPUs (NVIDIA driver + Container Toolkit), not CUDA in the test venv, whose
# torch is the CPU build: so this, rather than the `gpu` marker, decides.
needs_gpus = pytest.mark.skipif(gpu_count() == 0, reason="needs NVIDIA GPUs on the Docker host (nvidia-smi)")


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    """.env.example with a fresh token, this user's ids, the GPUs this machine has and free host ports."""
    n = max(gpu_count(), 1)
    overrides = {
        "JUPYTER_TOKEN": secrets.token_hex(32),
        "HOST_UID": str(os.getuid()),
        "HOST_GID": str(os.getgid()),
        "N_GPUS": str(n),
        "GPU_DEVICES": ",".join(str(i) for i in range(n)),
        "JUPYTER_PORT": "18888",
        "MLFLOW_PORT": "15000",
        "RAY_DASHBOARD_PORT": "18265",
        "RAY_NUM_CPUS": str(max(os.cpu_count() or 1, 3 * n + 2)),
        "VERL_SHM_SIZE": "16g",
    }
    lines = []
    for line in (REPO / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={overrides.pop(key)}" if key in overrides else line)
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose(env_file: Path, *args: str, timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["docker", "compose", "--project-directory", str(REPO), "-p", PROJECT, "--env-file", str(env_file), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check:
        assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_images_build(env_file):
    compose(env_file, "--profile", "*", "build", timeout=3 * 3600)


@pytest.fixture(scope="module")
def stack(env_file):
    compose(env_file, "up", "-d", "--wait", "--wait-timeout", "900", timeout=3600)
    try:
        yield env_file
    finally:
        compose(env_file, "--profile", "*", "down", "-v", "--remove-orphans", check=False)


def exec_in(env_file: Path, service: str, *cmd: str, user: str | None = None) -> subprocess.CompletedProcess:
    return compose(env_file, "exec", "-T", *(["-u", user] if user else []), service, *cmd)


@needs_gpus
def test_stack_is_healthy_and_reachable_on_loopback(stack):
    ps = compose(stack, "ps", "--format", "{{.Service}} {{.Health}}").stdout
    assert {line.split()[0]: line.split()[1] for line in ps.splitlines()} == {
        "mlflow": "healthy",
        "jupyter": "healthy",
        "verl": "healthy",
    }
    with urllib.request.urlopen("http://127.0.0.1:15000/health", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen("http://127.0.0.1:18888/api", timeout=10) as response:
        assert response.status == 200


@needs_gpus
def test_verl_reaches_mlflow_by_service_name_and_runs_a_ray_head_with_the_gpus(stack):
    api = "http://mlflow:5000/api/2.0/mlflow/experiments/search?max_results=1"
    probe = f"import urllib.request as u; print(u.urlopen('{api}').status)"
    assert exec_in(stack, "verl", "python", "-c", probe).stdout.strip() == "200"
    status = exec_in(stack, "verl", "ray", "status").stdout
    assert re.search(rf"0\.0/{gpu_count()}\.0 GPU", status), status
    env = "import os; print(os.environ['HF_HOME'], os.environ['MLFLOW_TRACKING_URI'])"
    assert exec_in(stack, "verl", "python", "-c", env).stdout == exec_in(stack, "jupyter", "python", "-c", env).stdout


@needs_gpus
def test_rl_dry_run_from_the_verl_working_dir(stack):
    exec_in(stack, "verl", "bash", "run_ppo.sh", "--dry-run")  # literally as the README says; exits 0


@needs_gpus
def test_files_stay_writable_by_verl_jupyter_and_the_host_user(stack):
    shared = REPO / "models" / f".compose-test-{secrets.token_hex(4)}"
    target = f"/workspace/models/{shared.name}"
    try:
        # verl (root, group HOST_GID) creates through the path `docker compose exec verl bash ...` takes
        exec_in(stack, "verl", "bash", "-c", f"mkdir -p {target} && echo verl > {target}/from-verl")
        info = os.stat(shared / "from-verl")
        assert info.st_gid == os.getgid() and info.st_mode & 0o020, "verl's file is not group-writable by HOST_GID"
        # the notebook user (JupyterLab's umask) changes it and adds its own; the host user changes both
        server_umask = "grep Umask /proc/$(pgrep -f jupyter-lab | head -n1)/status"
        assert exec_in(stack, "jupyter", "bash", "-c", server_umask).stdout.split()[-1] == "0002"
        as_notebook = f"umask 0002 && echo jupyter >> {target}/from-verl && echo j > {target}/from-jupyter"
        exec_in(stack, "jupyter", "bash", "-c", as_notebook, user=f"{os.getuid()}:{os.getgid()}")
        (shared / "from-verl").write_text("host\n")
        (shared / "from-jupyter").write_text("host\n")
        exec_in(stack, "verl", "bash", "-c", f"echo verl >> {target}/from-jupyter")
    finally:
        shutil.rmtree(shared)  # as the host user: fails if a container left something we cannot delete


def test_setup_profile_fills_the_cache_and_prepares_data(env_file, tmp_path):
    out = "/tmp/gsm8k-setup-test"
    proc = compose(env_file, "--profile", "setup", "run", "--rm", "-e", f"DATA_DIR={out}", "setup", "bash", "-c",
                   f"prefetch.sh && ls {out}", timeout=3600)  # fmt: skip
    for name in ("train.parquet", "val.parquet", "test.parquet", "sft_train.parquet", "manifest.json"):
        assert name in proc.stdout.split()
    compose(env_file, "--profile", "*", "down", "-v", check=False)
