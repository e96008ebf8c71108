"""Intervals over characters."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of per-character values (NaN = no value for that character) with a percentile
    bootstrap interval from resampling characters. -> {mean, lo, hi, n}"""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    means = v[np.random.default_rng(seed).integers(0, len(v), (n, len(v)))].mean(1)
    tail = (1 - level) / 2 * 100
    return {"mean": float(v.mean()), "lo": float(np.percentile(means, tail)),
            "hi": float(np.percentile(means, 100 - tail)), "n": int(len(v))}
