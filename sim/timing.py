"""Summaries of measured durations: what the benchmarks report for latency."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summary_ms(times_ms: Sequence[float], count_key: str = "n") -> dict | None:
    """{count_key: how many, "median", "p95", "max"} of durations in ms, rounded to the
    microsecond; None when there are none."""
    if not len(times_ms):
        return None
    a = np.asarray(times_ms, dtype=float)
    return {count_key: len(a), "median": round(float(np.median(a)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}
