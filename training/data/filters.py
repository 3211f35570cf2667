"""Filters: minimum item support, minimum session length, minimum sessions per user
(GRU4Rec applies them once: items >= 5, then sessions >= 2; HRNN's XING builder repeats
them until nothing changes, which ``iterative`` does), and the restriction of test
sessions to items seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass
class FilterReport:
    """What the filters removed (for stats.json)."""

    rounds: int = 0
    events_before: int = 0
    events_after: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {
        "rare_item_events": 0, "short_session_events": 0, "light_user_events": 0})


def apply_filters(events: pl.DataFrame, min_item_support: int, min_session_length: int,
                  min_user_sessions: int, iterative: bool) -> tuple[pl.DataFrame, FilterReport]:
    """Items with at least ``min_item_support`` events, then sessions with at least
    ``min_session_length`` clicks, then users with at least ``min_user_sessions``
    sessions (anonymous sessions are not subject to the user filter); repeated until
    nothing changes when ``iterative``."""
    report = FilterReport(events_before=events.height)
    while True:
        report.rounds += 1
        before = events.height
        if min_item_support > 1:
            kept = events.filter(pl.len().over("item_id") >= min_item_support)
            report.removed["rare_item_events"] += events.height - kept.height
            events = kept
        if min_session_length > 1:
            kept = events.filter(pl.len().over("session_id") >= min_session_length)
            report.removed["short_session_events"] += events.height - kept.height
            events = kept
        if min_user_sessions > 1:
            kept = events.filter(
                pl.col("user_id").is_null()
                | (pl.col("session_id").n_unique().over("user_id") >= min_user_sessions))
            report.removed["light_user_events"] += events.height - kept.height
            events = kept
        if not iterative or events.height == before or events.is_empty():
            break
    report.events_after = events.height
    return events, report


def restrict_to_items(sessions: pl.DataFrame, known: pl.Series,
                      min_length: int = 2) -> pl.DataFrame:
    """Drop clicks on items not in ``known``, then sessions shorter than ``min_length``.
    With a ``target`` column (prefix/label tests), a session whose target click was
    dropped, or that has no click before its target, is dropped instead."""
    kept = sessions.filter(pl.col("item_id").is_in(known.implode()))
    if "target" in kept.columns and kept["target"].null_count() < kept.height:
        has_target = pl.col("target").any().over("session_id")
        return kept.filter(has_target & (pl.len().over("session_id") >= min_length))
    return kept.filter(pl.len().over("session_id") >= min_length)
