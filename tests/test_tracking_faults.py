"""MLflow goes away in the middle of training: training goes on, says so, and the metrics reach the run later.

    .venv/bin/python -m pytest tests/test_tracking_faults.py -q

A real `mlflow server` on 127.0.0.1 (tests/mlflow_server.py) is stopped and started again, on the same port and
store, while a run logs to it:
- SFT: a few real TRL steps on the tiny model through notebooks/sft.py (build_trainer swaps transformers'
  MLflowCallback for scripts/lib/resilient_mlflow.py's);
- RL: verl 0.9.1's own `Tracking` class, driven directly, with the hook verl loads itself through
  VERL_USE_EXTERNAL_MODULES (the whole CPU trainer takes minutes to start).
Both also show that the params logged (TRL's arguments, verl's whole composed config) hold no secret, and that
ALLOW_NO_TRACKING=1 turns "MLflow is down at start" from a stop into a warning and a local store.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.lib import mlflow_health, resilient_mlflow
from tests.mlflow_server import free_port, start_server, stop

REPO = Path(__file__).resolve().parent.parent
SECRETS = {
    "HF_TOKEN": "hf_SECRETtokenVALUE0123456789",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-SECRET-password-42",
    "JUPYTER_TOKEN": "jupyter-SECRET-token-0123",
}


class Outage:
    """A real MLflow server on a fixed port that a test can stop and start again (same store)."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = start_server(root, self.port)

    def down(self) -> None:
        stop(self.proc)

    def up(self) -> None:
        self.proc = start_server(self.root, self.port)


