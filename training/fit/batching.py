"""Training batches built from a ``PreparedDataset`` (rows with ``valid == False``).

Four kinds, named by ``SessionModel.batching``:

* ``session-parallel`` (GRU4Rec, Hidasi et al. 2016, sec. 3.1.1): B rows; each row plays
  one session after the other (a free row takes the next session); every step gives each
  row's input click, its next click as target, and a flag for rows whose session just
  started (the model resets their hidden state). The other rows' targets are the
  negatives.
* ``user-parallel`` (HRNN, Quadrana et al. 2017, Fig. 2): a row holds one *user* and plays
  their sessions in order. Every click of a session is an input (the last one with target
  0), so the hidden state after the whole session reaches the user GRU, as in serving.
  Flags mark session starts and user starts (a new user takes the row: zero user state).
  Anonymous sessions (user 0) count as one-session users.
* ``user-sequence`` (RUM, BPR-MF, FPMC; Chen et al. 2018): the ``user-parallel`` layout
  (a row plays one user's events in time order, sessions back to back) plus each step's
  user index in ``users``; the models use every click as a positive predicted from the
  events before it, so ``targets`` is not needed by them.
* ``prefix`` (NARM-style augmentation): every click after the first of a session is a
  target for the clicks before it (the last ``max_length`` of them).

The parallel kinds are laid out once per epoch as a [B, total_steps] grid (numpy) and
yielded as chunks of ``steps`` columns; idle rows (data ran out) hold item 0 / target 0.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import Tensor

from training.data.dataset import PreparedDataset


@dataclass
class ParallelBatch:
    """Session- or user-parallel steps; every tensor is [B, T] (see ``ParallelSteps``)."""

    items: Tensor          # int64: input click (0 = idle row)
    targets: Tensor        # int64: next click (0 = no target)
    session_start: Tensor  # bool: first click of a session on this row
    user_start: Tensor     # bool: first click of a new user on this row
    users: Tensor | None = None  # int64: user index of the step (0 = anonymous / idle)

    def to(self, device: torch.device | str) -> ParallelBatch:
        return ParallelBatch(self.items.to(device), self.targets.to(device),
                             self.session_start.to(device), self.user_start.to(device),
                             None if self.users is None else self.users.to(device))


@dataclass
class PrefixBatch:
    """One target per row after a right-padded prefix of the same session."""

    items: Tensor    # [B, T] int64, right-padded with 0
    lengths: Tensor  # [B] int64, number of clicks in each prefix (>= 1)
    targets: Tensor  # [B] int64
    users: Tensor    # [B] int64 (0 = anonymous)

    def to(self, device: torch.device | str) -> PrefixBatch:
        return PrefixBatch(self.items.to(device), self.lengths.to(device),
                           self.targets.to(device), self.users.to(device))


@dataclass
class SessionTable:
    """Training sessions as flat numpy arrays, in dataset order."""

    items: np.ndarray    # [n_clicks] int64, sessions concatenated
    offsets: np.ndarray  # [n_sessions + 1] int64, session s is items[offsets[s]:offsets[s+1]]
    users: np.ndarray    # [n_sessions] int64

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def training_sessions(dataset: PreparedDataset, include_valid: bool = False) -> SessionTable:
    """Sessions of the training rows (``valid == False`` unless ``include_valid``)."""
    frame = dataset.train if include_valid else dataset.train.filter(~pl.col("valid"))
    if frame.height == 0:
        raise ValueError(f"{dataset.path or 'dataset'}: no training rows (valid == False)")
    items = frame["item"].to_numpy().astype(np.int64)
    sessions = frame["session"].to_numpy()
    if int(items.min()) < 1 or int(items.max()) > dataset.n_items:
        bad = int(np.flatnonzero((items < 1) | (items > dataset.n_items))[0])
        raise ValueError(f"{dataset.path or 'dataset'}: train.parquet row {bad} has item "
                         f"{int(items[bad])} outside 1..{dataset.n_items} (items.txt)")
    starts = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    if len(np.unique(sessions[starts])) != len(starts):
        raise ValueError(f"{dataset.path or 'dataset'}: train.parquet clicks of a session are "
                         "not contiguous (rows must be ordered by user, session, click)")
    offsets = np.r_[starts, len(items)].astype(np.int64)
    users = frame["user"].to_numpy().astype(np.int64)[starts]
    return SessionTable(items, offsets, users)


def _segments(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(starts[k], starts[k] + lengths[k]) over k, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    unit_offsets = np.r_[0, np.cumsum(lengths)[:-1]]
    return np.repeat(starts - unit_offsets, lengths) + np.arange(total)


class ParallelBatches:
    """Iterable of ``ParallelBatch`` for one epoch; ``len()`` is the number of chunks."""

    def __init__(self, table: SessionTable, batch_size: int, mode: str = "session",
                 steps: int = 1, shuffle: bool = True, seed: int = 0):
        if mode not in ("session", "user"):
            raise ValueError(f"parallel batching mode must be 'session' or 'user', got {mode!r}")
        if batch_size < 1 or steps < 1:
            raise ValueError(f"batch_size and steps must be >= 1 (got {batch_size}, {steps})")
        self.batch_size = batch_size
        self.steps = steps
        lengths = table.lengths
        if mode == "session":
            # a session of n clicks gives n - 1 (input, target) steps; n = 1 gives none
            step_lengths = lengths - 1
            step_starts = table.offsets[:-1]
            keep = step_lengths > 0
            unit_of_session = np.cumsum(keep) - 1
            n_units = int(keep.sum())
            inputs = table.items
            targets = np.r_[table.items[1:], 0]
        else:
            # every click is an input; the session's last click has target 0
            step_lengths = lengths
            step_starts = table.offsets[:-1]
            keep = np.ones(table.n_sessions, dtype=bool)
            # consecutive sessions of the same (non-anonymous) user form one unit
            new_unit = np.r_[True, (table.users[1:] != table.users[:-1]) | (table.users[1:] == 0)]
            unit_of_session = np.cumsum(new_unit) - 1
            n_units = int(new_unit.sum())
            inputs = table.items
            last_click = np.zeros(len(table.items), dtype=bool)
            last_click[table.offsets[1:] - 1] = True
            targets = np.where(last_click, 0, np.r_[table.items[1:], 0])
        if n_units == 0:
            raise ValueError("no training sessions with at least two clicks")
        # steps of every kept session, with its start flags, in dataset order
        kept = np.flatnonzero(keep)
        step_index = _segments(step_starts[kept], step_lengths[kept])
        session_first = np.zeros(len(step_index), dtype=bool)
        session_first[np.r_[0, np.cumsum(step_lengths[kept])[:-1]]] = True
        unit_of_step = np.repeat(unit_of_session[kept], step_lengths[kept])
        user_first = session_first & np.r_[True, unit_of_step[1:] != unit_of_step[:-1]]
        unit_sizes = np.bincount(unit_of_step, minlength=n_units)

        order = (np.random.default_rng(seed).permutation(n_units) if shuffle
                 else np.arange(n_units))
        # a free row takes the next unit (lowest row first on ties), as in the papers
        free: list[tuple[int, int]] = [(0, row) for row in range(batch_size)]
        unit_row = np.empty(n_units, dtype=np.int64)
        unit_time = np.empty(n_units, dtype=np.int64)
        for unit in order:
            time, row = heapq.heappop(free)
            unit_row[unit], unit_time[unit] = row, time
            heapq.heappush(free, (time + int(unit_sizes[unit]), row))
        self.total_steps = max(time for time, _ in free)

        rows = np.repeat(unit_row, unit_sizes)                       # per step, dataset order
        times = _segments(unit_time, unit_sizes)
        shape = (batch_size, self.total_steps)
        self._items = np.zeros(shape, dtype=np.int64)
        self._targets = np.zeros(shape, dtype=np.int64)
        self._session_start = np.zeros(shape, dtype=bool)
        self._user_start = np.zeros(shape, dtype=bool)
        self._items[rows, times] = inputs[step_index]
        self._targets[rows, times] = targets[step_index]
        self._session_start[rows, times] = session_first
        self._user_start[rows, times] = user_first
        self._users = np.zeros(shape, dtype=np.int64)
        self._users[rows, times] = table.users[np.repeat(kept, step_lengths[kept])]

    def __len__(self) -> int:
        return -(-self.total_steps // self.steps)

    def __iter__(self) -> Iterator[ParallelBatch]:
        for begin in range(0, self.total_steps, self.steps):
            end = begin + self.steps
            yield ParallelBatch(torch.from_numpy(self._items[:, begin:end].copy()),
                                torch.from_numpy(self._targets[:, begin:end].copy()),
                                torch.from_numpy(self._session_start[:, begin:end].copy()),
                                torch.from_numpy(self._user_start[:, begin:end].copy()),
                                torch.from_numpy(self._users[:, begin:end].copy()))


def session_parallel_batches(dataset: PreparedDataset, batch_size: int, steps: int = 1,
                             shuffle: bool = True, seed: int = 0) -> ParallelBatches:
    return ParallelBatches(training_sessions(dataset), batch_size, "session", steps, shuffle, seed)


def user_parallel_batches(dataset: PreparedDataset, batch_size: int, steps: int = 1,
                          shuffle: bool = True, seed: int = 0) -> ParallelBatches:
    return ParallelBatches(training_sessions(dataset), batch_size, "user", steps, shuffle, seed)


class PrefixBatches:
    """Iterable of ``PrefixBatch``: every (prefix, next click) pair of every session."""

    def __init__(self, table: SessionTable, batch_size: int, max_length: int | None = None,
                 shuffle: bool = True, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.table = table
        self.batch_size = batch_size
        self.max_length = max_length
        lengths = table.lengths
        # target positions: every click but the first of each session
        self.target_pos = _segments(table.offsets[:-1] + 1, np.maximum(lengths - 1, 0))
        self.session_of = np.repeat(np.arange(table.n_sessions), np.maximum(lengths - 1, 0))
        if len(self.target_pos) == 0:
            raise ValueError("no training sessions with at least two clicks")
        self.order = (np.random.default_rng(seed).permutation(len(self.target_pos)) if shuffle
                      else np.arange(len(self.target_pos)))

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self) -> Iterator[PrefixBatch]:
        table = self.table
        for begin in range(0, len(self.order), self.batch_size):
            picked = self.order[begin:begin + self.batch_size]
            target_pos = self.target_pos[picked]
            session_start = table.offsets[self.session_of[picked]]
            prefix_len = target_pos - session_start
            if self.max_length is not None:
                prefix_len = np.minimum(prefix_len, self.max_length)
            width = int(prefix_len.max())
            columns = np.arange(width)
            source = (target_pos - prefix_len)[:, None] + columns[None, :]
            valid = columns[None, :] < prefix_len[:, None]
            items = np.where(valid, table.items[np.where(valid, source, 0)], 0)
            yield PrefixBatch(torch.from_numpy(items.astype(np.int64)),
                              torch.from_numpy(prefix_len.astype(np.int64)),
                              torch.from_numpy(table.items[target_pos].astype(np.int64)),
                              torch.from_numpy(table.users[self.session_of[picked]]))


def prefix_batches(dataset: PreparedDataset, batch_size: int, max_length: int | None = None,
                   shuffle: bool = True, seed: int = 0) -> PrefixBatches:
    return PrefixBatches(training_sessions(dataset), batch_size, max_length, shuffle, seed)


def make_batches(kind: str, dataset: PreparedDataset, batch_size: int, *, steps: int = 1,
                 max_length: int | None = None, shuffle: bool = True,
                 seed: int = 0) -> ParallelBatches | PrefixBatches:
    """The batches for a model's ``batching`` kind (not ``counts``: that is not batched)."""
    if kind == "session-parallel":
        return session_parallel_batches(dataset, batch_size, steps, shuffle, seed)
    if kind == "user-parallel":
        return user_parallel_batches(dataset, batch_size, steps, shuffle, seed)
    if kind == "user-sequence":
        return user_parallel_batches(dataset, batch_size, steps, shuffle, seed)
    if kind == "prefix":
        return prefix_batches(dataset, batch_size, max_length, shuffle, seed)
    raise ValueError(f"unknown batching kind {kind!r}; known: session-parallel, user-parallel, "
                     "user-sequence, prefix (and counts for non-neural models)")
