"""Training that outlives MLflow, and MLflow params without secrets: one home for both, used by SFT and RL.

What the frameworks do today when the server goes away mid-run (read from their source):
- transformers' MLflowCallback (TRL's SFTTrainer, report_to="mlflow") logs metrics with
  `mlflow.log_metrics(synchronous=False)`: MLflow's async queue retries each batch for ~4 minutes
  (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7, backoff 2) and then logs an error and DROPS it.
- verl 0.9.1's `_MlflowLoggingAdapter` calls `mlflow.log_metrics` synchronously, 3 attempts, each with those
  retries: the training loop stalls for minutes every step, and then the step's metrics are dropped.

Here metrics go into a `MetricBuffer`: the training thread only appends (never waits on the network), and a
background thread sends batches with one short request each (no client-side retry storm). While the server is
down the metrics wait in memory (~100 bytes each: days of training fit), a warning says so once, and when it is
back they are sent, with their original steps and timestamps, and a line says how many caught up.

    buffer = MetricBuffer(run_id)           # the run must exist (start it while the server is up)
    buffer.log({"loss": 0.3}, step=10)      # returns at once
    buffer.close(timeout=60)                # send what is left (waits up to 60 s for the server)

Hooks: `ResilientMLflowCallback` replaces transformers' MLflowCallback (`use_resilient_mlflow(trainer)`);
importing this module inside verl (VERL_USE_EXTERNAL_MODULES=scripts.lib.resilient_mlflow, which verl imports in
every process, the TaskRunner included) swaps verl's MLflow adapter for `VerlMlflowAdapter` and redacts the
params verl logs from its config. `safe_params` is the redaction: secret-named keys (token, password, secret,
api key), values holding the value of a secret environment variable, and credentials in URIs become "***".
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from scripts.lib.mlflow_health import redact_uri

logger = logging.getLogger(__name__)

REDACTED = "***"
# Environment variables whose values must never appear in a param (or anywhere MLflow shows).
SECRET_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "JUPYTER_TOKEN",
    "POSTGRES_PASSWORD",
    "RAY_AUTH_TOKEN",
    "WANDB_API_KEY",
)
# The last part of a param name (verl's are paths: a/b/HF_TOKEN) that names a secret; `max_new_tokens` does not.
_SECRET_KEY = re.compile(r"(^|[_-])(token|password|passwd|secret|secret_key|api_?key|credentials?)$", re.IGNORECASE)
_URI_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@]+@", re.IGNORECASE)
_BATCH = 1000  # MLflow's log-batch limit on metrics per request


def safe_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` with secrets replaced by "***": by key name, by known secret values, and credentials in URIs.

    >>> safe_params({"hub_token": "hf_x", "lr": 1e-5, "uri": "http://u:p@mlflow:5000"})
    {'hub_token': '***', 'lr': 1e-05, 'uri': 'http://***@mlflow:5000'}
    """
    secrets = [v for name in SECRET_ENV if len(v := os.environ.get(name, "")) >= 4]
    out: dict[str, Any] = {}
    for key, value in params.items():
        text = str(value)
        if value not in (None, "", False) and _SECRET_KEY.search(re.split(r"[/.]", str(key))[-1]):
            out[key] = REDACTED
        elif any(secret in text for secret in secrets):
            out[key] = REDACTED
        elif isinstance(value, str) and _URI_CREDENTIALS.search(value):
            out[key] = _URI_CREDENTIALS.sub(lambda m: redact_uri(m.group(0) + "x").removesuffix("x"), value)
        else:
            out[key] = value
    return out


