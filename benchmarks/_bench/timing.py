"""Timing: one call or the median of repeats, named stages, percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from _bench.output import log

T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[float, T]:
    """Call ``fn`` ``repeat`` times: the median wall seconds of a call, and the last result."""
    times, result = [], None
    for _ in range(max(repeat, 1)):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


class Stages:
    """Named steps run one after the other, each timed once, with progress on stderr;
    ``seconds`` maps each step's name to its wall seconds, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        log(f"-> {name}")
        self.seconds[name], result = timed(fn)
        log(f"   {name}: {self.seconds[name]:.1f}s")
        return result


def pct(values, q: float) -> float:
    """The ``q``-th percentile of ``values`` (NaN when empty)."""
    return float(np.percentile(values, q)) if len(values) else float("nan")
