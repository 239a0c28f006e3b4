"""MLflow authentication: the mlflow service's entrypoint turns MLflow's basic-auth app on and off, and clients get in.

    .venv/bin/python -m pytest tests/test_mlflow_auth.py -q

- services/mlflow/entrypoint.sh (with a stub `mlflow` that records its call): on by default whenever the port is
  published beyond loopback (BIND_ADDRESS), on or off when MLFLOW_AUTH says so; refuses a missing, short or
  publicly known password; the password reaches MLflow through its environment only (never a file, the
  command line or the log);
- the real server started by that entrypoint with the compose arguments and auth on: the healthcheck and /health
  stay open, the API asks for a password, scripts/lib/mlflow_health.check_mlflow tells a missing or wrong password
  from an outage, and a client with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD logs runs and artifacts.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.lib.mlflow_health import check_mlflow
from tests.mlflow_server import free_port, http_status, stop
from tests.test_compose import clean_env, rendered

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "services" / "mlflow" / "entrypoint.sh"
USER, PASSWORD = "alice", "correct-horse-battery-staple"


def run_entrypoint(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    """The entrypoint with a stub `mlflow` that records its arguments and the auth environment it got."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "mlflow-call.json"
    stub = bin_dir / "mlflow"
    stub.write_text(
        f'#!/usr/bin/env bash\n{sys.executable} -c \'import json, os, sys; json.dump({{"args": sys.argv[1:], '
        f'"env": {{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}}}}, open("{record}", "w"))\' "$@"\n'
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    full_env = {
        **clean_env(),
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    proc = subprocess.run(["bash", str(ENTRYPOINT), "--port=5000"], capture_output=True, text=True, env=full_env)
    return proc, json.loads(record.read_text()) if record.exists() else {}


@pytest.mark.parametrize(
    ("setting", "bind", "on"),
    [
        ("auto", "127.0.0.1", False),  # the default: reachable through an SSH tunnel only
        ("auto", "localhost", False),
        ("auto", "0.0.0.0", True),  # published on every interface
        ("auto", "10.0.0.1", True),  # a private network (the multi-node head)
        ("on", "127.0.0.1", True),  # switched on explicitly
        ("off", "0.0.0.0", False),  # switched off explicitly (a network you trust)
    ],
)
def test_authentication_is_on_whenever_mlflow_is_published_beyond_loopback(tmp_path, setting, bind, on):
    proc, call = run_entrypoint(
        tmp_path,
        MLFLOW_AUTH=setting,
        BIND_ADDRESS=bind,
        MLFLOW_TRACKING_USERNAME=USER,
        MLFLOW_TRACKING_PASSWORD=PASSWORD,
    )
    assert proc.returncode == 0, proc.stderr
    assert (call["args"][:3] == ["server", "--app-name", "basic-auth"]) is on
    assert ("authentication on" in proc.stdout) is on
    if on:
        ini = Path(call["env"]["MLFLOW_AUTH_CONFIG_PATH"])
        assert ini.parent == tmp_path / "data" and stat.S_IMODE(ini.stat().st_mode) == 0o600
        assert f"database_uri = sqlite:///{tmp_path / 'data'}/basic_auth.db" in ini.read_text()  # on the volume
        assert call["env"]["MLFLOW_AUTH_ADMIN_USERNAME"] == USER
        assert call["env"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == PASSWORD  # through the environment...
        assert PASSWORD not in ini.read_text() + json.dumps(call["args"]) + proc.stdout + proc.stderr  # ...only
        key = tmp_path / "data" / "flask_secret_key"  # CSRF key: made once, kept, private
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert call["env"]["MLFLOW_FLASK_SERVER_SECRET_KEY"] == key.read_text().strip()
        again, call2 = run_entrypoint(
            tmp_path,
            MLFLOW_AUTH=setting,
            BIND_ADDRESS=bind,
            MLFLOW_TRACKING_USERNAME=USER,
            MLFLOW_TRACKING_PASSWORD=PASSWORD,
        )
        assert call2["env"]["MLFLOW_FLASK_SERVER_SECRET_KEY"] == call["env"]["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    else:
        assert "MLFLOW_AUTH_CONFIG_PATH" not in call["env"]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MLFLOW_TRACKING_PASSWORD": ""}, "MLFLOW_TRACKING_PASSWORD is empty or shorter than 12"),
        ({"MLFLOW_TRACKING_PASSWORD": "short"}, "MLFLOW_TRACKING_PASSWORD is empty or shorter than 12"),
        ({"MLFLOW_TRACKING_USERNAME": ""}, "MLFLOW_TRACKING_USERNAME is empty"),
        ({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "password1234"}, "old public default"),
        ({"MLFLOW_AUTH": "maybe"}, "use on, off or auto"),
    ],
)
def test_authentication_refuses_settings_that_cannot_protect_anything(tmp_path, env, says):
    proc, call = run_entrypoint(
        tmp_path,
        **{"BIND_ADDRESS": "0.0.0.0", "MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD, **env},
    )
    assert proc.returncode != 0 and call == {}  # mlflow never started
    assert says in proc.stderr and ".env" in proc.stderr


# --- the real server, auth on -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """services/mlflow/entrypoint.sh with the compose arguments and environment, published "beyond loopback"."""
    services = rendered(BIND_ADDRESS="0.0.0.0", MLFLOW_TRACKING_USERNAME=USER, MLFLOW_TRACKING_PASSWORD=PASSWORD)
    mlflow = services["services"]["mlflow"]
    root = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port()
    args = [
        a.replace("--host=0.0.0.0", "--host=127.0.0.1")
        .replace("--port=5000", f"--port={port}")
        .replace("=/mlflow/", f"={root}/")
        .replace("--workers=2", "--workers=1")
        for a in mlflow["command"]
    ]
    env = {
        **clean_env(),
        **mlflow["environment"],
        "MLFLOW_DATA_DIR": str(root),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", str(ENTRYPOINT), *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while http_status(f"{url}/health", timeout=10) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url, port, mlflow, log
    finally:
        stop(proc)


@pytest.mark.slow
def test_healthcheck_and_health_stay_open_while_the_api_asks_for_a_password(auth_server):
    url, port, mlflow, log = auth_server
    assert "authentication on" in log.read_text()
    healthcheck = mlflow["healthcheck"]["test"][1].replace("127.0.0.1:5000", f"127.0.0.1:{port}")
    assert subprocess.run(["sh", "-c", healthcheck], env=clean_env(PATH=os.environ["PATH"])).returncode == 0
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(api) == 401
    assert http_status(api, (USER, "wrong-password-123")) == 401
    assert http_status(api, (USER, PASSWORD)) == 200
    assert PASSWORD not in log.read_text()


@pytest.mark.slow
def test_check_mlflow_tells_a_missing_or_wrong_password_from_an_outage(auth_server, monkeypatch):
    url = auth_server[0]
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(ConnectionError, match="authentication is on and .* are not set: set both in .env"):
        check_mlflow(url, allow_offline=True)  # an opt-out of tracking never hides a wrong setting
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-123")
    with pytest.raises(ConnectionError, match="were refused") as err:
        check_mlflow(url)
    assert "wrong-password-123" not in str(err.value)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert check_mlflow(url) == url


@pytest.mark.slow
def test_a_client_with_the_env_credentials_logs_runs_and_artifacts(auth_server, monkeypatch, tmp_path):
    import mlflow

    url = auth_server[0]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = mlflow.MlflowClient(tracking_uri=url)
    run = client.create_run(client.create_experiment("auth-test"))
    client.log_metric(run.info.run_id, "acc", 0.5)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))  # proxied artifacts go through auth too
    assert client.get_run(run.info.run_id).data.metrics == {"acc": 0.5}
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["note.txt"]
