"""What an evaluation scores, as flat numpy arrays: the target sessions of a split and
every target user's history sessions (the HRNN protocol's bootstrap), grouped once so
batches can be sliced without per-session Python objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from training.data.dataset import PreparedDataset
from training.evaluation.metrics import (
    popularity_percentiles,
)

Split = Literal["test", "valid"]


@dataclass
class SessionArrays:
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


def group_sessions(frame: pl.DataFrame, target_column: str | None) -> SessionArrays:
    """Group a dataset frame (with a ``_row`` column) into ``SessionArrays``. With no
    ``target_column`` every click after a session's first is a target."""
    if frame.height == 0:
        empty = np.zeros(0, np.int64)
        return SessionArrays(empty, empty, empty, np.zeros(1, np.int64), empty, np.zeros(0, bool))
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
    return SessionArrays(
        session=grouped["session"].to_numpy().astype(np.int64),
        user=grouped["user"].to_numpy().astype(np.int64),
        row=grouped["_row"].to_numpy().astype(np.int64),
        offsets=offsets, items=items, targets=targets)


def check_items(frame: pl.DataFrame, n_items: int, where: str) -> None:
    if frame.height == 0:
        return
    low, high = frame["item"].min(), frame["item"].max()
    if low is None or high is None or int(low) < 0 or int(high) > n_items:  # type: ignore[arg-type]
        bad = frame.filter((pl.col("item") < 0) | (pl.col("item") > n_items)).row(0, named=True)
        raise ValueError(f"{where}: item index {bad['item']} (session {bad['session']}) is "
                         f"outside 0..{n_items}, the model's catalogue; was the model trained "
                         f"on this dataset?")


@dataclass
class Cases:
    """Target sessions plus, per target, the contiguous range of its history sessions."""

    targets: SessionArrays
    history: SessionArrays  # sorted by (user, row); only users != 0
    history_start: np.ndarray  # int64 [cases]
    history_count: np.ndarray  # int64 [cases]
    popularity: np.ndarray  # float64 [n_items + 1] percentile of the fitting clicks


def build_cases(dataset: PreparedDataset, split: Split, n_items: int) -> Cases:
    train = dataset.train.with_row_index("_row")
    if split == "test":
        check_items(dataset.test, n_items, "test.parquet")
        target_frame = dataset.test.with_row_index("_row")
        targets = group_sessions(target_frame, "target")
        history_frame = train
    elif split == "valid":
        target_frame = train.filter(pl.col("valid"))
        targets = group_sessions(target_frame, None)
        history_frame = train.filter(~pl.col("valid"))
    else:
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    check_items(dataset.train, n_items, "train.parquet")

    counts, history = user_histories(history_frame, n_items)

    # A user's history is one contiguous run of the (user, row)-sorted sessions.
    start = np.searchsorted(history.user, targets.user, side="left")
    if split == "test":
        stop = np.searchsorted(history.user, targets.user, side="right")
    else:
        stride = int(max(history.row.max(initial=0), targets.row.max(initial=0))) + 1
        keys = history.user * stride + history.row
        stop = np.searchsorted(keys, targets.user * stride + targets.row, side="left")
    count = np.where(targets.user != 0, stop - start, 0).astype(np.int64)
    return Cases(targets, history, start.astype(np.int64), count, popularity_percentiles(counts))


def user_histories(history_frame: pl.DataFrame, n_items: int) -> tuple[np.ndarray, SessionArrays]:
    """Item click counts of the history [N+1] and the known users' history sessions,
    sorted by (user, row) so each user's history is one contiguous run."""
    counts = np.bincount(history_frame["item"].to_numpy().astype(np.int64),
                         minlength=n_items + 1)[: n_items + 1]
    history = group_sessions(history_frame.filter(pl.col("user") != 0), None)
    order = np.lexsort((history.row, history.user))
    if len(history) and not np.array_equal(order, np.arange(len(history))):
        history = _reorder(history, order)
    return counts, history


def _reorder(sessions: SessionArrays, order: np.ndarray) -> SessionArrays:
    lengths = sessions.lengths[order]
    offsets = np.zeros(order.size + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    take = np.repeat(sessions.offsets[order], lengths) + within
    return SessionArrays(sessions.session[order], sessions.user[order], sessions.row[order],
                     offsets, sessions.items[take], sessions.targets[take])
