"""Repeat statistics behind the tmall notes of docs/results.md: how often the test target is already
in the prefix / is the last click, and how often a trained window model's top-1 is the
last click (first 2,000 test sessions). Usage (after experiments/anon_experiments.sh tmall):
    OMP_NUM_THREADS=1 .venv/bin/python experiments/anon_repeats.py [data/tmall] [runs/anon-tmall]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from training.data.dataset import PreparedDataset
from training.fit.checkpoint import load_run

data_dir = sys.argv[1] if len(sys.argv) > 1 else "data/tmall"
runs_dir = sys.argv[2] if len(sys.argv) > 2 else "runs/anon-tmall"
test = PreparedDataset.load(data_dir).test
sess, items, target = (test[c].to_numpy() for c in ("session", "item", "target"))
starts = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
ends = np.r_[starts[1:], len(sess)]
repeats = lasts = n = 0
windows: list[list[int]] = []
for a, b in zip(starts, ends, strict=True):
    for p in a + np.flatnonzero(target[a:b]):
        prefix, y = items[a:p], items[p]
        n += 1
        repeats += int(y in prefix)
        lasts += int(len(prefix) > 0 and prefix[-1] == y)
        if len(windows) < 2000:
            w = [int(i) for i in prefix[-19:]]
            windows.append([0] * (19 - len(w)) + w)
print(f"{n} targets: in the prefix {repeats / n:.3f}, equal to the last click {lasts / n:.3f}")
window = torch.tensor(windows, dtype=torch.int64)
for name in ("narm", "hmn"):
    model, _ = load_run(f"{runs_dir}/{name}")
    with torch.no_grad():
        top = model.score({"window": window}).argmax(1)
    share = float((top == window[:, -1]).float().mean())
    print(f"{name}: top-1 is the last click for {share:.3f} of {len(window)} sessions")
