"""Per-user list evaluation (the RUM protocol).

Datasets prepared with the ``user-ratio`` protocol (RUM, Chen et al. 2018) are evaluated
per user instead (``evaluate_user_lists``): each test user's training events are
replayed into the user state (seeded by ``SessionModel.user_state_for``), one top-K list
is scored from it, and the list is compared with the *set* of the user's held-out items
(P@K, R@K, F1@K, HR@K, NDCG@K of ``training.evaluation.metrics.user_list_metrics``, eq. 20-22).
Whether items the user already had in their history are removed from the list is
``exclude_seen``; by default (``None``) they are removed exactly when the training data
never repeats a (user, item) pair (ratings such as MovieLens, where a user rates a movie
once, so a seen item can never be a target), and kept otherwise (repeat clicks are
legitimate targets in click logs such as Taobao's).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor
from tqdm import tqdm

from models.base import SessionModel
from training.data.dataset import PreparedDataset
from training.evaluation.cases import Cases, Split, check_items, group_sessions, user_histories
from training.evaluation.metrics import (
    TopKTracker,
    check_ks,
    popularity_percentiles,
    user_list_metrics,
)
from training.evaluation.replay import replay_history

#: protocols evaluated with one top-K list per user (``evaluate_user_lists``)
USER_LIST_PROTOCOLS = ("user-ratio",)
#: at most this many users are scored side by side in the user-list mode (RUM-I's
#: full-catalogue read holds a [B, N, K] tensor)
_USER_LIST_BATCH = 64


def _build_user_cases(dataset: PreparedDataset, split: Split, n_items: int) -> Cases:
    """One pseudo-session per target user holding all of their held-out items, and their
    history: all their training sessions (``test``) or their non-valid ones (``valid``,
    which under ``user-ratio`` are the earlier part of their training events)."""
    check_items(dataset.train, n_items, "train.parquet")
    train = dataset.train.with_row_index("_row")
    if split == "test":
        check_items(dataset.test, n_items, "test.parquet")
        target_frame = dataset.test.with_row_index("_row")
        history_frame = train
    elif split == "valid":
        target_frame = train.filter(pl.col("valid"))
        history_frame = train.filter(~pl.col("valid"))
    else:
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    target_frame = (target_frame.filter((pl.col("user") != 0) & (pl.col("item") != 0))
                    .sort("user", maintain_order=True)
                    .with_columns(pl.col("user").alias("session")))
    targets = group_sessions(target_frame, None)
    counts, history = user_histories(history_frame, n_items)
    start = np.searchsorted(history.user, targets.user, side="left")
    stop = np.searchsorted(history.user, targets.user, side="right")
    return Cases(targets, history, start.astype(np.int64), (stop - start).astype(np.int64),
                  popularity_percentiles(counts))


def _mask_history(scores: Tensor, cases: Cases, batch: np.ndarray) -> Tensor:
    """Scores with each row's history items set to -inf (a new tensor)."""
    rows, columns = [], []
    history = cases.history
    for row, case in enumerate(batch):
        first = cases.history_start[case]
        begin = history.offsets[first]
        end = history.offsets[first + cases.history_count[case]]
        seen = np.unique(history.items[begin:end])
        rows.append(np.full(seen.size, row, np.int64))
        columns.append(seen)
    index = (torch.from_numpy(np.concatenate(rows)).to(scores.device),
             torch.from_numpy(np.concatenate(columns).astype(np.int64)).to(scores.device))
    return scores.index_put(index, torch.tensor(float("-inf"), device=scores.device))


def evaluate_user_lists(model: SessionModel, dataset: PreparedDataset, split: Split = "test",
                        ks: Iterable[int] = (5, 10, 20), batch_size: int = 256,
                        max_users: int | None = None, progress: bool = True,
                        ignore_history: bool = False,
                        exclude_seen: bool | None = None) -> dict[str, Any]:
    """RUM's per-user evaluation (see the module docstring): one top-K list per user
    after replaying their history, against the set of their held-out items.

    Returns ``user_list_metrics`` (``precision@K``, ``recall@K``, ``f1@K``, ``hr@K``,
    ``ndcg@K``, ``n`` = users) plus ``coverage@K`` / ``popularity@K``, ``n_users``,
    ``split``, ``protocol`` and ``eval_seconds``. ``max_users`` evaluates a fixed random
    subset (seed 0); ``ignore_history`` starts every user from the zero user state;
    ``exclude_seen``: see the module docstring (the value used is in the result).
    """
    cut_offs = check_ks(ks)
    if max_users is not None and max_users < 1:
        raise ValueError(f"max_users must be >= 1, got {max_users}")
    if dataset.n_items and model.n_items != dataset.n_items:
        raise ValueError(f"the model scores {model.n_items} items but the dataset has "
                         f"{dataset.n_items} items; evaluate a model on the dataset it was "
                         "trained on")
    began = time.perf_counter()
    cases = _build_user_cases(dataset, split, model.n_items)
    if exclude_seen is None:
        pairs = dataset.train.filter(pl.col("user") != 0).select("user", "item")
        exclude_seen = pairs.height > 0 and pairs.n_unique() == pairs.height
    chosen = np.arange(len(cases.targets))
    if max_users is not None and max_users < chosen.size:
        chosen = np.sort(np.random.default_rng(0).choice(chosen.size, max_users, replace=False))
    user_aware = bool(model.user_spec()) and not ignore_history
    if user_aware:
        chosen = chosen[np.argsort(-cases.history_count[chosen], kind="stable")]
    device = model._device()
    k_max = min(max(cut_offs), model.n_items)
    tracker = TopKTracker(model.n_items, cut_offs, cases.popularity, device)
    all_hits: list[np.ndarray] = []
    all_relevant: list[np.ndarray] = []
    step = max(1, min(batch_size, _USER_LIST_BATCH))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=chosen.size, unit="user", desc=f"evaluate {split}",
                                   disable=None if progress else True, leave=False) as bar:
            for begin in range(0, chosen.size, step):
                batch = chosen[begin:begin + step]
                user_state = (replay_history(model, cases, batch, device) if user_aware
                              else model.init_user_state(batch.size))
                scores = model.score(model.start_session(user_state, batch.size))
                if exclude_seen:
                    scores = _mask_history(scores, cases, batch)
                tracker.update(scores)
                top = (torch.topk(scores[:, 1:], k_max, dim=1).indices + 1).cpu().numpy()
                items, _ = cases.targets.padded(batch)  # every held-out click counts
                live = np.arange(items.shape[1])[None, :] < cases.targets.lengths[batch][:, None]
                truth = np.where(live, items, -1)
                all_hits.append((top[:, :, None] == truth[:, None, :]).any(axis=2))
                all_relevant.append(np.array([np.unique(row[row > 0]).size for row in truth]))
                bar.update(batch.size)
    finally:
        model.train(was_training)
    hits = (np.concatenate(all_hits) if all_hits else np.zeros((0, k_max), bool))
    relevant = (np.concatenate(all_relevant) if all_relevant else np.zeros(0, np.int64))
    result: dict[str, Any] = dict(user_list_metrics(hits, relevant, cut_offs))
    result.update(tracker.summary())
    result["n_users"] = int(chosen.size)
    result["exclude_seen"] = bool(exclude_seen)
    result["split"] = split
    result["protocol"] = "user-lists"
    result["eval_seconds"] = round(time.perf_counter() - began, 3)
    return result
