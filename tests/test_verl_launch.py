"""A real (non-dry) launch up to verl's doorstep: model choice, preflight errors, MLflow run + resume, Ray.

Everything real except the final `exec` of verl's trainer (no GPU here): a real `mlflow server` on
127.0.0.1, verl's own MLflow tracker, verl's own `main_ppo` (Hydra `--cfg job`: the config it would
train with) and verl's own `run_ppo` starting a local Ray cluster whose TaskRunner actor must reach MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from scripts.lib.model_presets import DEFAULT_MODEL
from scripts.rl import launch as rl_launch
from scripts.rl import preflight as rl_preflight
from scripts.rl.preflight import LaunchError
from tests.mlflow_server import free_port, mlflow_server

REPO = Path(__file__).resolve().parent.parent


# --- model choice, names and the environment ------------------------------------------------------


def env(model, data: Path, ckpt: Path, **extra: str) -> dict[str, str]:
    """The environment run_ppo.sh / run_grpo.sh pass on: the launcher reads nothing else."""
    return {
        "MODEL_PATH": str(model),
        "DATA_DIR": str(data),
        "CHECKPOINT_DIR": str(ckpt),
        "RAY_TMPDIR": str(ckpt.parent / "no-ray"),
        **extra,
    }


def test_model_path_wins_over_the_manifest(tmp_path):
    manifest = tmp_path / "latest.json"
    manifest.write_text(json.dumps({"path": "/nonexistent"}))
    assert rl_launch.choose_model("/models/x", DEFAULT_MODEL, manifest)[:2] == ("/models/x", "MODEL_PATH is set")


def test_latest_sft_checkpoint_is_the_default(tmp_path, tiny_model_dir):
    manifest = tmp_path / "latest.json"
    record = {
        "path": str(tiny_model_dir),
        "base_model": "Qwen/Qwen2.5-0.5B-Instruct",
        "mlflow_run_id": "abc123",
        "eval_accuracy": {"flexible": 0.41, "strict": 0.38},
        "created_at": "2025-01-02T03:04:05Z",
    }
    manifest.write_text(json.dumps(record))
    model, why, data = rl_launch.choose_model("", DEFAULT_MODEL, manifest)
    assert model == str(tiny_model_dir)
    assert why.startswith(f"latest SFT checkpoint in {manifest}")
    assert "MLflow run abc123" in why and "flexible 0.41" in why
    assert data["mlflow_run_id"] == "abc123"


def test_manifest_paths_are_relative_to_the_repo(tmp_path):
    model = REPO / "models" / "sft" / "tiny-test-run"
    manifest = tmp_path / "latest.json"
    manifest.write_text(json.dumps({"path": "models/sft/tiny-test-run"}))
    with pytest.raises(LaunchError, match=f"names {model}, which holds no model"):
        rl_launch.choose_model("", DEFAULT_MODEL, manifest)


def test_model_path_that_is_not_a_folder_fails_before_anything_else(tmp_path):
    with pytest.raises(LaunchError, match="is not a directory"):
        rl_launch.Settings.from_env("ppo", {"MODEL_PATH": str(tmp_path / "nope")})


def test_no_manifest_means_the_released_model_or_the_base_model_from_env(tmp_path, monkeypatch):
    monkeypatch.setattr(rl_launch, "SFT_MANIFEST", tmp_path / "missing.json")
    s = rl_launch.Settings.from_env("ppo", {})
    assert s.model == "Qwen/Qwen2.5-0.5B-Instruct" and "no SFT manifest" in s.model_reason
    s = rl_launch.Settings.from_env("ppo", {"BASE_MODEL": "Qwen/Qwen2.5-1.5B-Instruct"})  # .env's, passed by compose
    assert s.model == "Qwen/Qwen2.5-1.5B-Instruct" and "BASE_MODEL" in s.model_reason
    assert s.experiment == "ppo-qwen2.5-1.5b-instruct"


def test_environment_knobs_are_read_once_into_settings(tmp_path, tiny_model_dir, gsm8k_data_dir):
    s = rl_launch.Settings.from_env("grpo", env(tiny_model_dir, gsm8k_data_dir, tmp_path / "ck", N_GPUS="0"))
    assert (s.n_gpus, s.slots, s.nnodes, s.model, s.reward) == (0, 1, 1, str(tiny_model_dir), "gsm8k_strict")
    assert (s.checkpoint_dir, s.mlflow_uri, s.experiment) == (tmp_path / "ck", "http://mlflow:5000", "grpo-model")
    assert rl_launch.Settings.from_env("ppo", env(tiny_model_dir, gsm8k_data_dir, tmp_path, N_GPUS="")).n_gpus == 4
    for bad in ({"N_GPUS": "four"}, {"NNODES": "0"}, {"N_GPUS": "0", "NNODES": "2"}):
        with pytest.raises(LaunchError, match=r"(N_GPUS|NNODES)=.* in the environment: use a whole number"):
            rl_launch.Settings.from_env("ppo", env(tiny_model_dir, gsm8k_data_dir, tmp_path, **bad))
    with pytest.raises(LaunchError, match=r"EXPERIMENT='a b': use letters"):
        rl_launch.Settings.from_env("ppo", env(tiny_model_dir, gsm8k_data_dir, tmp_path, EXPERIMENT="a b"))


def test_flags_are_not_a_second_way_to_set_the_environment(capsys):
    with pytest.raises(SystemExit):
        rl_launch.main(["--algo", "ppo", "--n-gpus", "2", "--dry-run"])
    assert "unknown option(s) --n-gpus: settings are environment variables" in capsys.readouterr().err


def test_unknown_reward_is_refused_naming_the_known_ones(tmp_path, tiny_model_dir, gsm8k_data_dir):
    with pytest.raises(LaunchError) as refused:
        rl_launch.Settings.from_env("grpo", env(tiny_model_dir, gsm8k_data_dir, tmp_path, REWARD="gsm8k_xml"))
    assert "REWARD: unknown reward 'gsm8k_xml'; known rewards: gsm8k_flexible, gsm8k_strict" in str(refused.value)


def test_broken_manifest_is_an_error_not_a_silent_fallback(tmp_path):
    manifest = tmp_path / "latest.json"
    manifest.write_text("{not json")
    with pytest.raises(LaunchError, match="is not an SFT manifest"):
        rl_launch.choose_model("", DEFAULT_MODEL, manifest)


@pytest.mark.parametrize(
    ("algo", "model", "experiment"),
    [
        ("ppo", "Qwen/Qwen2.5-0.5B-Instruct", "ppo-qwen2.5-0.5b-instruct"),
        ("grpo", "/workspace/models/sft/Qwen-SFT 2025/", "grpo-qwen-sft-2025"),
    ],
)
def test_experiment_names_say_algorithm_and_model(algo, model, experiment):
    assert rl_launch.default_experiment(algo, model) == experiment


# --- preflight -------------------------------------------------------------------------------------


def test_preflight_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(LaunchError, match=r"/dev/shm is .* `shm_size: 16g` or `ipc: host`"):
        rl_preflight.check_shm(min_gib=10**9)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    with pytest.raises(LaunchError, match=r"N_GPUS=4 but this node sees none .*: set N_GPUS=0 to train on CPU"):
        rl_preflight.check_gpus(4, cfg=None)
    with pytest.raises(LaunchError, match=r"NNODES=2 needs a running Ray cluster"):
        rl_preflight.check_ray(None, 4, 2, cfg=None)
    with pytest.raises(LaunchError, match=r"checkpoints need ~.* GiB free: free space, set CHECKPOINT_DIR"):
        rl_preflight.check_disk(tmp_path / "a" / "b", need=2**60)


def test_checkpoint_size_estimate(tiny_model_dir):
    weights = sum(f.stat().st_size for f in tiny_model_dir.glob("*.safetensors"))
    params = weights / 4  # the tiny model is stored in float32
    assert rl_preflight.checkpoint_bytes(tiny_model_dir, hf_weights=True, critic=True) == int(params * 28)
    assert rl_preflight.checkpoint_bytes(tiny_model_dir, hf_weights=False, critic=False) == int(params * 12)


# --- a real launch, MLflow and resume --------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


class Exec(Exception):
    """Raised instead of replacing the test process with verl's trainer."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        super().__init__(cmd[0])
        self.cmd, self.env = cmd, env


