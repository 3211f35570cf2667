"""Evaluate exported bundles the way they are served: through the ONNX Runtime engine
(``service.engine``), with raw item ids, on a prepared dataset's test sessions.

The champion gate of ``nextclick retrain`` compares a candidate with the version being
served, which may have been trained on another vocabulary: both are scored here on the same
raw sessions, items a bundle does not know count as clicks that move nothing and as misses
when they are the target. Protocol: each test user's training sessions (the newest
``MAX_HISTORY``) are folded into the user state (start -> advance -> end), then each test
session is stepped click by click and every click after the first is a target, ranked over
the bundle's whole catalogue (Recall@K, MRR@K for K <= the largest cut-off).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from service.engine import ModelBundle, State, stack_states, state_rows
from training.data.dataset import PreparedDataset

MAX_HISTORY = 50
BATCH = 256


def _sessions(frame: pl.DataFrame, items: list[str]) -> list[tuple[int, list[str]]]:
    """(user index, raw item ids) per session, in frame order."""
    raw = ["", *items]
    grouped = frame.group_by("session", maintain_order=True).agg(pl.col("user").first(),
                                                                  pl.col("item"))
    return [(int(user), [raw[index] for index in clicks])
            for user, clicks in zip(grouped["user"].to_list(), grouped["item"].to_list(),
                                    strict=True)]


def _user_states(bundle: ModelBundle, histories: dict[int, list[list[str]]]) -> dict[int, State]:
    """Each user's state after folding their history sessions in order, users side by side
    (the k-th sessions of every user in one batch)."""
    users = sorted(histories)
    if not users or not bundle.has_user_state:
        return {}
    state = bundle.new_user_state(len(users))
    depth = max(len(histories[user]) for user in users)
    for position in range(depth):
        rows = [row for row, user in enumerate(users) if len(histories[user]) > position]
        sessions = [histories[users[row]][position] for row in rows]
        user_rows = state_rows(state, rows)
        session = bundle.start_session(user_rows, len(rows))
        width = max(len(clicks) for clicks in sessions)
        clicks = np.zeros((len(rows), width), dtype=np.int64)
        for index, items in enumerate(sessions):
            clicks[index, :len(items)] = [bundle.item_index(item) for item in items]
        session = bundle.advance_steps(session, clicks)
        ended = bundle.end_session(session, user_rows)
        for name, value in ended.items():
            state[name][rows] = value
    return {user: state_rows(state, [row]) for row, user in enumerate(users)}


def evaluate_bundle(bundle: ModelBundle, dataset: PreparedDataset,
                    ks: Sequence[int] = (5, 10, 20)) -> dict[str, Any]:
    """Recall@K and MRR@K of ``bundle`` on ``dataset``'s test sessions (module docstring)."""
    top = max(ks)
    histories: dict[int, list[list[str]]] = {}
    for user, clicks in _sessions(dataset.train, dataset.items):
        if user:
            histories.setdefault(user, []).append(clicks)
    tests = _sessions(dataset.test, dataset.items)
    wanted = {user for user, _ in tests if user}
    states = _user_states(bundle, {user: sessions[-MAX_HISTORY:]
                                   for user, sessions in histories.items() if user in wanted})
    ranks: list[int] = []  # 0 = not in the top list
    for begin in range(0, len(tests), BATCH):
        batch = tests[begin:begin + BATCH]
        if bundle.has_user_state:
            users = stack_states([states.get(user, bundle.new_user_state())
                                  for user, _ in batch])
            state = bundle.start_session(users, len(batch))
        else:
            state = bundle.start_session(None, len(batch))
        width = max(len(clicks) for _, clicks in batch)
        for position in range(width):
            live = [row for row, (_, clicks) in enumerate(batch) if len(clicks) > position]
            if position > 0:  # every click after the first is a target
                lists = bundle.top_k_rows(state_rows(state, live), [top] * len(live),
                                          [()] * len(live))
                for row, found in zip(live, lists, strict=True):
                    listed = [item for item, _ in found]
                    target = batch[row][1][position]
                    ranks.append(listed.index(target) + 1 if target in listed else 0)
            column = np.zeros((len(batch), 1), dtype=np.int64)
            for row in live:
                column[row, 0] = bundle.item_index(batch[row][1][position])
            state = bundle.advance_steps(state, column)
    rank = np.asarray(ranks, dtype=np.float64)
    result: dict[str, Any] = {"targets": int(rank.size), "model": bundle.key}
    for k in ks:
        hit = (rank > 0) & (rank <= k)
        result[f"recall@{k}"] = float(hit.mean()) if rank.size else 0.0
        result[f"mrr@{k}"] = float(np.where(hit, 1.0 / np.maximum(rank, 1), 0.0).mean()) \
            if rank.size else 0.0
    return result
