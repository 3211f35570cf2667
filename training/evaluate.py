"""Full-ranking evaluation through the serving interface, with the HRNN protocol replay.

Evaluation drives a model only through the methods the service uses (``init_user_state``,
``start_session``, ``advance``, ``score``, ``end_session``), so the numbers measure exactly
what is served, not a training-path shortcut.

Protocol (Quadrana et al., 2017, generalised to every model):

* target sessions: ``test.parquet`` rows for ``split="test"``; the ``valid`` rows of
  ``train.parquet`` for ``split="valid"`` (there every click after the first is a target,
  the protocol the valid sessions were carved with);
* a user's history: all of their training sessions, in order, for ``test``; their
  non-valid training sessions that come *before* the target session for ``valid`` (so
  early stopping never peeks at later sessions). Anonymous sessions (user 0) have none;
* replay: the history sessions are folded into the user state (``start_session`` ->
  ``advance`` per click -> ``end_session``), then the target session is stepped click by
  click, and before every click flagged ``target`` the state is scored over the full
  catalogue and the true item ranked (see ``training.metrics``).

Batching is user-parallel: a batch holds up to ``batch_size`` target sessions (sorted by
history and session length so batches are dense), their k-th history sessions are replayed
side by side, and rows that have run out of history or clicks keep their state (padding
item 0 is a no-op for ``advance``; ``end_session`` is applied only to rows that really have
a k-th session). Models without user-scoped state skip the history replay entirely.

Datasets prepared with the ``user-ratio`` protocol (RUM, Chen et al. 2018) are evaluated
per user instead (``evaluate_user_lists``): each test user's training events are
replayed into the user state (seeded by ``SessionModel.user_state_for``), one top-K list
is scored from it, and the list is compared with the *set* of the user's held-out items
(P@K, R@K, F1@K, HR@K, NDCG@K of ``training.metrics.user_list_metrics``, eq. 20-22).
Whether items the user already had in their history are removed from the list is
``exclude_seen``; by default (``None``) they are removed exactly when the training data
never repeats a (user, item) pair (ratings such as MovieLens, where a user rates a movie
once, so a seen item can never be a target), and kept otherwise (repeat clicks are
legitimate targets in click logs such as Taobao's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch import Tensor
from tqdm import tqdm

from models.base import SessionModel, State
from training.dataset import PreparedDataset
from training.metrics import (
    HISTORY_EDGES,
    POSITION_EDGES,
    SESSION_LENGTH_EDGES,
    TIE_POLICIES,
    TopKTracker,
    breakdown,
    check_ks,
    check_tie_policy,
    metrics_from_ranks,
    popularity_percentiles,
    rank_targets,
    user_list_metrics,
)

Split = Literal["test", "valid"]

#: protocols evaluated with one top-K list per user (``evaluate_user_lists``)
USER_LIST_PROTOCOLS = ("user-ratio",)
#: at most this many users are scored side by side in the user-list mode (RUM-I's
#: full-catalogue read holds a [B, N, K] tensor)
_USER_LIST_BATCH = 64

#: Below this share of live rows a replay step runs on the live rows only (gather ->
#: step -> scatter) instead of stepping the whole batch with padding.
_SUBSET_BELOW = 0.5


# ---- sessions as flat arrays -----------------------------------------------------------

@dataclass
class _Sessions:
    """Sessions of one frame as flat numpy arrays: the clicks of session ``s`` are
    ``items[offsets[s]:offsets[s + 1]]``; ``row`` is the session's first row in its file
    (file order is user, then session start, so it orders a user's sessions)."""

    session: np.ndarray  # int64 [S] dataset session index
    user: np.ndarray  # int64 [S]
    row: np.ndarray  # int64 [S]
    offsets: np.ndarray  # int64 [S + 1]
    items: np.ndarray  # int64 [clicks]
    targets: np.ndarray  # bool [clicks]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return int(self.session.size)

    def padded(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items and target flags of sessions ``index`` right-padded with 0 / False."""
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        width = int(lengths.max()) if lengths.size else 0
        columns = np.arange(width)
        live = columns[None, :] < lengths[:, None]
        flat = np.where(live, starts[:, None] + columns[None, :], 0)
        if self.items.size == 0:
            return np.zeros(live.shape, np.int64), live
        return np.where(live, self.items[flat], 0), live & self.targets[flat]


def _group_sessions(frame: pl.DataFrame, target_column: str | None) -> _Sessions:
    """Group a dataset frame (with a ``_row`` column) into ``_Sessions``. With no
    ``target_column`` every click after a session's first is a target."""
    if frame.height == 0:
        empty = np.zeros(0, np.int64)
        return _Sessions(empty, empty, empty, np.zeros(1, np.int64), empty, np.zeros(0, bool))
    aggregations = [pl.col("user").first(), pl.col("_row").first(), pl.col("item")]
    if target_column is not None:
        aggregations.append(pl.col(target_column))
    grouped = frame.group_by("session", maintain_order=True).agg(aggregations)
    lengths = grouped["item"].list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(lengths.size + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    items = grouped["item"].explode().to_numpy().astype(np.int64)
    if target_column is not None:
        targets = grouped[target_column].explode().to_numpy().astype(bool)
    else:
        targets = (np.arange(items.size) - np.repeat(offsets[:-1], lengths)) > 0
    return _Sessions(
        session=grouped["session"].to_numpy().astype(np.int64),
        user=grouped["user"].to_numpy().astype(np.int64),
        row=grouped["_row"].to_numpy().astype(np.int64),
        offsets=offsets, items=items, targets=targets)


def _check_items(frame: pl.DataFrame, n_items: int, where: str) -> None:
    if frame.height == 0:
        return
    low, high = frame["item"].min(), frame["item"].max()
    if low is None or high is None or int(low) < 0 or int(high) > n_items:  # type: ignore[arg-type]
        bad = frame.filter((pl.col("item") < 0) | (pl.col("item") > n_items)).row(0, named=True)
        raise ValueError(f"{where}: item index {bad['item']} (session {bad['session']}) is "
                         f"outside 0..{n_items}, the model's catalogue; was the model trained "
                         f"on this dataset?")


@dataclass
class _Cases:
    """Target sessions plus, per target, the contiguous range of its history sessions."""

    targets: _Sessions
    history: _Sessions  # sorted by (user, row); only users != 0
    history_start: np.ndarray  # int64 [cases]
    history_count: np.ndarray  # int64 [cases]
    popularity: np.ndarray  # float64 [n_items + 1] percentile of the fitting clicks


def _build_cases(dataset: PreparedDataset, split: Split, n_items: int) -> _Cases:
    train = dataset.train.with_row_index("_row")
    if split == "test":
        _check_items(dataset.test, n_items, "test.parquet")
        target_frame = dataset.test.with_row_index("_row")
        targets = _group_sessions(target_frame, "target")
        history_frame = train
    elif split == "valid":
        target_frame = train.filter(pl.col("valid"))
        targets = _group_sessions(target_frame, None)
        history_frame = train.filter(~pl.col("valid"))
    else:
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    _check_items(dataset.train, n_items, "train.parquet")

    counts, history = _user_histories(history_frame, n_items)

    # A user's history is one contiguous run of the (user, row)-sorted sessions.
    start = np.searchsorted(history.user, targets.user, side="left")
    if split == "test":
        stop = np.searchsorted(history.user, targets.user, side="right")
    else:
        stride = int(max(history.row.max(initial=0), targets.row.max(initial=0))) + 1
        keys = history.user * stride + history.row
        stop = np.searchsorted(keys, targets.user * stride + targets.row, side="left")
    count = np.where(targets.user != 0, stop - start, 0).astype(np.int64)
    return _Cases(targets, history, start.astype(np.int64), count, popularity_percentiles(counts))


def _user_histories(history_frame: pl.DataFrame, n_items: int) -> tuple[np.ndarray, _Sessions]:
    """Item click counts of the history [N+1] and the known users' history sessions,
    sorted by (user, row) so each user's history is one contiguous run."""
    counts = np.bincount(history_frame["item"].to_numpy().astype(np.int64),
                         minlength=n_items + 1)[: n_items + 1]
    history = _group_sessions(history_frame.filter(pl.col("user") != 0), None)
    order = np.lexsort((history.row, history.user))
    if len(history) and not np.array_equal(order, np.arange(len(history))):
        history = _reorder(history, order)
    return counts, history


def _reorder(sessions: _Sessions, order: np.ndarray) -> _Sessions:
    lengths = sessions.lengths[order]
    offsets = np.zeros(order.size + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    take = np.repeat(sessions.offsets[order], lengths) + within
    return _Sessions(sessions.session[order], sessions.user[order], sessions.row[order],
                     offsets, sessions.items[take], sessions.targets[take])


# ---- results ------------------------------------------------------------------------

@dataclass
class RankedTargets:
    """One entry per scored target event, in (target session file order, click order):
    what significance tests and custom breakdowns need."""

    rank: np.ndarray  # float64, 1-based
    session: np.ndarray  # int64 dataset session index
    user: np.ndarray  # int64 (0 = anonymous)
    item: np.ndarray  # int64 true item
    position: np.ndarray  # int64 clicks of the session seen before this target
    session_length: np.ndarray  # int64 clicks in the whole target session
    history_length: np.ndarray  # int64 history sessions replayed before the session
    catalogue: dict[str, float]  # coverage@K, popularity@K
    n_sessions: int
    n_unknown_targets: int  # targets whose item is 0 (unknown): not rankable, skipped
    seconds: float

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame({
            "session": self.session, "user": self.user, "item": self.item,
            "position": self.position, "session_length": self.session_length,
            "history_length": self.history_length, "rank": self.rank})


def _gather(state: State, index: Tensor) -> State:
    return {name: value.index_select(0, index) for name, value in state.items()}


def _scatter(state: State, index: Tensor, update: State) -> State:
    return {name: value.index_copy(0, index, update[name]) for name, value in state.items()}


def _advance(model: SessionModel, items: np.ndarray, state: State,
             device: torch.device) -> State:
    """One click per row; rows with item 0 keep their state. Runs on the live rows only
    when few are live, so long sessions do not drag a mostly finished batch along."""
    live = np.flatnonzero(items)
    if live.size == 0:
        return state
    if live.size >= _SUBSET_BELOW * items.size:
        return model.advance(torch.from_numpy(items).to(device), state)
    index = torch.from_numpy(live).to(device)
    update = model.advance(torch.from_numpy(items[live]).to(device), _gather(state, index))
    return _scatter(state, index, update)


def _replay_history(model: SessionModel, cases: _Cases, batch: np.ndarray,
                    device: torch.device) -> State:
    """User state of each row after folding its history sessions in order."""
    size = batch.size
    user_state = model.user_state_for(torch.from_numpy(cases.targets.user[batch]).to(device))
    counts = cases.history_count[batch]
    starts = cases.history_start[batch]
    for k in range(int(counts.max(initial=0))):
        live = np.flatnonzero(counts > k)
        items, _ = cases.history.padded(starts[live] + k)
        if live.size == size:
            sub_user = user_state
        else:
            index = torch.from_numpy(live).to(device)
            sub_user = _gather(user_state, index)
        session_state = model.start_session(sub_user, live.size)
        for column in range(items.shape[1]):
            session_state = _advance(model, np.ascontiguousarray(items[:, column]),
                                     session_state, device)
        ended = model.end_session(session_state, sub_user)
        # end_session is not a no-op: only rows that really had a k-th session take it.
        user_state = ended if live.size == size else _scatter(user_state, index, ended)
    return user_state


def rank_cases(model: SessionModel, dataset: PreparedDataset, split: Split = "test",
               ks: Iterable[int] = (5, 10, 20), batch_size: int = 256,
               max_sessions: int | None = None, tie_policy: str = "pessimistic",
               progress: bool = True, ignore_history: bool = False) -> RankedTargets:
    """Replay the protocol and rank every target event; see the module docstring.

    ``ignore_history=True`` is the ablation that tests HRNN's claim: every session starts
    from the initial (zero) user state, as if the user were new, so the difference to the
    normal run is what the user's history contributes.

    ``max_sessions`` evaluates a fixed pseudo-random subset (seed 0) of the target
    sessions, the same one on every call, so early-stopping curves are comparable
    between epochs without favouring the first users in file order.
    """
    cut_offs = check_ks(ks)
    policy = check_tie_policy(tie_policy)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_sessions is not None and max_sessions < 1:
        raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
    if dataset.n_items and model.n_items != dataset.n_items:
        where = f" {dataset.path}" if dataset.path else ""
        raise ValueError(f"the model scores {model.n_items} items but the dataset{where} has "
                         f"{dataset.n_items} items; evaluate a model on the dataset it was "
                         "trained on")
    began = time.perf_counter()
    cases = _build_cases(dataset, split, model.n_items)
    n_cases = len(cases.targets)
    chosen = np.arange(n_cases)
    if max_sessions is not None and max_sessions < n_cases:
        chosen = np.sort(np.random.default_rng(0).choice(n_cases, max_sessions, replace=False))
    lengths = cases.targets.lengths
    user_aware = bool(model.user_spec()) and not ignore_history
    # Dense batches: similar history counts and session lengths side by side.
    chosen = chosen[np.lexsort((-lengths[chosen],
                                -cases.history_count[chosen] if user_aware
                                else np.zeros(chosen.size, np.int64)))]
    device = model._device()
    tracker = TopKTracker(model.n_items, cut_offs, cases.popularity, device)
    out_case: list[np.ndarray] = []
    out_position: list[np.ndarray] = []
    out_rank: list[Tensor] = []
    n_unknown = 0
    per_session = (np.add.reduceat(cases.targets.targets.astype(np.int64),
                                   cases.targets.offsets[:-1]) if n_cases
                   else np.zeros(0, np.int64))
    total = int(per_session[chosen].sum())

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=total, unit="target", desc=f"evaluate {split}",
                                   disable=None if progress else True, leave=False) as bar:
            for begin in range(0, chosen.size, batch_size):
                batch = chosen[begin:begin + batch_size]
                user_state = (_replay_history(model, cases, batch, device) if user_aware
                              else model.init_user_state(batch.size))
                state = model.start_session(user_state, batch.size)
                items, flags = cases.targets.padded(batch)
                for column in range(items.shape[1]):
                    wanted = flags[:, column]
                    unknown = wanted & (items[:, column] == 0)
                    n_unknown += int(unknown.sum())
                    rows = np.flatnonzero(wanted & ~unknown)
                    if rows.size:
                        if rows.size == batch.size:
                            scores = model.score(state)
                        else:
                            scores = model.score(
                                _gather(state, torch.from_numpy(rows).to(device)))
                        truth = torch.from_numpy(items[rows, column]).to(device)
                        out_rank.append(rank_targets(scores, truth, policy, check_nan=False))
                        tracker.update(scores)
                        out_case.append(batch[rows])
                        out_position.append(np.full(rows.size, column, np.int64))
                        bar.update(rows.size)
                    if column + 1 < items.shape[1]:
                        state = _advance(model, np.ascontiguousarray(items[:, column]),
                                         state, device)
    finally:
        model.train(was_training)

    case = np.concatenate(out_case) if out_case else np.zeros(0, np.int64)
    position = np.concatenate(out_position) if out_position else np.zeros(0, np.int64)
    rank = (torch.cat(out_rank).cpu().numpy() if out_rank else np.zeros(0, np.float64))
    order = np.lexsort((position, case))  # file order, independent of batching
    case, position, rank = case[order], position[order], rank[order]
    targets = cases.targets
    return RankedTargets(
        rank=rank, session=targets.session[case], user=targets.user[case],
        item=targets.items[targets.offsets[case] + position], position=position,
        session_length=targets.lengths[case], history_length=cases.history_count[case],
        catalogue=tracker.summary(), n_sessions=int(chosen.size),
        n_unknown_targets=n_unknown, seconds=time.perf_counter() - began)


def _build_user_cases(dataset: PreparedDataset, split: Split, n_items: int) -> _Cases:
    """One pseudo-session per target user holding all of their held-out items, and their
    history: all their training sessions (``test``) or their non-valid ones (``valid``,
    which under ``user-ratio`` are the earlier part of their training events)."""
    _check_items(dataset.train, n_items, "train.parquet")
    train = dataset.train.with_row_index("_row")
    if split == "test":
        _check_items(dataset.test, n_items, "test.parquet")
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
    targets = _group_sessions(target_frame, None)
    counts, history = _user_histories(history_frame, n_items)
    start = np.searchsorted(history.user, targets.user, side="left")
    stop = np.searchsorted(history.user, targets.user, side="right")
    return _Cases(targets, history, start.astype(np.int64), (stop - start).astype(np.int64),
                  popularity_percentiles(counts))


def _mask_history(scores: Tensor, cases: _Cases, batch: np.ndarray) -> Tensor:
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
                user_state = (_replay_history(model, cases, batch, device) if user_aware
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


def summarize(ranked: RankedTargets, ks: Iterable[int] = (5, 10, 20),
              breakdowns: bool = False) -> dict[str, Any]:
    """The metrics dict of ``evaluate_model`` from ranked targets."""
    cut_offs = check_ks(ks)
    result: dict[str, Any] = dict(metrics_from_ranks(ranked.rank, cut_offs))
    result.update(ranked.catalogue)
    result["n_sessions"] = ranked.n_sessions
    result["n_unknown_targets"] = ranked.n_unknown_targets
    result["eval_seconds"] = round(ranked.seconds, 3)
    if breakdowns:
        result["breakdowns"] = {
            "position": breakdown(ranked.rank, ranked.position, POSITION_EDGES, cut_offs),
            "history_length": breakdown(ranked.rank, ranked.history_length, HISTORY_EDGES,
                                        cut_offs),
            "session_length": breakdown(ranked.rank, ranked.session_length,
                                        SESSION_LENGTH_EDGES, cut_offs),
        }
    return result


def evaluate_model(model: SessionModel, dataset: PreparedDataset, split: Split = "test",
                   ks: Iterable[int] = (5, 10, 20), batch_size: int = 256,
                   max_sessions: int | None = None, breakdowns: bool = False,
                   tie_policy: str = "pessimistic", progress: bool = True,
                   ignore_history: bool = False) -> dict[str, Any]:
    """Full-ranking metrics of ``model`` on ``split`` of ``dataset`` (HRNN protocol).

    Returns fractions keyed ``recall@K``, ``mrr@K``, ``ndcg@K``, ``precision@K``,
    ``coverage@K``, ``popularity@K`` plus ``n`` (scored targets), ``n_sessions``,
    ``n_unknown_targets``, ``split``, ``tie_policy``, ``eval_seconds`` and, with
    ``breakdowns=True``, per-bucket rows by position in session, user-history length and
    session length under ``breakdowns``. Per-target ranks: ``rank_cases``.
    Datasets of a ``USER_LIST_PROTOCOLS`` protocol get ``evaluate_user_lists`` instead
    (``max_sessions`` then counts users; no breakdowns).
    The model's training mode is restored afterwards. ``ignore_history``: see
    ``rank_cases``.
    """
    cut_offs = check_ks(ks)
    if dataset.stats.get("protocol") in USER_LIST_PROTOCOLS:
        return evaluate_user_lists(model, dataset, split, cut_offs, batch_size, max_sessions,
                                   progress, ignore_history)
    ranked = rank_cases(model, dataset, split, cut_offs, batch_size, max_sessions,
                        tie_policy, progress, ignore_history)
    result = summarize(ranked, cut_offs, breakdowns)
    result["split"] = split
    result["tie_policy"] = tie_policy
    return result


# ---- command line ---------------------------------------------------------------------

def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        return check_ks(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--ks expects positive integers separated by commas, e.g. 5,10,20 (got {text!r})"
        ) from exc


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="full-ranking evaluation of a trained run (HRNN protocol)",
        description="Replay each user's history, rank every target click over the whole "
                    "catalogue, and write RUN/metrics.json, RUN/ranks.parquet, "
                    "RUN/report.md and RUN/plots/*.png.")
    parser.add_argument("--run", required=True, type=Path, help="run folder written by `train`")
    parser.add_argument("--split", choices=("test", "valid"), default="test")
    parser.add_argument("--data", type=Path, default=None,
                        help="prepared dataset folder (default: the one the run was trained on)")
    parser.add_argument("--ks", type=_parse_ks, default=(5, 10, 20), help="cut-offs, e.g. 5,10,20")
    parser.add_argument("--tie-policy", choices=TIE_POLICIES, default="pessimistic")
    parser.add_argument("--batch-size", type=_positive_int, default=256)
    parser.add_argument("--max-sessions", type=_positive_int, default=None,
                        help="evaluate a fixed random subset of this many target sessions")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-plots", action="store_true", help="skip report.md and PNGs")
    parser.add_argument("--ignore-history", action="store_true",
                        help="ablation: start every session from the zero user state (what "
                             "does user history add?); writes RUN/metrics.no-history.json")
    parser.set_defaults(func=run_evaluate)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return device


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write via a temporary file so a crash never leaves a half-written metrics.json."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def run_evaluate(args: argparse.Namespace) -> int:
    from training.checkpoint import load_run  # the trainer's module; imported on use
    from training.report import format_table, write_report

    run_dir: Path = args.run
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--run {run_dir}: no such run folder")
    device = _resolve_device(args.device)
    model, info = load_run(run_dir, device=device)
    data_path = args.data if args.data is not None else info.get("dataset")
    if not data_path:
        raise ValueError(f"{run_dir}: the run does not record its dataset; pass --data DIR")
    dataset = PreparedDataset.load(data_path)

    if dataset.stats.get("protocol") in USER_LIST_PROTOCOLS:
        return _run_user_lists(args, run_dir, model, info, dataset, data_path, device)
    ranked = rank_cases(model, dataset, args.split, args.ks, args.batch_size,
                        args.max_sessions, args.tie_policy, progress=True,
                        ignore_history=args.ignore_history)
    if ranked.rank.size == 0:
        raise ValueError(f"{data_path}: split {args.split!r} has no target events to score")
    metrics: dict[str, Any] = summarize(ranked, args.ks, breakdowns=True)
    trained_on = info.get("dataset_fingerprint") or info.get("fingerprint")
    metrics.update({
        "model": info.get("model", type(model).__name__),
        "run": str(run_dir),
        "split": args.split,
        "tie_policy": args.tie_policy,
        "ks": list(args.ks),
        "dataset": {"path": str(Path(data_path)), "fingerprint": dataset.fingerprint,
                    "protocol": dataset.stats.get("protocol"),
                    "n_items": dataset.n_items, "n_users": dataset.n_users},
        "device": str(device),
        "max_sessions": args.max_sessions,
        "ignore_history": args.ignore_history,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    if trained_on and dataset.fingerprint and trained_on != dataset.fingerprint:
        print(f"warning: the run was trained on dataset {trained_on}, evaluating on "
              f"{dataset.fingerprint}", file=sys.stderr)
    if args.ignore_history:
        _write_json(run_dir / "metrics.no-history.json", metrics)
        print(format_table(metrics))
        print(f"wrote {run_dir / 'metrics.no-history.json'}")
        return 0
    _write_json(run_dir / "metrics.json", metrics)
    ranked.to_frame().write_parquet(run_dir / "ranks.parquet")
    written = [run_dir / "metrics.json", run_dir / "ranks.parquet"]
    if not args.no_plots:
        written.append(write_report(metrics, run_dir))
        written += sorted((run_dir / "plots").glob("*.png"))
    print(format_table(metrics))
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _run_user_lists(args: argparse.Namespace, run_dir: Path, model: SessionModel,
                    info: dict[str, Any], dataset: PreparedDataset, data_path: Any,
                    device: torch.device) -> int:
    """``evaluate`` on a user-ratio dataset: RUM's per-user list metrics, no plots."""
    metrics = evaluate_user_lists(model, dataset, args.split, args.ks, args.batch_size,
                                  args.max_sessions, progress=True,
                                  ignore_history=args.ignore_history)
    if metrics["n_users"] == 0:
        raise ValueError(f"{data_path}: split {args.split!r} has no users with held-out items")
    metrics.update({
        "model": info.get("model", type(model).__name__), "run": str(run_dir),
        "ks": list(args.ks),
        "dataset": {"path": str(Path(data_path)), "fingerprint": dataset.fingerprint,
                    "protocol": dataset.stats.get("protocol"),
                    "n_items": dataset.n_items, "n_users": dataset.n_users},
        "device": str(device), "max_users": args.max_sessions,
        "ignore_history": args.ignore_history,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    name = "metrics.no-history.json" if args.ignore_history else "metrics.json"
    _write_json(run_dir / name, metrics)
    for k in args.ks:
        print("  ".join(f"{metric}@{k} {metrics[f'{metric}@{k}']:.4f}"
                        for metric in ("precision", "recall", "f1", "hr", "ndcg")))
    print(f"users {metrics['n_users']}; wrote {run_dir / name}")
    return 0
