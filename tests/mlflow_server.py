"""A real MLflow tracking server on 127.0.0.1 for tests (SQLite backend, proxied artifacts, in a temp dir).

    from tests.mlflow_server import mlflow_server

    with mlflow_server(tmp_path) as uri:          # e.g. http://127.0.0.1:40123, answers /health
        os.environ["MLFLOW_TRACKING_URI"] = uri
        ...

    proc = start_server(tmp_path, port)           # a server to stop and start again mid-test (an outage)
    stop(proc); ...; proc = start_server(tmp_path, port)

The server runs as the compose service does (`mlflow server --backend-store-uri sqlite:///...
--artifacts-destination ...`, artifacts served over HTTP), minus the GenAI job runner, which tests do not
need and which would start several worker processes, and with MLflow's default --allowed-hosts (loopback only;
tests/test_web_ui.py runs the service's own command). It runs in its own process group, killed on exit.
Most tests want tests/conftest.py's session fixture `mlflow_uri` (one server shared by the whole session) instead
of a server of their own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_status(url: str, auth: tuple[str, str] | None = None, timeout: float = 30) -> int:
    """The HTTP status `url` answers (with HTTP basic `auth`), or 0 when nothing answers."""
    import base64
    import urllib.error

    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def answers(url: str) -> bool:
    """True when a GET of `url` returns 200 (False while nothing listens yet, or on any error status)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _healthy(uri: str) -> bool:
    return answers(f"{uri}/health")


def wait_until_answers(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 180.0) -> None:
    """Poll `url` until it answers 200; fail with the tail of the server's log if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not answers(url):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


@contextmanager
def mlflow_server(
    root: str | Path, host: str = "127.0.0.1", timeout: float = 180.0, auth: tuple[str, str] | None = None
) -> Iterator[str]:
    """Start `mlflow server` with its stores under `root`; yield its URI once /health answers; stop it.

    `auth` = (user, password): with MLflow's basic-auth app, that user its admin (users in root/basic_auth.db)."""
    port = free_port(host)
    proc = start_server(root, port, host, timeout, auth)
    try:
        yield f"http://{host}:{port}"
    finally:
        stop(proc)


def start_server(
    root: str | Path,
    port: int,
    host: str = "127.0.0.1",
    timeout: float = 180.0,
    auth: tuple[str, str] | None = None,
) -> subprocess.Popen:
    """`mlflow server` on host:port with its stores under `root`, once /health answers. Stop it with `stop`;
    start it again on the same root and port to bring the same server back (a test of an outage)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "server.log"
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if auth is not None:
        ini = root / "basic_auth.ini"
        ini.write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'basic_auth.db'}\n"
            f"admin_username = {auth[0]}\n"
        )
        cmd += ["--app-name", "basic-auth"]
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(ini),
            MLFLOW_AUTH_ADMIN_USERNAME=auth[0],
            MLFLOW_AUTH_ADMIN_PASSWORD=auth[1],
            MLFLOW_FLASK_SERVER_SECRET_KEY="test-secret-key",
        )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until_answers(f"http://{host}:{port}/health", proc, log_path, timeout)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM a server started with start_new_session=True (its whole process group: uvicorn workers, kernels'
    launchers), then SIGKILL whatever is left of the group."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=5)


_stop = stop  # the earlier name (tests/test_compose.py)
