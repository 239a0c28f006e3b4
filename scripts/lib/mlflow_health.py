"""Is the MLflow server there? Ask its /health endpoint before a long job relies on it.

`mlflow` itself would retry for minutes and then log nowhere (verl only warns); this fails in seconds with what
to do. Non-HTTP tracking URIs (a local folder, sqlite:///...) need no server and always pass.
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
