"""Per-click engine latency of RUM(I), RUM(F) and HRNN-Init (random weights, 40k items):
one advance + top-20 through the exported ONNX graphs, batch 1, one intra-op thread.
Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/rum_latency.py"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from service.engine import ModelBundle
from training.export import export_random_bundle

root = Path(tempfile.mkdtemp())
for name in ("rum-item", "rum-feature", "hrnn-init"):
    path = export_random_bundle(name, 40_000, root, n_users=1, version="v1")
    bundle = ModelBundle(path, None, 1)
    rng = np.random.default_rng(0)
    user = bundle.new_user_state()
    state = bundle.start_session(user)
    times = []
    for _ in range(300):
        item = int(rng.integers(1, 40_001))
        t = time.perf_counter()
        state = bundle.advance(state, [item])
        bundle.top_k(state, 20)
        times.append(time.perf_counter() - t)
    measured = np.array(times[20:]) * 1000  # first 20 clicks: warm-up
    p50, p99 = np.percentile(measured, 50), np.percentile(measured, 99)
    print(f"{name}: advance + top-20 over 40k items, batch 1, 1 thread: "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
