"""Is the MLflow server there? Ask its /health endpoint before a long job relies on it. And links to its UI.

`mlflow` itself would retry for minutes and then log nowhere (verl only warns); this fails in seconds with what
to do. Non-HTTP tracking URIs (a local folder, sqlite:///...) need no server and always pass.

Inside the stack the tracking URI is http://mlflow:5000, which no browser reaches: links printed for people use
MLFLOW_UI_URL (docker-compose.yml sets it from .env: http://localhost:MLFLOW_PORT, through the SSH tunnel).

    >>> ui_url("3", "abc", base="http://localhost:5000")
    'http://localhost:5000/#/experiments/3/runs/abc'
"""

from __future__ import annotations

import os
import urllib.request


def check_mlflow(uri: str | None = None, timeout: float = 10.0) -> None:
    """Raise ConnectionError unless `uri` (default: MLFLOW_TRACKING_URI) answers /health."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "") if uri is None else uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except OSError as exc:  # URLError, HTTPError, timeouts and refused connections are all OSErrors
        raise ConnectionError(
            f"MLflow at {uri} (MLFLOW_TRACKING_URI) is unreachable: {exc}. Start it (`docker compose up -d mlflow`) "
            "or point MLFLOW_TRACKING_URI at a running server"
        ) from None


def ui_url(experiment_id: str, run_id: str | None = None, base: str | None = None) -> str:
    """The MLflow UI page of an experiment (or one of its runs) at the address a person's browser uses."""
    base = base or os.environ.get("MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI") or "http://localhost:5000"
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}"
    return f"{url}/runs/{run_id}" if run_id else url
