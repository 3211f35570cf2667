"""How much does a user's history predict, with no neural network in the way?

Usage: .venv/bin/python experiments/synth_signal.py DATA [--history-weight W]

DATA is a prepared ``last-session`` dataset (``data/synth`` after
``experiments/hrnn_experiments.sh synth``). Two count models score every test target the way
``nextclick evaluate`` does (full ranking, pessimistic ties, the first click of a session is
input only):

* **transitions**: how often the current item was followed by each item in the training
  sessions (a first-order Markov chain; popularity breaks its ties);
* **transitions + history**: the same plus ``W`` times the user's click distribution over
  their own training sessions (the sessions HRNN folds into the user state).

The gap between the two is what user history is worth on the data; docs/hrnn-synthetic.md sets it
against what GRU4Rec and HRNN-Init reach there. Prints Recall@5 by position in session.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from training.data.dataset import PreparedDataset
from training.evaluation.metrics import metrics_from_ranks, rank_targets

CUTOFF = 5


def _rank(scores: np.ndarray, target: int) -> float:
    """The evaluator's rank (pessimistic ties, padding column excluded)."""
    return float(rank_targets(torch.from_numpy(scores[None]), torch.tensor([target]))[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--history-weight", type=float, default=0.5)
    args = parser.parse_args()
    dataset = PreparedDataset.load(args.data)
    n_rows = dataset.n_items + 1
    train = dataset.train
    items = train["item"].to_numpy()
    sessions = train["session"].to_numpy()
    users = train["user"].to_numpy()
    same_session = sessions[1:] == sessions[:-1]
    transitions: dict[int, Counter[int]] = defaultdict(Counter)
    for current, following in zip(items[:-1][same_session], items[1:][same_session],
                                  strict=True):
        transitions[int(current)][int(following)] += 1
    popularity = np.bincount(items, minlength=n_rows).astype(np.float64)
    tie_break = 1e-6 * popularity / popularity.sum()
    history: dict[int, Counter[int]] = defaultdict(Counter)
    for user, item in zip(users, items, strict=True):
        history[int(user)][int(item)] += 1

    ranks: dict[str, dict[int, list[float]]] = {"transitions": defaultdict(list),
                                                "history": defaultdict(list)}
    for _, group in dataset.test.group_by("session", maintain_order=True):
        clicks = group["item"].to_numpy()
        user_clicks = history[int(group["user"][0])]
        past = np.zeros(n_rows)
        for item, count in user_clicks.items():
            past[item] = count
        past /= max(past.sum(), 1.0)
        for position in range(1, len(clicks)):
            following = transitions[int(clicks[position - 1])]
            scores = np.zeros(n_rows)
            for item, count in following.items():
                scores[item] = count
            scores = scores / max(scores.sum(), 1.0) + tie_break
            target = int(clicks[position])
            bucket = min(position, 3)
            ranks["transitions"][bucket].append(_rank(scores, target))
            ranks["history"][bucket].append(_rank(scores + args.history_weight * past, target))

    print(f"{args.data}: Recall@{CUTOFF} (%) of two count models, "
          f"history weight {args.history_weight}")
    def recall(model: str, buckets: list[int]) -> float:
        pooled = [rank for bucket in buckets for rank in ranks[model][bucket]]
        return 100 * metrics_from_ranks(pooled, [CUTOFF])[f"recall@{CUTOFF}"]

    print("position | targets | transitions | transitions + user history")
    buckets = sorted(ranks["transitions"])
    rows = [(f"{b}+" if b == 3 else str(b), [b]) for b in buckets] + [("all", buckets)]
    for label, chosen in rows:
        n = sum(len(ranks["transitions"][b]) for b in chosen)
        print(f"{label:>8} | {n:7d} | {recall('transitions', chosen):11.2f} | "
              f"{recall('history', chosen):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