# What the launcher sets in its own environment for the verl process it execs into (ensure_mlflow_run's client
# retries, the offline store of ALLOW_NO_TRACKING=1). Run in the test process, they are put back afterwards.
LAUNCHER_ENV = (
    "MLFLOW_TRACKING_URI",
    "_MLFLOW_SERVER_ARTIFACT_ROOT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


def launch_until_exec(monkeypatch, tiny_model_dir, data_dir, ckpt, uri, *overrides) -> Exec:
    """rl_launch's real launch path (minus the GPU preflight); LaunchError propagates, exec is caught."""

    def fake_exec(path, cmd, env):
        raise Exec(cmd, env)

    for var in LAUNCHER_ENV:
        monkeypatch.setenv(var, "")  # recorded, so the teardown restores what was (or was not) there
        monkeypatch.delenv(var)
    monkeypatch.setattr(os, "execvpe", fake_exec)
    monkeypatch.chdir(Path.cwd())  # the launcher enters the checkpoint dir before it execs verl
    s = rl_launch.Settings.from_env(
        "ppo", env(tiny_model_dir, data_dir, ckpt, EXPERIMENT="ppo-tiny", MLFLOW_TRACKING_URI=uri)
    )
    with pytest.raises(Exec) as caught:
        rl_launch.launch(s, list(overrides), skip_preflight=True)
    ray_tmp = Path(caught.value.env.pop("RAY_TMPDIR"))  # the local Ray's own temp dir: made, unused here
    assert (ray_tmp / rl_preflight.LAUNCH_PID).read_text() == str(os.getpid())  # the launch that will run there
    (ray_tmp / rl_preflight.LAUNCH_PID).unlink()
    ray_tmp.rmdir()
    return caught.value


@pytest.mark.slow
def test_launch_creates_the_run_and_a_rerun_continues_it(
    monkeypatch, tmp_path, mlflow_uri, tiny_model_dir, gsm8k_data_dir
):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no-ray"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning:mine")
    ckpt = tmp_path / "models" / "rl" / "ppo-tiny"
    first = launch_until_exec(monkeypatch, tiny_model_dir, gsm8k_data_dir, ckpt, mlflow_uri)
    # verl's known noise is filtered in every process of the run; a filter of the user's comes after, so it wins
    assert first.env["PYTHONWARNINGS"] == f"{rl_launch.VERL_NOISE},error::DeprecationWarning:mine"

    run_id = (ckpt / "mlflow_run_id").read_text().strip()
    client = MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "ppo-tiny"
    assert client.get_experiment(run.info.experiment_id).name == "gsm8k-rl"
    assert run.data.tags["algorithm"] == "ppo" and run.data.tags["model"] == str(tiny_model_dir)
    # verl's trainer gets the run: as env (a Ray it starts inherits it) and in the Ray runtime_env.
    assert first.env["MLFLOW_RUN_ID"] == run_id and first.env["MLFLOW_TRACKING_URI"] == mlflow_uri
    assert f"+ray_kwargs.ray_init.runtime_env.env_vars.MLFLOW_RUN_ID='{run_id}'" in first.cmd
    assert first.cmd[1:3] == ["-m", "verl.trainer.main_ppo"]
    # verl imports the outage-proof MLflow logger in every process (scripts/lib/resilient_mlflow.py), and the
    # Ray start-up retry (scripts/lib/ray_start.py)
    assert first.env["VERL_USE_EXTERNAL_MODULES"].split(",") == [
        "scripts.lib.resilient_mlflow",
        "scripts.lib.ray_start",
    ]
    launched = yaml.safe_load((ckpt / "launch_config.yaml").read_text())
    assert launched["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"] == {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_RUN_ID": run_id,
    }

    # verl's own main_ppo, given the exact command, composes exactly the config the launcher validated.
    cfg_job = subprocess.run(
        [*first.cmd, "--cfg", "job", "--resolve"], capture_output=True, text=True, timeout=300, env=first.env
    )
    assert cfg_job.returncode == 0, cfg_job.stderr[-3000:]
    assert yaml.safe_load(cfg_job.stdout) == launched

    # The trainer starts: verl's tracker attaches to the run (as it does inside the TaskRunner actor).
    from mlflow.tracking._tracking_service import utils as mlflow_tracking
    from verl.utils.tracking import Tracking

    # verl's Tracking calls mlflow.set_tracking_uri, a process-wide setting that outranks MLFLOW_TRACKING_URI; in
    # the TaskRunner that process is verl's own, here it is the test's: put it back afterwards (it would send the
    # next test's MLflow calls to this module's server, stopped by then).
    monkeypatch.setattr(mlflow_tracking, "_tracking_uri", mlflow_tracking._tracking_uri)

    def train(step: int) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", first.env["MLFLOW_TRACKING_URI"])
        monkeypatch.setenv("MLFLOW_RUN_ID", first.env["MLFLOW_RUN_ID"])
        tracker = Tracking("gsm8k-rl", "ppo-tiny", default_backend=["mlflow"], config=launched)
        tracker.log({"val-core/openai/gsm8k/acc/mean@1": 0.1 * step}, step=step)
        tracker.finish()

    train(1)
    (ckpt / "latest_checkpointed_iteration.txt").write_text("1")  # verl saved global_step_1, then crashed

    # Rerun of the same command: same MLflow run, verl resumes the checkpoint and keeps logging into it.
    second = launch_until_exec(monkeypatch, tiny_model_dir, gsm8k_data_dir, ckpt, mlflow_uri)
    assert second.env["MLFLOW_RUN_ID"] == run_id and second.cmd == first.cmd
    train(2)
    history = client.get_metric_history(run_id, "val-core/openai/gsm8k/acc/mean_at_1")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 0.1), (2, 0.2)]
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert client.get_run(run_id).data.params["data/train_batch_size"] == "256"  # verl logged the config

    # A rerun with a changed hyperparameter would collide with the logged params: refused, with a way out.
    with pytest.raises(LaunchError) as refused:
        launch_until_exec(monkeypatch, tiny_model_dir, gsm8k_data_dir, ckpt, mlflow_uri, "trainer.total_epochs=3")
    assert "changed: trainer.total_epochs" in str(refused.value)
    assert f"delete {ckpt / 'mlflow_run_id'}" in str(refused.value)


