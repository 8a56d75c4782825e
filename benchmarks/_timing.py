"""Timing helpers shared by ``run.py`` and ``_peer_worker.py`` (standard library only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def time_call(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[Any, list[float]]:
    """Call ``fn`` once as a warm-up (unless ``warmup`` is False), then ``repeats`` more times.

    Returns the first call's result and the list of per-call wall times in
    seconds (``time.perf_counter``), warm-up excluded. Report ``min`` of the
    list: the best of N. ``warmup=False`` is for calls too slow to repeat.
    """
    result = fn() if warmup else None
    times = []
    for i in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if i == 0 and not warmup:
            result = out
    return result, times
