"""A real MLflow tracking server on 127.0.0.1 for tests (SQLite backend, proxied artifacts, in a temp dir).

    from tests.mlflow_server import mlflow_server

    with mlflow_server(tmp_path) as uri:          # e.g. http://127.0.0.1:40123, answers /health
        os.environ["MLFLOW_TRACKING_URI"] = uri
        ...

The server runs exactly as the compose service does (`mlflow server --backend-store-uri sqlite:///...
--artifacts-destination ...`, artifacts served over HTTP), minus the GenAI job runner, which tests do not
need and which would start several worker processes. It runs in its own process group, killed on exit.
As a pytest fixture:

    @pytest.fixture(scope="module")
    def mlflow_uri(tmp_path_factory):
        with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
            yield uri
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


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def mlflow_server(root: str | Path, host: str = "127.0.0.1", timeout: float = 180.0) -> Iterator[str]:
    """Start `mlflow server` with its stores under `root`; yield its URI once /health answers; stop it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    uri = f"http://{host}:{port}"
    log_path = root / "server.log"
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host", host,
        "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(uri):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not healthy after {timeout:.0f}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (uvicorn runs as a child), then SIGKILL whatever is left of it."""
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
