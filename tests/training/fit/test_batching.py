"""Session-parallel, user-parallel and prefix batches from a tiny prepared dataset."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest
import torch

from tests.helpers import make_tiny_dataset
from training.fit.batching import (
    ParallelBatch,
    make_batches,
    prefix_batches,
    session_parallel_batches,
    training_sessions,
    user_parallel_batches,
)


@pytest.fixture(scope="module")
def dataset():  # type: ignore[no-untyped-def]
    return make_tiny_dataset(n_users=9, n_items=30, sessions_per_user=5, seed=4)


def grid(batches: list[ParallelBatch]) -> ParallelBatch:
    return ParallelBatch(*(torch.cat([getattr(b, f) for b in batches], dim=1)
                           for f in ("items", "targets", "session_start", "user_start")))


def train_sessions(dataset) -> list[tuple[int, list[int]]]:  # type: ignore[no-untyped-def]
    frame = dataset.train.filter(~pl.col("valid"))
    return [(user, items) for user, _, items in dataset.sessions(frame)]


def row_sessions(full: ParallelBatch, row: int, with_last: bool) -> list[list[int]]:
    """Rebuild the sessions a row played from its steps."""
    sessions: list[list[int]] = []
    for t in range(full.items.shape[1]):
        item, target = int(full.items[row, t]), int(full.targets[row, t])
        if item == 0:
            assert target == 0  # idle rows have no targets
            continue
        if full.session_start[row, t]:
            sessions.append([item])
        elif not with_last:
            assert sessions[-1][-1] == item  # the input is the previous target
        else:
            sessions[-1].append(item)
        if not with_last:
            sessions[-1].append(target)
    return sessions


def test_training_sessions_skip_validation_rows(dataset) -> None:  # type: ignore[no-untyped-def]
    table = training_sessions(dataset)
    expected = train_sessions(dataset)
    assert table.n_sessions == len(expected)
    assert [table.items[a:b].tolist() for a, b in zip(table.offsets[:-1], table.offsets[1:],
                                                     strict=True)] == [s for _, s in expected]


def test_session_parallel_covers_every_pair_once(dataset) -> None:  # type: ignore[no-untyped-def]
    batches = session_parallel_batches(dataset, batch_size=4, steps=3, seed=1)
    chunks = list(batches)
    assert len(chunks) == len(batches)
    assert all(chunk.items.shape[0] == 4 and chunk.items.shape[1] <= 3 for chunk in chunks)
    full = grid(chunks)
    played = [s for row in range(4) for s in row_sessions(full, row, with_last=False)]
    expected = [items for _, items in train_sessions(dataset) if len(items) > 1]
    assert Counter(map(tuple, played)) == Counter(map(tuple, expected))
    # every session starts exactly once, and only at its first step
    assert int(full.session_start.sum()) == len(expected)
    assert torch.equal(full.user_start, full.session_start)


def test_user_parallel_keeps_each_users_sessions_in_order(dataset) -> None:  # type: ignore[no-untyped-def]
    full = grid(list(user_parallel_batches(dataset, batch_size=3, steps=4, seed=2)))
    by_user: dict[int, list[list[int]]] = {}
    for user, items in train_sessions(dataset):
        by_user.setdefault(user, []).append(items)
    seen_users = 0
    for row in range(3):
        starts = full.user_start[row].nonzero().flatten().tolist()
        assert all(full.session_start[row, t] for t in starts)  # user start => session start
        sessions = row_sessions(full, row, with_last=True)
        # split the row's sessions at user starts and match them to whole user histories
        session_index = 0
        for t in range(full.items.shape[1]):
            if full.user_start[row, t]:
                first = int(full.items[row, t])
                user = next(u for u, s in by_user.items() if s[0][0] == first
                            and s == sessions[session_index:session_index + len(s)])
                session_index += len(by_user[user])
                seen_users += 1
        # the last click of every session has no target
        ends = torch.roll(full.session_start[row], -1) | (full.items[row] != 0) & (
            torch.roll(full.items[row], -1) == 0)
        assert torch.all(full.targets[row][ends & (full.items[row] != 0)] == 0)
    assert seen_users == len(by_user)


def test_anonymous_sessions_are_separate_users() -> None:
    dataset = make_tiny_dataset(n_users=2, sessions_per_user=4)
    dataset.train = dataset.train.with_columns(pl.lit(0, dtype=pl.Int32).alias("user"))
    full = grid(list(user_parallel_batches(dataset, batch_size=2, steps=50)))
    assert torch.equal(full.user_start, full.session_start)


def test_shuffle_is_seeded(dataset) -> None:  # type: ignore[no-untyped-def]
    def items(seed: int, shuffle: bool = True) -> torch.Tensor:
        return grid(list(session_parallel_batches(dataset, 3, steps=5, seed=seed,
                                                  shuffle=shuffle))).items
    assert torch.equal(items(7), items(7))
    assert not torch.equal(items(7), items(8))
    assert torch.equal(items(7, shuffle=False), items(8, shuffle=False))


def test_prefix_batches(dataset) -> None:  # type: ignore[no-untyped-def]
    batches = list(prefix_batches(dataset, batch_size=5, max_length=3, shuffle=False))
    sessions = [items for _, items in train_sessions(dataset)]
    expected = [(items[max(0, p - 3):p], items[p]) for items in sessions
                for p in range(1, len(items))]
    got = []
    for batch in batches:
        for row in range(batch.items.shape[0]):
            length = int(batch.lengths[row])
            assert torch.all(batch.items[row, length:] == 0)
            got.append((batch.items[row, :length].tolist(), int(batch.targets[row])))
    assert got == expected


def test_bad_input_gives_clear_errors(dataset) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="unknown batching kind"):
        make_batches("nonsense", dataset, 4)
    broken = make_tiny_dataset()
    broken.train = broken.train.with_columns(pl.lit(99, dtype=pl.Int32).alias("item"))
    with pytest.raises(ValueError, match=r"outside 1\.\.30"):
        training_sessions(broken)
    assert np.all(training_sessions(dataset).items >= 1)


def test_user_sequence_rows_play_each_users_events_in_order_with_their_id(dataset) -> None:  # type: ignore[no-untyped-def]
    batches = list(make_batches("user-sequence", dataset, 4, steps=3, shuffle=True, seed=2))
    items = torch.cat([b.items for b in batches], dim=1)
    users = torch.cat([b.users for b in batches if b.users is not None], dim=1)
    user_start = torch.cat([b.user_start for b in batches], dim=1)
    assert users.shape == items.shape
    table = training_sessions(dataset)
    expected: dict[int, list[int]] = {}
    for session in range(table.n_sessions):
        expected.setdefault(int(table.users[session]), []).extend(
            table.items[table.offsets[session]:table.offsets[session + 1]].tolist())
    seen: dict[int, list[int]] = {}
    for row in range(items.shape[0]):
        for t in range(items.shape[1]):
            item, user = int(items[row, t]), int(users[row, t])
            if item == 0:
                assert user == 0
                continue
            if bool(user_start[row, t]):
                assert user not in seen, "a user was split over rows"
                seen[user] = []
            seen[user].append(item)
    assert seen == expected
