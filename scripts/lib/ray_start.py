"""A local Ray that starts on a busy machine: `ray.init` retried when, and only when, the node timed out starting.

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
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

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


def install() -> None:
    """Wrap `ray.init` (idempotent)."""
    import ray

    if not getattr(ray.init, "retries_startup_timeouts", False):
        ray.init = retry_startup_timeouts(ray.init, ray.shutdown)


install()