class MetricBuffer:
    """Metrics of one MLflow run, sent by a background thread; kept while the server is unreachable."""

    def __init__(self, run_id: str, tracking_uri: str | None = None, retry_s: float = 5.0, timeout_s: float = 10.0):
        from mlflow.tracking._tracking_service.utils import _get_store

        self.run_id = run_id
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self._store = _get_store(tracking_uri)
        self._pending: deque = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._sending = False
        self.down_since: float | None = None
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name=f"mlflow-buffer-{run_id[:8]}", daemon=True)
        self._thread.start()

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue `metrics` at `step` (timestamped now); never blocks on the network."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._cond:
            if self._closing:
                raise RuntimeError("MetricBuffer.log after close()")
            self._pending.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
            self._cond.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is sent (True) or `timeout` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._sending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float = 60.0) -> int:
        """Send what is queued (waiting up to `timeout` s for the server), stop the thread; the number unsent."""
        sent_all = self.flush(timeout)
        with self._cond:
            self._closing = True
            unsent = len(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        self._thread.join(timeout=self.timeout_s + 5)
        if not sent_all and unsent:
            logger.warning(
                "MLflow: %d metrics of run %s could not be sent: the server was still unreachable at the end of the "
                "run (waited %.0f s)",
                unsent,
                self.run_id,
                timeout,
            )
        return unsent

    def _send(self, batch: list) -> None:
        from mlflow.store.tracking.rest_store import RestStore

        if not isinstance(self._store, RestStore):  # a local store: no network to fail
            self._store.log_batch(self.run_id, metrics=batch, params=[], tags=[])
            return
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        endpoint = "/api/2.0/mlflow/runs/log-batch"
        body = {"run_id": self.run_id, "metrics": [m.to_dictionary() for m in batch], "params": [], "tags": []}
        response = http_request(
            self._store.get_host_creds(), endpoint, "POST", json=body, max_retries=0, timeout=self.timeout_s
        )
        verify_rest_response(response, endpoint)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
                self._sending = True
            try:
                self._send(batch)
            except Exception as exc:  # connection refused, timeout, 5xx: keep the batch, try again later
                with self._cond:
                    self._pending.extendleft(reversed(batch))
                    self._sending = False
                    if self.down_since is None:
                        self.down_since = time.monotonic()
                        logger.warning(
                            "MLflow unreachable (%s): training goes on; metrics wait in memory and are sent when it "
                            "is back (%d waiting)",
                            _short(exc),
                            len(self._pending),
                        )
                    self._cond.notify_all()
                    self._cond.wait(self.retry_s)  # close() wakes it early
                continue
            with self._cond:
                self._sending = False
                self.sent += len(batch)
                if self.down_since is not None:
                    logger.warning(
                        "MLflow is back after %.0f s: sending the metrics that waited (%d still queued)",
                        time.monotonic() - self.down_since,
                        len(self._pending),
                    )
                    self.down_since = None
                self._cond.notify_all()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


# --- transformers / TRL ---------------------------------------------------------------------------------


def _callback_base():
    from transformers.integrations import MLflowCallback

    return MLflowCallback


class _RedactingMlflow:
    """The `mlflow` module, except that log_params drops secrets (transformers logs all TrainingArguments)."""

    def __init__(self, mlflow_module):
        self._mlflow = mlflow_module

    def __getattr__(self, name: str):
        return getattr(self._mlflow, name)

    def log_params(self, params, *args, **kwargs):
        return self._mlflow.log_params(safe_params(params), *args, **kwargs)


def resilient_callback(close_timeout: float = 60.0):
    """A transformers MLflowCallback whose metrics go through a MetricBuffer and whose params hold no secrets."""
    base = _callback_base()

    class ResilientMLflowCallback(base):
        def __init__(self):
            super().__init__()
            self._ml_flow = _RedactingMlflow(self._ml_flow)
            self.buffer: MetricBuffer | None = None

        def setup(self, args, state, model):
            super().setup(args, state, model)
            run = self._ml_flow.active_run()
            if state.is_world_process_zero and run is not None:
                self.buffer = MetricBuffer(run.info.run_id, self._ml_flow.get_tracking_uri())

        def on_log(self, args, state, control, logs, model=None, **kwargs):
            if not self._initialized:
                self.setup(args, state, model)
            if self.buffer is None:
                return
            # transformers' own sanitizing of metric names (MLflowCallback.on_log)
            metrics = {
                re.sub(r"[^0-9A-Za-z_\-\.\ :/]", "_", k): float(v.item() if hasattr(v, "item") else v)
                for k, v in logs.items()
                if _number(v)
            }
            self.buffer.log(metrics, state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.buffer is not None:
                self.buffer.close(close_timeout)
                self.buffer = None
            super().on_train_end(args, state, control, **kwargs)

    return ResilientMLflowCallback()


def _number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return hasattr(value, "numel") and value.numel() == 1


def use_resilient_mlflow(trainer) -> None:
    """Swap `trainer`'s MLflowCallback (report_to="mlflow") for the resilient one; no-op without it."""
    base = _callback_base()
    if any(isinstance(cb, base) for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(base)
        trainer.add_callback(resilient_callback())


# --- verl -------------------------------------------------------------------------------------------------


class VerlMlflowAdapter:
    """Drop-in for verl.utils.tracking._MlflowLoggingAdapter: same key sanitizing, buffered sending."""

    def __init__(self, close_timeout: float = 60.0):
        import mlflow
        import verl.utils.tracking as tracking

        self._keys = tracking._MlflowLoggingAdapter_original()  # for its _sanitize_key (`@` -> `_at_`, ...)
        self.close_timeout = close_timeout
        run = mlflow.active_run()  # verl's Tracking started it just before creating the adapter
        self.buffer = MetricBuffer(run.info.run_id, mlflow.get_tracking_uri()) if run is not None else None

    def log(self, data: Mapping[str, Any], step: int) -> None:
        if self.buffer is not None:
            metrics = {self._keys._sanitize_key(k): v for k, v in data.items() if _number(v)}
            self.buffer.log(metrics, step)

    def finish(self) -> None:
        import mlflow

        if self.buffer is not None:
            self.buffer.close(self.close_timeout)
            self.buffer = None
        if mlflow.active_run() is not None:
            try:
                mlflow.end_run()
            except Exception as exc:  # the server is gone at the very end: the run stays RUNNING, nothing else lost
                logger.warning("MLflow: could not mark the run finished: %s", _short(exc))


def install_verl_hooks() -> None:
    """Point verl's Tracking at VerlMlflowAdapter and redact the params it logs (idempotent)."""
    import verl.utils.tracking as tracking

    if getattr(tracking, "_gsm8k_hooked", False):
        return
    original = tracking._compute_mlflow_params_from_objects
    tracking._compute_mlflow_params_from_objects = lambda params: safe_params(original(params))
    tracking._MlflowLoggingAdapter_original = tracking._MlflowLoggingAdapter
    tracking._MlflowLoggingAdapter = VerlMlflowAdapter
    tracking._gsm8k_hooked = True


if "verl" in sys.modules:  # imported by verl itself (VERL_USE_EXTERNAL_MODULES): hook in; elsewhere nothing to do
    install_verl_hooks()