@pytest.fixture
def outage(tmp_path, monkeypatch):
    server = Outage(tmp_path / "mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    yield server
    stop(server.proc)


@pytest.fixture
def secrets_in_env(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def assert_no_secret(params: dict[str, str]) -> None:
    for key, value in params.items():
        for name, secret in SECRETS.items():
            assert secret not in f"{key}={value}", f"{name} leaked into param {key}"
        assert "user:pw@" not in value, key


def metric_steps(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


# --- SFT ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_trains_through_an_mlflow_outage_and_logs_every_step_afterwards(
    outage, secrets_in_env, tiny_model_dir, gsm8k_data_dir, tmp_path, caplog
):
    from transformers import TrainerCallback

    from notebooks import sft

    cfg = sft.SFTRunConfig.from_notebook(
        model_path=str(tiny_model_dir),
        data_dir=str(gsm8k_data_dir),
        output_dir=str(tmp_path / "out"),
        run_name="outage",
        mlflow_experiment="test-tracking-faults-sft",
        per_device_train_batch_size=2,
        max_steps=8,
        logging_steps=1,
        eval_samples=1,
    )
    files = sft.check_data(cfg)
    train_dataset, _ = sft.load_sft_datasets(cfg, files)
    model, tokenizer = sft.load_model(cfg)
    # transformers logs the model's config whole, next to TRL's arguments: a secret under a key no filter would
    # guess, and a token where TRL's own `*_token` masking applies.
    model.config.remote_source = f"https://user:{SECRETS['HF_TOKEN']}@hub.example/model"
    step_seconds: dict[int, float] = {}

    class Fault(TrainerCallback):
        """Server down after step 2, back after step 6; times the steps taken while it is down."""

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            step_seconds[state.global_step] = time.monotonic() - self.t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step == 2 and "loss" in (logs or {}):
                outage.down()
            elif state.global_step == 6 and "loss" in (logs or {}):
                outage.up()

    run = sft.start_mlflow_run(cfg)
    trainer = sft.build_trainer(cfg, model, tokenizer, train_dataset)
    trainer.add_callback(Fault())
    trainer.args.hub_token = SECRETS["HF_TOKEN"]
    with caplog.at_level(logging.WARNING, logger=resilient_mlflow.__name__):
        trainer.train()  # on_train_end sends what waited
    sft.end_mlflow_run()

    assert trainer.state.global_step == 8  # training went on
    assert max(step_seconds[s] for s in (3, 4, 5)) < 30  # and never waited on MLflow's minutes of retries
    messages = caplog.text
    assert "MLflow unreachable" in messages and "training goes on" in messages and "MLflow is back" in messages
    assert metric_steps(outage.uri, run.info.run_id, "loss") == list(range(1, 9))  # nothing lost

    from mlflow import MlflowClient

    params = MlflowClient(outage.uri).get_run(run.info.run_id).data.params
    assert params["learning_rate"] and params["sft.learning_rate"]  # TRL's args and ours were logged...
    assert params["remote_source"] == "***" and params["hub_token"] in ("<HUB_TOKEN>", "***")
    assert_no_secret(params)  # ...without a secret


# --- RL (verl's Tracking) -------------------------------------------------------------------------------


def composed_verl_config(tmp_path: Path) -> dict:
    """verl_configs/ppo_gsm8k.yaml as the launcher composes it, with secrets where a careless override puts them."""
    from omegaconf import OmegaConf

    from scripts.rl.config import compose_config

    env = "+ray_kwargs.ray_init.runtime_env.env_vars"
    overrides = [
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        "trainer.experiment_name=outage",
        f"{env}.MLFLOW_TRACKING_URI=http://user:pw@mlflow:5000",
        f"{env}.HF_TOKEN={SECRETS['HF_TOKEN']}",
        f"+trainer.note=token {SECRETS['MLFLOW_TRACKING_PASSWORD']}",
    ]
    cfg = compose_config("ppo_gsm8k", overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def verl_hooked():
    import verl.utils.tracking as tracking

    resilient_mlflow.install_verl_hooks()
    assert tracking._MlflowLoggingAdapter is resilient_mlflow.VerlMlflowAdapter
    return tracking


@pytest.mark.slow
def test_verl_tracking_trains_through_an_outage_and_logs_every_step_afterwards(
    outage, secrets_in_env, verl_hooked, tmp_path, caplog
):
    import mlflow

    config = composed_verl_config(tmp_path)
    with caplog.at_level(logging.WARNING, logger=resilient_mlflow.__name__):
        tracker = verl_hooked.Tracking("test-tracking-faults-rl", "outage", ["console", "mlflow"], config=config)
        run_id = mlflow.active_run().info.run_id
        for step in range(1, 4):
            tracker.log({"critic/score@mean": 0.1 * step, "actor/pg_loss": -step}, step=step)
        tracker.logger["mlflow"].buffer.flush(30)
        outage.down()
        t0 = time.monotonic()
        for step in range(4, 8):
            tracker.log({"critic/score@mean": 0.1 * step, "actor/pg_loss": -step}, step=step)
        assert time.monotonic() - t0 < 5  # verl alone: 3 attempts x MLflow's retries, minutes per step
        time.sleep(2)  # let the sender meet the closed port
        outage.up()
        tracker.log({"critic/score@mean": 0.8, "actor/pg_loss": -8}, step=8)
        tracker.finish()

    assert "MLflow unreachable" in caplog.text and "MLflow is back" in caplog.text
    assert metric_steps(outage.uri, run_id, "critic/score_at_mean") == list(range(1, 9))  # verl's key sanitizing
    assert metric_steps(outage.uri, run_id, "actor/pg_loss") == list(range(1, 9))

    from mlflow import MlflowClient

    run = MlflowClient(outage.uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["trainer/experiment_name"] == "outage" and "actor_rollout_ref/actor/optim/lr" in params
    assert params["ray_kwargs/ray_init/runtime_env/env_vars/HF_TOKEN"] == "***"
    assert params["ray_kwargs/ray_init/runtime_env/env_vars/MLFLOW_TRACKING_URI"] == "http://***@mlflow:5000"
    assert_no_secret(params)


@pytest.mark.slow
def test_verl_loads_the_hook_itself_through_verl_use_external_modules():
    """What docker-compose.yml sets for the verl container: every process that imports verl is hooked."""
    code = (
        "import verl.utils.tracking as t; "
        "print(t._MlflowLoggingAdapter.__module__, t._compute_mlflow_params_from_objects({'HF_TOKEN': 'x'}))"
    )
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "scripts.lib.resilient_mlflow"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["scripts.lib.resilient_mlflow", "{'HF_TOKEN':", "'***'}"]


# --- MLflow down at start -------------------------------------------------------------------------------


def test_a_job_stops_at_once_when_mlflow_is_down_at_start(monkeypatch):
    nobody = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(mlflow_health, "ALLOW_NO_TRACKING", False)
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="unreachable.*ALLOW_NO_TRACKING=1"):
        mlflow_health.check_mlflow(nobody, timeout=2)
    assert time.monotonic() - t0 < 10


def test_the_notebook_and_evaluation_stop_before_any_work_when_mlflow_is_down(monkeypatch, tmp_path):
    from notebooks import sft

    nobody = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(mlflow_health, "ALLOW_NO_TRACKING", False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", nobody)
    with pytest.raises(ConnectionError, match="docker compose up -d mlflow"):
        sft.start_mlflow_run(sft.SFTRunConfig.from_notebook(run_name="down", output_dir=str(tmp_path / "out")))
    env = {**os.environ, "MODELS_DIR": str(tmp_path / "models"), "DATA_DIR": str(tmp_path / "x")}
    env["ALLOW_NO_TRACKING"] = ""  # never inherited from the developer's shell
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.eval.run_all"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and f"MLflow at {nobody} (MLFLOW_TRACKING_URI) is unreachable" in proc.stderr
    assert time.monotonic() - t0 < 60 and not (tmp_path / "models").exists()  # before data prep or any model


def test_allow_no_tracking_runs_the_job_into_a_local_store(monkeypatch, tmp_path, caplog):
    import mlflow

    nobody = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(mlflow_health, "ALLOW_NO_TRACKING", True)
    monkeypatch.setattr(mlflow_health, "OFFLINE_STORE", tmp_path / "mlflow-offline")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", nobody)
    monkeypatch.delenv("_MLFLOW_SERVER_ARTIFACT_ROOT", raising=False)  # check_mlflow sets it; restored after
    with caplog.at_level(logging.WARNING):
        uri = mlflow_health.check_mlflow(timeout=2)
    assert uri == f"sqlite:///{tmp_path / 'mlflow-offline' / 'mlflow.db'}" == os.environ["MLFLOW_TRACKING_URI"]
    assert "NOT tracked on the server" in caplog.text and "ALLOW_NO_TRACKING=1" in caplog.text
    client = mlflow.MlflowClient(uri)  # what the job then logs is kept
    run = client.create_run(client.create_experiment("offline"))
    client.log_metric(run.info.run_id, "loss", 1.0, step=1)
    (tmp_path / "note.txt").write_text("kept")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    assert metric_steps(uri, run.info.run_id, "loss") == [1]
    assert [p.read_text() for p in (tmp_path / "mlflow-offline" / "artifacts").rglob("note.txt")] == ["kept"]


def test_the_opt_out_is_read_once_from_the_environment():
    code = "from scripts.lib import mlflow_health as m; print(m.ALLOW_NO_TRACKING)"
    for value, expected in (("1", "True"), ("0", "False"), ("", "False")):
        env = {**os.environ, "ALLOW_NO_TRACKING": value}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
        assert out.stdout.strip() == expected, out.stderr


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"hub_token": "hf_abc"}, {"hub_token": "***"}),  # secret-named key
        ({"hub_token": None}, {"hub_token": None}),  # unset: nothing to hide
        ({"env/HF_TOKEN": "x" * 8}, {"env/HF_TOKEN": "***"}),
        ({"rollout/max_num_batched_tokens": 8192}, {"rollout/max_num_batched_tokens": 8192}),  # not a secret
        ({"model": SECRETS["HF_TOKEN"]}, {"model": "***"}),  # a secret's value under any key
        ({"uri": "https://u:p@host/x"}, {"uri": "https://***@host/x"}),  # credentials in a URI
        ({"lr": 1e-5, "uri": "http://mlflow:5000"}, {"lr": 1e-5, "uri": "http://mlflow:5000"}),  # untouched
    ],
)
def test_safe_params(params, expected, secrets_in_env):
    assert resilient_mlflow.safe_params(params) == expected


def test_docstring_examples():
    import doctest

    for module in (mlflow_health, resilient_mlflow):
        assert doctest.testmod(module).failed == 0, module.__name__
