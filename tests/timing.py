"""Bounded-time checks that a loaded machine cannot fail by chance.

A reward must score hostile input in milliseconds (catastrophic backtracking takes seconds to hours on a megabyte).
One timing can include a scheduler stall when CI's other work holds both cores; the fastest of a few cannot,
unless the code itself is slow.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def fastest(call: Callable[[], T], repeats: int = 3) -> tuple[T, float]:
    """(what call returned, the fastest of `repeats` timings in seconds)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return result, best
