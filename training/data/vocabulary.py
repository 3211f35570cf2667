"""Vocabularies and indices: item and user vocabularies from train only (index 0 =
padding / anonymous), in order of first appearance in time; dense session indices unique
across train and test; rows ordered by user, session start, click order (the
``training.data.dataset`` contract).
"""

from __future__ import annotations

import polars as pl

from training.data.dataset import TEST_SCHEMA, TRAIN_SCHEMA, PreparedDataset


def _first_appearance(frame: pl.DataFrame, column: str) -> pl.Series:
    """Distinct non-null values of ``column`` in order of first appearance in time
    (only the sort keys and ``column`` are sorted, not the whole frame)."""
    keys = ["timestamp", "_start", "session_id", "_order"]
    ordered = frame.select(*keys, column).sort(keys)
    return ordered[column].drop_nulls().unique(maintain_order=True)


def _refresh_times(frame: pl.DataFrame) -> pl.DataFrame:
    """Session start/end again: filters and unseen-item removal may have dropped clicks
    since ``order_sessions`` computed them."""
    return frame.with_columns(
        pl.col("timestamp").min().over("session_id").alias("_start"),
        pl.col("timestamp").max().over("session_id").alias("_end"))


def index_dataset(train: pl.DataFrame, test: pl.DataFrame,
           vocab: dict[str, pl.Series]) -> PreparedDataset:
    """Vocabularies from train; int indices; the contract's row order and dense session
    indices (train first, then test). ``vocab`` turns the id codes back into raw ids."""
    train, test = _refresh_times(train), _refresh_times(test)
    item_codes = _first_appearance(train, "item_id")
    user_codes = _first_appearance(train, "user_id")
    items = [str(v) for v in vocab["item_id"].gather(item_codes)]
    users = [str(v) for v in vocab["user_id"].gather(user_codes)]
    item_index = pl.DataFrame({"item_id": item_codes,
                               "item": pl.int_range(1, len(items) + 1, eager=True)},
                              schema={"item_id": item_codes.dtype, "item": pl.Int32})
    user_index = pl.DataFrame({"user_id": user_codes,
                               "user": pl.int_range(1, len(users) + 1, eager=True)},
                              schema={"user_id": user_codes.dtype, "user": pl.Int32})

    def encode(frame: pl.DataFrame, flag: str, first_session: int) -> pl.DataFrame:
        coded = (frame.join(item_index, on="item_id", how="left")
                 .join(user_index, on="user_id", how="left")
                 .with_columns(pl.col("user").fill_null(0)))
        order = coded.sort(["user", "_start", "_end", "session_id", "timestamp", "_order"])
        session_rank = (pl.col("session_id").rle_id() + first_session).cast(pl.Int64)
        return order.with_columns(session_rank.alias("session")).select(
            "user", "session", "item", "timestamp", flag)

    train_out = encode(train, "valid", 0).cast(TRAIN_SCHEMA)  # type: ignore[arg-type]
    del train
    n_train_sessions = train_out["session"].n_unique()  # dense 0..n-1
    test_out = encode(test, "target", n_train_sessions).cast(TEST_SCHEMA)  # type: ignore[arg-type]
    return PreparedDataset(train=train_out, test=test_out, items=items, users=users)
