"""Paired significance of two models on the same test targets (as in the HRNN paper):
per-target reciprocal rank (0 beyond K) or hit@K, a Wilcoxon signed-rank test (normal
approximation with tie correction) and a paired bootstrap 95% confidence interval of the
mean difference (numpy; no scipy needed)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl


def per_case(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-target value of ``recall@K`` (hit: 1.0 / 0.0) or ``mrr@K`` (1/rank, 0 beyond K)."""
    name, _, k_text = metric.partition("@")
    k = int(k_text)
    ranks = np.asarray(ranks, dtype=np.float64)
    if name == "recall":
        return (ranks <= k).astype(np.float64)
    if name == "mrr":
        return np.where(ranks <= k, 1.0 / ranks, 0.0)
    raise ValueError(f"metric must be recall@K or mrr@K, got {metric!r}")


def wilcoxon(diff: np.ndarray) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test of paired differences (zeros dropped, tied
    |d| share their mean rank), normal approximation with tie correction."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return {"n": 0, "w_plus": 0.0, "z": 0.0, "p": 1.0}
    magnitude = np.abs(d)
    order = np.argsort(magnitude, kind="stable")
    ranks = np.empty(n)
    sorted_abs = magnitude[order]
    # average ranks over runs of equal |d|
    starts = np.flatnonzero(np.r_[True, sorted_abs[1:] != sorted_abs[:-1]])
    ends = np.r_[starts[1:], n]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    w_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4.0
    ties = (ends - starts).astype(np.float64)
    variance = n * (n + 1) * (2 * n + 1) / 24.0 - float((ties ** 3 - ties).sum()) / 48.0
    z = (w_plus - mean) / math.sqrt(variance) if variance > 0 else 0.0
    return {"n": n, "w_plus": w_plus, "z": z, "p": math.erfc(abs(z) / math.sqrt(2.0))}


def bootstrap_ci(diff: np.ndarray, resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of paired differences (cases resampled)."""
    d = np.asarray(diff, dtype=np.float64)
    if d.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for index in range(resamples):
        means[index] = d[rng.integers(0, d.size, d.size)].mean()
    tail = (1.0 - level) / 2.0
    return (float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail)))


def compare_pair(ranks_a: pl.DataFrame, ranks_b: pl.DataFrame, metrics: list[str],
                 resamples: int = 2000) -> dict[str, Any]:
    """Paired comparison of two models' ``ranks.parquet`` frames on their shared targets
    (joined on session and position)."""
    joined = ranks_a.select("session", "position", "rank").join(
        ranks_b.select("session", "position", pl.col("rank").alias("rank_b")),
        on=["session", "position"], how="inner")
    a, b = joined["rank"].to_numpy(), joined["rank_b"].to_numpy()
    out: dict[str, Any] = {"n": int(joined.height)}
    for metric in metrics:
        diff = per_case(a, metric) - per_case(b, metric)
        low, high = bootstrap_ci(diff, resamples)
        out[metric] = {"mean_difference": float(diff.mean()) if diff.size else 0.0,
                       "ci95": [low, high], "wilcoxon": wilcoxon(diff)}
    return out
