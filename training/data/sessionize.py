"""Sessionizing and id coding: canonical events -> sessions with integer-coded ids.

1. **Sessionize** rows without a session id per user by an idle gap (default 30 min;
   a gap of exactly ``session_gap`` seconds stays in the session, a longer one starts a
   new one, as in HRNN's ``make_sessions``: ``tdiff > session_th``). Anonymous rows
   without a session id cannot be sessionized: that is an error.
2. Optionally drop **immediate repeats** (the same item clicked twice in a row).

Memory (a 33M-row YOOCHOOSE file must prepare in a few GB): right after sessionizing,
``encode_events`` replaces the string ids by UInt32 codes and keeps each distinct raw id
once (``CodedEvents``), so every later sort, window and join runs on integers and only
the surviving items/users are turned back into text at the end. Session codes are the
ranks of the raw ids in sorted order, so the steps that break ties by session id order
sessions exactly as they would by the raw text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

#: the id columns ``encode_events`` turns into integer codes
ID_COLUMNS = ("user_id", "session_id", "item_id")
#: columns the pipeline reads; ``event_type`` (and any other reader column) is dropped
#: before the heavy steps so it is not carried through every sort and filter
_PIPELINE_COLUMNS = ("user_id", "session_id", "item_id", "timestamp", "_order", "target")


@dataclass
class CodedEvents:
    """Sessionized events whose id columns are UInt32 codes, with the raw ids behind them.

    ``vocab[column][code]`` is the raw id of ``code`` (each vocabulary is the sorted
    distinct non-null ids of train and test together, so a code means the same thing in
    both frames and code order is raw-id order). ``prepare_dataset`` takes the frames out
    of the object it is given (``take``) so a big input is not held twice while it runs.
    """

    events: pl.DataFrame
    test: pl.DataFrame | None
    vocab: dict[str, pl.Series]
    n_input_events: int
    _spent: bool = field(default=False, repr=False)

    def take(self) -> tuple[pl.DataFrame, pl.DataFrame | None]:
        """The frames, once: the object drops its references to them."""
        if self._spent:
            raise RuntimeError("these CodedEvents were already used by prepare_dataset")
        events, test = self.events, self.test
        self.events, self.test, self._spent = pl.DataFrame(), None, True
        return events, test


def code_column(frames: list[pl.DataFrame], column: str
                 ) -> tuple[list[pl.DataFrame], pl.Series]:
    """Replace ``column`` in every frame by its UInt32 position in the sorted distinct
    non-null values of all frames (nulls stay null); returns the frames and those values.

    A hash join against the (small) vocabulary is several times faster than a rank over
    the whole column for low-cardinality columns such as items, and just as fast for
    sessions; ``maintain_order`` keeps the frames' row order."""
    values = (pl.concat([frame.get_column(column) for frame in frames])
              if len(frames) > 1 else frames[0].get_column(column))
    vocab = values.drop_nulls().unique().sort()
    del values
    table = pl.DataFrame({column: vocab,
                          "_code": pl.int_range(vocab.len(), dtype=pl.UInt32, eager=True)})
    coded = []
    for frame in frames:
        codes = (frame.select(column)
                 .join(table, on=column, how="left", maintain_order="left")
                 .get_column("_code").alias(column))
        coded.append(frame.with_columns(codes))
    return coded, vocab


def encode_events(events: pl.DataFrame, test_events: pl.DataFrame | None = None,
                  session_gap: float = 1800.0) -> CodedEvents:
    """Sessionize canonical events (and a ``given`` test file's), then code their ids.

    Sessionizing runs first because generated session ids are built from the raw user
    id; everything after it only needs ids to compare equal and (sessions) to sort like
    the raw text, which the codes do. Columns the pipeline does not read are dropped."""
    n_input = events.height
    train = sessionize(events.drop("target", strict=False), session_gap)
    train = train.select([c for c in _PIPELINE_COLUMNS if c in train.columns])
    frames = [train]
    if test_events is not None:
        test = sessionize(test_events.with_row_index("_order"), session_gap)
        frames.append(test.select([c for c in _PIPELINE_COLUMNS if c in test.columns]))
    del train
    vocab: dict[str, pl.Series] = {}
    for column in ID_COLUMNS:
        frames, vocab[column] = code_column(frames, column)
    return CodedEvents(events=frames[0], test=frames[1] if len(frames) > 1 else None,
                       vocab=vocab, n_input_events=n_input)


def decode_sessions(frame: pl.DataFrame, sessions: pl.Series) -> pl.DataFrame:
    """Raw session ids back in place of their codes (for steps that build new ids)."""
    return frame.with_columns(sessions.gather(frame.get_column("session_id"))
                              .alias("session_id"))


# ---- steps -------------------------------------------------------------------------
def sessionize(events: pl.DataFrame, session_gap: float = 1800.0) -> pl.DataFrame:
    """Fill null ``session_id`` per user by idle gap. A new session starts when the time
    since the user's previous event is *greater than* ``session_gap`` seconds; generated
    ids are ``<user>~<n>`` (n counts from 0 per user). Rows that already have a session
    id are left alone. Adds ``_order`` (file order) when missing."""
    if "_order" not in events.columns:
        events = events.with_row_index("_order")
    missing = events.filter(pl.col("session_id").is_null())
    if missing.is_empty():
        return events
    anonymous = missing.filter(pl.col("user_id").is_null())
    if anonymous.height:
        raise ValueError(f"{anonymous.height} event(s) have neither a session id nor a user "
                         "id, so they cannot be sessionized (first at input row "
                         f"{int(anonymous['_order'][0]) + 1})")
    sessions = (
        missing.sort(["user_id", "timestamp", "_order"])
        .with_columns(
            (pl.col("timestamp").diff().over("user_id").fill_null(0.0) > session_gap)
            .cast(pl.Int64).cum_sum().over("user_id").alias("_n"))
        .with_columns((pl.col("user_id") + pl.lit("~") + pl.col("_n").cast(pl.Utf8))
                      .alias("session_id"))
        .drop("_n")
    )
    kept = events.filter(pl.col("session_id").is_not_null())
    return pl.concat([kept, sessions.select(kept.columns)]).sort("_order")


def order_sessions(events: pl.DataFrame) -> pl.DataFrame:
    """Clicks in time order within each session (ties keep file order); each session
    gets one user (its first non-null one) and ``_start``/``_end`` times."""
    return (
        events.sort(["session_id", "timestamp", "_order"])
        .with_columns(
            pl.col("user_id").drop_nulls().first().over("session_id").alias("user_id"),
            pl.col("timestamp").min().over("session_id").alias("_start"),
            pl.col("timestamp").max().over("session_id").alias("_end"),
        )
    )


def remove_repeats(events: pl.DataFrame) -> pl.DataFrame:
    """Drop a click on the same item as the click just before it in the same session
    (expects ``order_sessions`` order)."""
    previous = pl.col("item_id").shift(1).over("session_id")
    return events.filter(previous.is_null() | (pl.col("item_id") != previous))
