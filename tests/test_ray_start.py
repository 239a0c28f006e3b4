"""scripts/lib/ray_start.py: a Ray start that times out on a busy machine is retried; nothing else is."""

from __future__ import annotations

import pytest

from scripts.lib import ray_start

TIMEOUT = Exception(
    "The current node timed out during startup. This could happen because some of the raylet failed to startup or "
    "the GCS has become overloaded."
)  # ray/_private/node.py, word for word


class FlakyStart:
    """ray.init's stand-in: fails with `errors` in turn, then returns "started"; records shutdowns between."""

    def __init__(self, *errors: Exception):
        self.errors, self.calls = list(errors), []

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        if self.errors:
            raise self.errors.pop(0)
        return "started"

    def shutdown(self):
        self.calls.append(("shutdown", {}))


def test_startup_timeouts_are_retried_after_a_shutdown():
    ray = FlakyStart(TIMEOUT, TIMEOUT)
    init = ray_start.retry_startup_timeouts(ray.init, ray.shutdown, pause_s=0)
    assert init(num_cpus=16) == "started"
    assert [name for name, _ in ray.calls] == ["init", "shutdown", "init", "shutdown", "init"]
    assert all(kwargs == {"num_cpus": 16} for name, kwargs in ray.calls if name == "init")  # same arguments


def test_other_errors_and_the_last_timeout_are_raised():
    ray = FlakyStart(ValueError("num_cpus must be >= 0"))
    with pytest.raises(ValueError, match="num_cpus"):
        ray_start.retry_startup_timeouts(ray.init, ray.shutdown, pause_s=0)()
    assert len(ray.calls) == 1  # not retried
    ray = FlakyStart(*[TIMEOUT] * ray_start.ATTEMPTS)
    with pytest.raises(Exception, match="timed out during startup"):
        ray_start.retry_startup_timeouts(ray.init, ray.shutdown, pause_s=0)()


def test_install_wraps_ray_init_once():
    import ray

    ray_start.install()
    ray_start.install()  # idempotent: wrapped once (every verl process imports the module)
    assert ray.init.retries_startup_timeouts and not getattr(ray.init.__wrapped__, "retries_startup_timeouts", False)
