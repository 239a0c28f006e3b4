"""Is the MLflow server there, and does it let us in? Ask before a long job relies on it.

`check_mlflow` fails in seconds where mlflow would retry for minutes: the server does not answer /health, it
refuses our credentials (401/403), or its --allowed-hosts lacks our address. ALLOW_NO_TRACKING=1 (read once, here)
turns only the first into a warning and a local store, OFFLINE_STORE. `ui_url` links the UI at MLFLOW_UI_URL, the
address a browser uses; `redact_uri` hides credentials that slip into a URI. docs/operations.md: "When MLflow is down".

    >>> ui_url("3", "abc", base="http://localhost:5000")
    'http://localhost:5000/#/experiments/3/runs/abc'
    >>> redact_uri("http://alice:s3cret@mlflow:5000/")
    'http://***@mlflow:5000/'
"""

from __future__ import annotations

import base64
import logging
import os
import urllib.error
import urllib.parse
import urllib.request

from scripts.lib.paths import MODELS_DIR

logger = logging.getLogger(__name__)

# The opt-out, read once: 1 = run on (tracking into OFFLINE_STORE) when the server is down at start.
ALLOW_NO_TRACKING = os.environ.get("ALLOW_NO_TRACKING", "").strip() == "1"
OFFLINE_STORE = MODELS_DIR / "mlflow-offline"
# An API call every authenticated user may make (basic-auth's default permission is READ); /health is open to all.
_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


def redact_uri(uri: str) -> str:
    """`uri` with any user:password@ replaced by ***@ (for messages and logs)."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _request(url: str, timeout: float, auth: bool) -> None:
    request = urllib.request.Request(url)
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if auth and user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def check_mlflow(uri: str | None = None, timeout: float = 10.0, allow_offline: bool | None = None) -> str:
    """The tracking URI to log to: `uri` (default MLFLOW_TRACKING_URI) once its server answers and accepts us.

    Raises ConnectionError (what failed, what to do) if the server is unreachable, unless ALLOW_NO_TRACKING=1
    (or `allow_offline`): then a warning, MLFLOW_TRACKING_URI points this process at the local OFFLINE_STORE,
    and that URI is returned. Raises ConnectionError whenever the server refuses our credentials or address.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI", "") if uri is None else uri
    allow_offline = ALLOW_NO_TRACKING if allow_offline is None else allow_offline
    if not uri.startswith(("http://", "https://")):
        return uri
    base, shown = uri.rstrip("/"), redact_uri(uri)
    try:
        _request(f"{base}/health", timeout, auth=False)
    except OSError as exc:  # URLError, HTTPError, timeouts and refused connections are all OSErrors
        if not allow_offline:
            raise ConnectionError(
                f"MLflow at {shown} (MLFLOW_TRACKING_URI) is unreachable: {exc}. Start it (`docker compose up -d "
                "mlflow`; `docker compose logs mlflow` says why it stopped) or point MLFLOW_TRACKING_URI at a running "
                "server. To run anyway and track into a local store instead, set ALLOW_NO_TRACKING=1"
            ) from None
        return _go_offline(shown, exc)
    try:
        _request(base + _PROBE, timeout, auth=True)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        if exc.code == 403 and "Host header" in body:
            fix = (
                f"its --allowed-hosts does not list {urllib.parse.urlsplit(uri).netloc}: add it to "
                "MLFLOW_ALLOWED_HOSTS in .env and recreate the service (`docker compose up -d mlflow`)"
            )
        elif exc.code in (401, 403):
            given = "are not set" if not os.environ.get("MLFLOW_TRACKING_PASSWORD") else "were refused"
            fix = (
                f"authentication is on and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD {given}: set both in "
                ".env (docker-compose.yml passes them to jupyter and verl) and recreate the containers"
            )
        else:
            fix = "see `docker compose logs mlflow`"
        raise ConnectionError(f"MLflow at {shown} answered HTTP {exc.code} ({body.strip()}): {fix}") from None
    except OSError as exc:
        raise ConnectionError(f"MLflow at {shown} answers /health but not its API: {exc}") from None
    return uri


def _go_offline(shown: str, exc: OSError) -> str:
    OFFLINE_STORE.mkdir(parents=True, exist_ok=True)
    local = f"sqlite:///{OFFLINE_STORE / 'mlflow.db'}"  # MLflow 3 refuses a plain-folder store
    # Artifacts of experiments created there go next to it, not to ./mlruns of whatever the cwd is (the variable
    # `mlflow server --default-artifact-root` sets; MLflow's client reads it for a SQL store too).
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = str(OFFLINE_STORE / "artifacts")
    logger.warning(
        "MLflow at %s is unreachable (%s) and ALLOW_NO_TRACKING=1: this job is NOT tracked on the server; it logs "
        "to the local store %s instead (view it: mlflow ui --backend-store-uri %s)",
        shown,
        exc,
        OFFLINE_STORE,
        local,
    )
    os.environ["MLFLOW_TRACKING_URI"] = local  # this process (mlflow reads it lazily) and every child it starts
    return local


def ui_url(experiment_id: str, run_id: str | None = None, base: str | None = None) -> str:
    """The MLflow UI page of an experiment (or one of its runs) at the address a person's browser uses."""
    base = base or os.environ.get("MLFLOW_UI_URL") or os.environ.get("MLFLOW_TRACKING_URI") or "http://localhost:5000"
    url = f"{redact_uri(base).rstrip('/')}/#/experiments/{experiment_id}"
    return f"{url}/runs/{run_id}" if run_id else url
