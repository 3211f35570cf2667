"""One definition of latency statistics for every timing this project reports (engine
alone, HTTP click path, the benchmark's eager model step): percentiles by linear
interpolation over the samples, in milliseconds."""

from __future__ import annotations

import numpy as np


def percentile(samples_ms: list[float], q: float) -> float:
    """The q-th percentile (0..100, linear interpolation); 0.0 for no samples."""
    return float(np.percentile(np.asarray(samples_ms), q)) if samples_ms else 0.0


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    """p50 / p90 / p95 / p99 / mean (ms, rounded to microseconds) and the sample count."""
    return {"p50_ms": round(percentile(samples_ms, 50), 3),
            "p90_ms": round(percentile(samples_ms, 90), 3),
            "p95_ms": round(percentile(samples_ms, 95), 3),
            "p99_ms": round(percentile(samples_ms, 99), 3),
            "mean_ms": round(float(np.mean(samples_ms)), 3) if samples_ms else 0.0,
            "n": len(samples_ms)}
