"""Split protocols, each as its paper describes it: ``last-session`` (HRNN), ``time``
(GRU4Rec/NARM), ``given`` (benchmark files) and ``user-ratio`` (RUM); and the validation
sessions carved from train by the same protocol.
"""

from __future__ import annotations

import polars as pl

from training.data.filters import restrict_to_items
from training.data.sessionize import order_sessions

PROTOCOLS = ("last-session", "time", "given", "user-ratio")
DAY = 86400.0


def session_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per session: its user, first and last click time and first input row."""
    return (events.group_by("session_id")
            .agg(pl.col("user_id").first(), pl.col("timestamp").min().alias("_start"),
                 pl.col("timestamp").max().alias("_end"),
                 pl.col("_order").min().alias("_first_row")))


def mark_valid(train: pl.DataFrame, valid_sessions: pl.Series) -> pl.DataFrame:
    """Mark ``valid_sessions`` in ``train`` (adds the ``valid`` column).

    The test rule decides *which* sessions qualify: a candidate is marked only if it has
    at least 2 clicks on items seen in the fitting part (``valid == False``), so each
    marked session has a target a model fitted without it can hit. Its clicks are kept
    whole, though: dropping them would also drop their items from the vocabulary (built
    from all of train) and with them test clicks on those items, shrinking benchmark test
    sets (~6% of the Tmall test lines) just because a validation split was carved out.
    Targets on items unseen in the fitting part are counted in ``stats.json``."""
    is_candidate = pl.col("session_id").is_in(valid_sessions.implode())
    fit_items = train.filter(~is_candidate)["item_id"].unique()
    qualified = restrict_to_items(train.filter(is_candidate), fit_items, 2)
    marked = qualified["session_id"].unique()
    return train.with_columns(pl.col("session_id").is_in(marked.implode()).alias("valid"))


def last_session_per_user(events: pl.DataFrame, min_sessions: int) -> pl.Series:
    """Session id of each (non-anonymous) user's last session, for users with at least
    ``min_sessions`` sessions; "last" = latest start (then latest end, then file order)."""
    table = session_table(events).filter(pl.col("user_id").is_not_null())
    return (table.sort(["user_id", "_start", "_end", "_first_row"])
            .group_by("user_id", maintain_order=True)
            .agg(pl.col("session_id").last(), pl.len().alias("_n"))
            .filter(pl.col("_n") >= min_sessions)["session_id"])


def sessions_ending_after(events: pl.DataFrame, days: float) -> pl.Series:
    """Sessions whose last click is within ``days`` of the latest click (GRU4Rec:
    ``session_max_times >= tmax - 86400``)."""
    table = session_table(events)
    cutoff = float(table["_end"].max()) - days * DAY  # type: ignore[arg-type]
    return table.filter(pl.col("_end") >= cutoff)["session_id"]


def last_fraction_of_sessions(events: pl.DataFrame, fraction: float) -> pl.Series:
    """The latest ``fraction`` of sessions by start time (file order breaks ties, so
    files without timestamps split by order)."""
    table = session_table(events).sort(["_start", "_first_row"])
    n_valid = round(table.height * fraction)
    return table.tail(n_valid)["session_id"] if n_valid else pl.Series([], dtype=pl.Utf8)


def user_ratio_split(events: pl.DataFrame, ratio: float, min_events: int,
                      suffix: str = "~test") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per user with at least ``min_events`` events, the first ``ratio`` of their events
    (time order) is train and the rest test (RUM). A session cut by the boundary is split:
    its test part becomes a session of its own. Other users stay in train."""
    ranked = events.sort(["user_id", "timestamp", "_order"]).with_columns(
        pl.int_range(pl.len()).over("user_id").alias("_rank"),
        pl.len().over("user_id").alias("_count"))
    in_test = (pl.col("user_id").is_not_null() & (pl.col("_count") >= min_events)
               & (pl.col("_rank") >= (pl.col("_count").cast(pl.Float64) * ratio).ceil()))
    test = ranked.filter(in_test).with_columns(
        (pl.col("session_id") + pl.lit(suffix)).alias("session_id"))
    train = ranked.filter(~in_test)
    drop = ["_rank", "_count"]
    return order_sessions(train.drop(drop)), order_sessions(test.drop(drop))
