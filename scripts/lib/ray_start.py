"""verl's `ray.init`, made to start on a busy machine and to hand the launching shell's settings to every worker.

**Forwarding.** Workers of a `ray start` cluster (the compose stack's head, a second node) run with the raylet's
environment, the container's as it started, not the environment of the shell that ran `run_ppo.sh`: HF_HUB_OFFLINE,
HF_TOKEN, VERL_USE_EXTERNAL_MODULES (which brings the MLflow resilience into verl's TaskRunner), NCCL_* set for
one run were silently ignored there. `ray.init` here adds the FORWARDED variables the driver has to the job's
`runtime_env.env_vars`, which Ray applies to every task and actor of the job on every node. Values are read from
the driver's environment when Ray starts: they never enter the Hydra overrides, launch_config.yaml or the printed
command (HF_TOKEN is a secret). Ray keeps the job's runtime_env in its GCS, where its dashboard shows it: the
dashboard is behind RAY_AUTH_TOKEN. A value set in `ray_kwargs.ray_init.runtime_env.env_vars` wins.

**Start-up retries.** A local Ray start that times out is retried, only that.

Ray waits a fixed 30 s for its raylet to register with the GCS (ray/_private/node.py, not configurable: the
`RAY_raylet_start_wait_time_s` its message suggests is not read), and on a loaded machine (2 shared cores, another
job compiling) the wait runs out: "The current node timed out during startup". Nothing has run yet, so starting
again is safe. verl's driver calls `ray.init` itself (verl/trainer/main_ppo.py run_ppo); importing this module
there (the RL launcher adds it to VERL_USE_EXTERNAL_MODULES, which verl imports first) wraps `ray.init` once.
Any other error, or a fourth timeout, is raised as it is.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

# What verl's workers read from the environment that a user sets per run in the launching shell. Not paths or
# devices (HF_HOME, CUDA_VISIBLE_DEVICES: each node's own) and not what the launch passes in the config.
FORWARDED = (
    "HF_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "PYTHONWARNINGS",  # the launcher's filter for verl's known noise (scripts/rl/launch.py VERL_NOISE)
    "VERL_USE_EXTERNAL_MODULES",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
)
FORWARDED_PREFIXES = ("NCCL_",)  # the interconnect's settings (NCCL_SOCKET_IFNAME, NCCL_DEBUG, ...)

ATTEMPTS = 4
STARTUP_TIMEOUT = "timed out during startup"  # ray/_private/node.py's message for the 30 s wait


def retry_startup_timeouts(init: Callable[..., Any], shutdown: Callable[[], None], pause_s: float = 5.0):
    """`init` (ray.init) retried up to ATTEMPTS times on Ray's start-up timeout, shutting down between tries."""

    @functools.wraps(init)
    def init_with_retries(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return init(*args, **kwargs)
            except Exception as exc:
                if STARTUP_TIMEOUT not in str(exc) or attempt == ATTEMPTS:
                    raise
                logger.warning("Ray start %d of %d timed out (a busy machine?); starting again", attempt, ATTEMPTS)
                print(f"ray_start: Ray start {attempt}/{ATTEMPTS} timed out (a busy machine?); retrying", flush=True)
                shutdown()  # the processes the failed start left
                time.sleep(pause_s)
        raise AssertionError("not reached")

    init_with_retries.retries_startup_timeouts = True
    return init_with_retries


def forwarded(environ: Mapping[str, str]) -> dict[str, str]:
    """The FORWARDED variables (and FORWARDED_PREFIXES) set in `environ`."""
    return {k: v for k, v in environ.items() if k in FORWARDED or k.startswith(FORWARDED_PREFIXES)}


def forwarding_environment(init: Callable[..., Any], environ: Mapping[str, str]):
    """`init` (ray.init) with `forwarded(environ)` under the job's runtime_env env_vars; set values win."""

    @functools.wraps(init)
    def init_forwarding(*args: Any, **kwargs: Any) -> Any:
        runtime_env = dict(kwargs.get("runtime_env") or {})
        runtime_env["env_vars"] = {**forwarded(environ), **(runtime_env.get("env_vars") or {})}
        return init(*args, **{**kwargs, "runtime_env": runtime_env})

    init_forwarding.forwards_environment = True
    return init_forwarding


def install() -> None:
    """Wrap `ray.init` (idempotent): the start-up retries, then the forwarding, read from os.environ per call."""
    import ray

    if not getattr(ray.init, "retries_startup_timeouts", False):
        ray.init = retry_startup_timeouts(forwarding_environment(ray.init, os.environ), ray.shutdown)


install()
