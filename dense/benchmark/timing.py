"""Interleaved timing of two callables in one process.

Calls alternate in order (a b, b a, a b, ...) so that machine noise hits both alike; the ratio of the
medians is the figure to read, not the seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["interleave", "interleave_many", "median_seconds", "time_pair"]


def interleave(a: Callable, b: Callable, xa: Any, xb: Any, *, iters: int, warmup: int) -> tuple[float, float]:
    """Median seconds per call of a(xa) and b(xb), after `warmup` untimed calls of each."""
    for _ in range(warmup):
        a(xa), b(xb)
    ta, tb = [], []
    for i in range(iters):
        for fn, x, acc in ((a, xa, ta), (b, xb, tb)) if i % 2 == 0 else ((b, xb, tb), (a, xa, ta)):
            t0 = time.perf_counter()
            fn(x)
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def interleave_many(fns: Mapping[str, Callable[[], Any]], *, iters: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each fn(), after `warmup` untimed rounds. Round i starts at the
    i-th callable (a rotation), so each takes every place in the order equally often."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(iters):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def time_pair(
    a: Callable, b: Callable, xa: Any, xb: Any, *, iters: int, warmup: int, grad: bool = False
) -> tuple[float, float]:
    """`interleave` for torch models: in inference mode unless `grad` (training steps)."""
    with torch.inference_mode(not grad):
        return interleave(a, b, xa, xb, iters=iters, warmup=warmup)


def median_seconds(fn: Callable[[], Any], iters: int) -> float:
    """Median seconds per call of fn()."""
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