@pytest.mark.slow
def test_verls_known_noise_is_filtered_and_nothing_else(verl_python):
    """verl.workers.engine warns about each engine that is not installed, in every process that imports it; the
    launch sets VERL_NOISE in PYTHONWARNINGS for all of them (test_verl_cpu_train.py: none in a real run's log)."""
    importer = [str(verl_python), "-c", "import warnings, verl.workers.engine; warnings.warn('a warning of mine')"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONWARNINGS", "VERL_"))}
    noisy = subprocess.run(importer, env=env, capture_output=True, text=True, timeout=300).stderr
    env["PYTHONWARNINGS"] = rl_launch.VERL_NOISE
    quiet = subprocess.run(importer, env=env, capture_output=True, text=True, timeout=300).stderr
    assert noisy.count("engine is not available") >= 4 and "megatron engine is not available" in noisy
    assert "engine is not available" not in quiet
    assert "UserWarning: a warning of mine" in quiet  # anyone else's warnings still show


def test_allow_no_tracking_launches_rl_into_the_local_store(monkeypatch, tmp_path, tiny_model_dir, gsm8k_data_dir):
    import mlflow

    from scripts.lib import mlflow_health

    monkeypatch.setattr(mlflow_health, "ALLOW_NO_TRACKING", True)
    monkeypatch.setattr(mlflow_health, "OFFLINE_STORE", tmp_path / "mlflow-offline")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no-ray"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ckpt = tmp_path / "models" / "rl" / "ppo-tiny"
    nobody = f"http://127.0.0.1:{free_port()}"
    launched = launch_until_exec(monkeypatch, tiny_model_dir, gsm8k_data_dir, ckpt, nobody)
    local = f"sqlite:///{tmp_path / 'mlflow-offline' / 'mlflow.db'}"
    assert launched.env["MLFLOW_TRACKING_URI"] == local  # verl's tracker, and the Ray it starts, log there
    assert f"+ray_kwargs.ray_init.runtime_env.env_vars.MLFLOW_TRACKING_URI='{local}'" in launched.cmd
    assert nobody not in " ".join(launched.cmd)
    run = mlflow.MlflowClient(local).get_run(launched.env["MLFLOW_RUN_ID"])  # the run exists in the local store
    assert run.info.run_name == "ppo-tiny"


@pytest.mark.slow
def test_mlflow_uri_reaches_verls_task_runner_actor(monkeypatch, tmp_path, mlflow_uri, tiny_model_dir, gsm8k_data_dir):
    """verl's run_ppo starts Ray with our ray_kwargs; its TaskRunner actor logs into the launcher's MLflow run.

    The test process has neither MLFLOW_TRACKING_URI nor MLFLOW_RUN_ID, so the only way they reach the
    actor is the Ray runtime_env the launcher put into the config (as with a `ray start` cluster).
    """
    import ray
    from mlflow.tracking import MlflowClient
    from verl.trainer.main_ppo import run_ppo

    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)  # a private Ray: never a `ray start` cluster of this machine
    for var in ("RAY_ADDRESS", "MLFLOW_RUN_ID", *LAUNCHER_ENV):
        monkeypatch.setenv(var, "")  # recorded, so the teardown restores what was (or was not) there
        monkeypatch.delenv(var)
    ckpt = tmp_path / "ckpt"
    knobs = env(tiny_model_dir, gsm8k_data_dir, ckpt, N_GPUS="1", MLFLOW_TRACKING_URI=mlflow_uri, RAY_TMPDIR=ray_tmp)
    settings = rl_launch.Settings.from_env("grpo", knobs)
    _, settings.run_id, _ = rl_preflight.ensure_mlflow_run(mlflow_uri, "gsm8k-rl", "probe", ckpt, {})
    _, cfg, _ = rl_launch.build(settings, ["ray_kwargs.ray_init.num_cpus=2"])

    class ProbeTaskRunner:
        """Stands in for verl's TaskRunner: builds verl's tracker exactly where the trainer does."""

        def run(self, config):
            from verl.utils.tracking import Tracking

            tracker = Tracking(config.trainer.project_name, config.trainer.experiment_name, ["mlflow"], config=None)
            tracker.log({"probe/actor_reached_mlflow": 1.0}, step=7)
            tracker.finish()

    try:
        run_ppo(cfg, task_runner_class=ray.remote(num_cpus=1)(ProbeTaskRunner))
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    history = MlflowClient(mlflow_uri).get_metric_history(settings.run_id, "probe/actor_reached_mlflow")
    assert [(m.step, m.value) for m in history] == [(7, 1.0)]
