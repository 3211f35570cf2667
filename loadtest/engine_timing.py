"""Engine-only latency benchmark: the per-click inference cost without HTTP or Redis.

Replays random sessions against one bundle and times what the service does on every
click: ``advance`` (fold the click into the session state) followed by ``top_k`` (k=20,
excluding the session's clicks). Imports no torch, so it measures exactly the serving
path. Run::

    nextclick bench --engine-only        (a 40k-item random HRNN-Init bundle)

A random-weight bundle of any size for this comes from
``training.export.writer.export_random_bundle`` (e.g. 40k items, hidden 100).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.stats import percentile
from service.engine import ModelBundle

WARMUP_CLICKS = 50


def bench_engine(bundle_dir: Path, clicks: int = 2000, *, k: int = 20, session_length: int = 10,
                 providers: Sequence[str] | None = None, intra_op_threads: int | None = 1,
                 seed: int = 0) -> dict[str, Any]:
    """Time ``clicks`` clicks (after a warm-up) over sessions of ``session_length`` random
    items; user-scoped models start each session from a random user state. Returns
    latencies in milliseconds (p50/p99/mean of advance + top_k per click, and of each
    part)."""
    bundle = ModelBundle(Path(bundle_dir), providers, intra_op_threads)
    rng = np.random.default_rng(seed)
    per_click: list[float] = []
    advance_ms: list[float] = []
    top_k_ms: list[float] = []
    start_ms: list[float] = []
    state = bundle.start_session(None)
    seen: list[int] = []
    for index in range(clicks + WARMUP_CLICKS):
        timed = index >= WARMUP_CLICKS
        if index % session_length == 0:
            user = None
            if bundle.has_user_state:
                user = {spec.name: (0.1 * rng.standard_normal((1, *spec.shape)))
                        .astype(spec.dtype) for spec in bundle.user_spec}
            begin = time.perf_counter()
            state = bundle.start_session(user)
            if timed:
                start_ms.append((time.perf_counter() - begin) * 1e3)
            seen = []
        item = int(rng.integers(1, bundle.n_items + 1))
        seen.append(item)
        begin = time.perf_counter()
        state = bundle.advance(state, [item])
        middle = time.perf_counter()
        recommendations = bundle.top_k(state, k, exclude=seen)
        end = time.perf_counter()
        if len(recommendations) != min(k, bundle.n_items - len(set(seen))):
            raise RuntimeError(f"{bundle.key}: top_k returned {len(recommendations)} items")
        if timed:
            advance_ms.append((middle - begin) * 1e3)
            top_k_ms.append((end - middle) * 1e3)
            per_click.append((end - begin) * 1e3)
    return {
        "model": bundle.key, "n_items": bundle.n_items, "providers": bundle.providers,
        "clicks": clicks, "k": k, "intra_op_threads": intra_op_threads,
        "p50_ms": percentile(per_click, 50), "p99_ms": percentile(per_click, 99),
        "mean_ms": float(np.mean(per_click)) if per_click else 0.0,
        "clicks_per_s": 1e3 / float(np.mean(per_click)) if per_click else 0.0,
        "advance_p50_ms": percentile(advance_ms, 50),
        "advance_p99_ms": percentile(advance_ms, 99),
        "top_k_p50_ms": percentile(top_k_ms, 50), "top_k_p99_ms": percentile(top_k_ms, 99),
        "start_p50_ms": percentile(start_ms, 50),
    }


def bench_engine_batches(bundle_dir: Path, batch_sizes: Sequence[int] = (1, 8, 32, 128), *,
                         clicks: int = 2000, k: int = 20, session_length: int = 10,
                         providers: Sequence[str] | None = None,
                         intra_op_threads: int | None = 1, seed: int = 0
                         ) -> list[dict[str, Any]]:
    """Clicks per second of the engine alone when clicks come in batches of B sessions:
    each step is one ``advance_steps`` (one click per row) and one ``top_k_rows`` (k, the
    row's clicks excluded), what the micro-batched click path runs per batch; sessions
    restart every ``session_length`` clicks (from random user states for user models).
    About ``clicks`` clicks are timed per batch size, after a warm-up."""
    bundle = ModelBundle(Path(bundle_dir), providers, intra_op_threads)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for batch in batch_sizes:
        steps = max(1, clicks // batch)
        state = _random_start(bundle, rng, batch)
        seen: list[set[int]] = [set() for _ in range(batch)]
        timings: list[float] = []
        for step in range(steps + max(2, WARMUP_CLICKS // batch)):
            if step % session_length == 0:
                state = _random_start(bundle, rng, batch)
                seen = [set() for _ in range(batch)]
            items = rng.integers(1, bundle.n_items + 1, size=(batch, 1))
            for row, item in enumerate(items[:, 0].tolist()):
                seen[row].add(int(item))
            began = time.perf_counter()
            state = bundle.advance_steps(state, items)
            lists = bundle.top_k_rows(state, [k] * batch, seen)
            timings.append(time.perf_counter() - began)
            if any(len(found) != min(k, bundle.n_items - len(skip))
                   for found, skip in zip(lists, seen, strict=True)):
                raise RuntimeError(f"{bundle.key}: top_k_rows returned a short list")
        measured = timings[-steps:]
        per_click_ms = [1e3 * t / batch for t in measured]
        rows.append({"model": bundle.key, "n_items": bundle.n_items, "batch": batch,
                     "clicks": steps * batch,
                     "clicks_per_s": round(steps * batch / sum(measured), 1),
                     "batch_p50_ms": round(percentile([1e3 * t for t in measured], 50), 3),
                     "per_click_p50_ms": round(percentile(per_click_ms, 50), 4)})
    return rows


def _random_start(bundle: ModelBundle, rng: np.random.Generator, batch: int) -> Any:
    """Session start states of ``batch`` sessions (from random user states for user
    models, as returning users)."""
    from service.engine import stack_states

    if not bundle.has_user_state:
        return bundle.start_session(None, batch)
    users = [{spec.name: (0.1 * rng.standard_normal((1, *spec.shape))).astype(spec.dtype)
              for spec in bundle.user_spec} for _ in range(batch)]
    return bundle.start_session(stack_states(users), batch)
