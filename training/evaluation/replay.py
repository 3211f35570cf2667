"""Next-item evaluation by replay through the serving interface (the HRNN protocol).

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
  catalogue and the true item ranked (see ``training.evaluation.metrics``).

Batching is user-parallel: a batch holds up to ``batch_size`` target sessions (sorted by
history and session length so batches are dense), their k-th history sessions are replayed
side by side, and rows that have run out of history or clicks keep their state (padding
item 0 is a no-op for ``advance``; ``end_session`` is applied only to rows that really have
a k-th session). Models without user-scoped state skip the history replay entirely.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor
from tqdm import tqdm

from models.base import SessionModel, State
from training.data.dataset import PreparedDataset
from training.evaluation.cases import Cases, Split, build_cases
from training.evaluation.metrics import (
    HISTORY_EDGES,
    POSITION_EDGES,
    SESSION_LENGTH_EDGES,
    TopKTracker,
    breakdown,
    check_ks,
    check_tie_policy,
    metrics_from_ranks,
    rank_targets,
)

#: Below this share of live rows a replay step runs on the live rows only (gather ->
#: step -> scatter) instead of stepping the whole batch with padding.
_SUBSET_BELOW = 0.5


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


def gather_rows(state: State, index: Tensor) -> State:
    return {name: value.index_select(0, index) for name, value in state.items()}


def scatter_rows(state: State, index: Tensor, update: State) -> State:
    return {name: value.index_copy(0, index, update[name]) for name, value in state.items()}


def advance_rows(model: SessionModel, items: np.ndarray, state: State,
             device: torch.device) -> State:
    """One click per row; rows with item 0 keep their state. Runs on the live rows only
    when few are live, so long sessions do not drag a mostly finished batch along."""
    live = np.flatnonzero(items)
    if live.size == 0:
        return state
    if live.size >= _SUBSET_BELOW * items.size:
        return model.advance(torch.from_numpy(items).to(device), state)
    index = torch.from_numpy(live).to(device)
    update = model.advance(torch.from_numpy(items[live]).to(device), gather_rows(state, index))
    return scatter_rows(state, index, update)


def replay_history(model: SessionModel, cases: Cases, batch: np.ndarray,
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
            sub_user = gather_rows(user_state, index)
        session_state = model.start_session(sub_user, live.size)
        for column in range(items.shape[1]):
            session_state = advance_rows(model, np.ascontiguousarray(items[:, column]),
                                     session_state, device)
        ended = model.end_session(session_state, sub_user)
        # end_session is not a no-op: only rows that really had a k-th session take it.
        user_state = ended if live.size == size else scatter_rows(user_state, index, ended)
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
    cases = build_cases(dataset, split, model.n_items)
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
                user_state = (replay_history(model, cases, batch, device) if user_aware
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
                                gather_rows(state, torch.from_numpy(rows).to(device)))
                        truth = torch.from_numpy(items[rows, column]).to(device)
                        out_rank.append(rank_targets(scores, truth, policy, check_nan=False))
                        tracker.update(scores)
                        out_case.append(batch[rows])
                        out_position.append(np.full(rows.size, column, np.int64))
                        bar.update(rows.size)
                    if column + 1 < items.shape[1]:
                        state = advance_rows(model, np.ascontiguousarray(items[:, column]),
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
