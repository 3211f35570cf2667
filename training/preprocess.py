"""Preprocessing: canonical events -> ``training.dataset.PreparedDataset``.

Steps, in order (each one the way the papers describe it):

1. **Sessionize** rows without a session id per user by an idle gap (default 30 min;
   a gap of exactly ``session_gap`` seconds stays in the session, a longer one starts a
   new one, as in HRNN's ``make_sessions``: ``tdiff > session_th``). Anonymous rows
   without a session id cannot be sessionized: that is an error.
2. Optionally drop **immediate repeats** (the same item clicked twice in a row).
3. **Filters**: minimum item support, minimum session length, minimum sessions per user.
   GRU4Rec applies them once (items >= 5, then sessions >= 2); HRNN's XING builder
   repeats them until nothing changes, which ``iterative`` does.
4. **Split** by protocol: ``last-session`` (HRNN), ``time`` (GRU4Rec/NARM), ``given``
   (benchmark files) or ``user-ratio`` (RUM). Test items unseen in train are dropped and
   test sessions left with fewer than 2 clicks are dropped (for prefix/label tests: a
   line whose label is unseen, or whose prefix becomes empty).
5. **Validation** sessions are carved from train by the same protocol and marked
   ``valid`` when they have at least 2 clicks on items of the fitting part (kept whole:
   see ``_mark_valid``); the others simply stay training sessions.
6. **Vocabularies** from train only (index 0 = padding / anonymous), in order of first
   appearance in time; dense session indices unique across train and test; rows ordered
   by user, session start, click order (the ``training.dataset`` contract).

Memory (DESIGN §2: a 33M-row YOOCHOOSE file must prepare in a few GB): right after
sessionizing, ``encode_events`` replaces the string ids by UInt32 codes and keeps each
distinct raw id once (``CodedEvents``), so every sort, window and join of steps 2-6 runs
on integers and only the surviving items/users are turned back into text at the end.
Session codes are the ranks of the raw ids in sorted order, so the steps that break
ties by session id order sessions exactly as they would by the raw text: the output is
the same as running the steps on the strings themselves.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from training.dataset import TEST_SCHEMA, TRAIN_SCHEMA, PreparedDataset

PROTOCOLS = ("last-session", "time", "given", "user-ratio")
DAY = 86400.0

#: protocol -> default (min item support, min session length, min sessions per user,
#: iterate filters until stable). ``given`` keeps the files as provided.
PROTOCOL_FILTER_DEFAULTS: dict[str, tuple[int, int, int, bool]] = {
    "last-session": (5, 2, 2, True),
    "time": (5, 2, 1, False),
    "given": (1, 1, 1, False),
    "user-ratio": (5, 2, 1, True),
}
#: format -> default ``--test-days`` for the time protocol (GRU4Rec: last day of
#: YOOCHOOSE; NARM/SR-GNN: last week of DIGINETICA)
TEST_DAYS_BY_FORMAT = {"yoochoose": 1.0, "session-rec": 1.0, "diginetica": 7.0}


@dataclass
class PrepareOptions:
    """Everything that shapes a prepared dataset; ``None`` means the protocol default
    (see ``resolved``). Stored in ``stats.json`` so a dataset says how it was made."""

    protocol: str = "last-session"
    session_gap: float = 1800.0
    dedupe_repeats: bool = False
    min_item_support: int | None = None
    min_session_length: int | None = None
    min_user_sessions: int | None = None
    iterative_filters: bool | None = None
    test_days: float | None = None
    valid_days: float | None = None
    valid_fraction: float = 0.1
    user_ratio: float = 0.7
    min_user_events: int = 10
    make_valid: bool = True

    def resolved(self, fmt: str = "") -> PrepareOptions:
        """A copy with every ``None`` replaced by the protocol's (or format's) default."""
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; expected one of "
                             f"{', '.join(PROTOCOLS)}")
        items, length, users, iterative = PROTOCOL_FILTER_DEFAULTS[self.protocol]
        test_days = self.test_days if self.test_days is not None else TEST_DAYS_BY_FORMAT.get(
            fmt, 1.0)
        out = PrepareOptions(**asdict(self))
        out.min_item_support = items if self.min_item_support is None else self.min_item_support
        out.min_session_length = (length if self.min_session_length is None
                                  else self.min_session_length)
        out.min_user_sessions = users if self.min_user_sessions is None else self.min_user_sessions
        out.iterative_filters = (iterative if self.iterative_filters is None
                                 else self.iterative_filters)
        out.test_days = test_days
        out.valid_days = self.valid_days if self.valid_days is not None else test_days
        out.validate()
        return out

    def validate(self) -> None:
        if self.session_gap <= 0:
            raise ValueError(f"--session-gap must be positive, got {self.session_gap}")
        for name in ("min_item_support", "min_session_length", "min_user_sessions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        for name in ("test_days", "valid_days"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"--valid-fraction must be in (0, 1), got {self.valid_fraction}")
        if not 0.0 < self.user_ratio < 1.0:
            raise ValueError(f"--user-ratio must be in (0, 1), got {self.user_ratio}")


@dataclass
class FilterReport:
    """What the filters removed (for stats.json)."""

    rounds: int = 0
    events_before: int = 0
    events_after: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {
        "rare_item_events": 0, "short_session_events": 0, "light_user_events": 0})


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


def _code_column(frames: list[pl.DataFrame], column: str
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
        frames, vocab[column] = _code_column(frames, column)
    return CodedEvents(events=frames[0], test=frames[1] if len(frames) > 1 else None,
                       vocab=vocab, n_input_events=n_input)


def _decode_sessions(frame: pl.DataFrame, sessions: pl.Series) -> pl.DataFrame:
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


def _session_table(events: pl.DataFrame) -> pl.DataFrame:
    return (events.group_by("session_id")
            .agg(pl.col("user_id").first(), pl.col("timestamp").min().alias("_start"),
                 pl.col("timestamp").max().alias("_end"),
                 pl.col("_order").min().alias("_first_row")))


def _mark_valid(train: pl.DataFrame, valid_sessions: pl.Series) -> pl.DataFrame:
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


def _last_session_per_user(events: pl.DataFrame, min_sessions: int) -> pl.Series:
    """Session id of each (non-anonymous) user's last session, for users with at least
    ``min_sessions`` sessions; "last" = latest start (then latest end, then file order)."""
    table = _session_table(events).filter(pl.col("user_id").is_not_null())
    return (table.sort(["user_id", "_start", "_end", "_first_row"])
            .group_by("user_id", maintain_order=True)
            .agg(pl.col("session_id").last(), pl.len().alias("_n"))
            .filter(pl.col("_n") >= min_sessions)["session_id"])


def _sessions_ending_after(events: pl.DataFrame, days: float) -> pl.Series:
    """Sessions whose last click is within ``days`` of the latest click (GRU4Rec:
    ``session_max_times >= tmax - 86400``)."""
    table = _session_table(events)
    cutoff = float(table["_end"].max()) - days * DAY  # type: ignore[arg-type]
    return table.filter(pl.col("_end") >= cutoff)["session_id"]


def _last_fraction_of_sessions(events: pl.DataFrame, fraction: float) -> pl.Series:
    """The latest ``fraction`` of sessions by start time (file order breaks ties, so
    files without timestamps split by order)."""
    table = _session_table(events).sort(["_start", "_first_row"])
    n_valid = round(table.height * fraction)
    return table.tail(n_valid)["session_id"] if n_valid else pl.Series([], dtype=pl.Utf8)


def _user_ratio_split(events: pl.DataFrame, ratio: float, min_events: int,
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


# ---- the whole pipeline ------------------------------------------------------------
def prepare_dataset(events: pl.DataFrame | CodedEvents, options: PrepareOptions,
                    test_events: pl.DataFrame | None = None, *, fmt: str = "",
                    sources: list[str] | None = None) -> PreparedDataset:
    """Canonical events (and, for ``given``, the test file's events) -> a
    ``PreparedDataset`` with vocabularies and ``stats``. Raises ``ValueError`` when the
    data or options leave nothing to train or test on.

    ``events`` may also be ``encode_events``' result (test events included): the CLI
    codes the ids itself so the raw string frame can be freed before this runs; the
    ``CodedEvents`` is used up."""
    opts = options.resolved(fmt)
    assert opts.min_item_support is not None and opts.min_session_length is not None
    assert opts.min_user_sessions is not None and opts.iterative_filters is not None
    assert opts.test_days is not None and opts.valid_days is not None
    if isinstance(events, CodedEvents):
        if test_events is not None:
            raise ValueError("pass the test events to encode_events, not prepare_dataset")
        has_test = events.test is not None
    else:
        has_test = test_events is not None
    if opts.protocol == "given" and not has_test:
        raise ValueError("protocol 'given' needs a test file (--test)")
    if opts.protocol != "given" and has_test:
        raise ValueError(f"--test is only used with --protocol given (got {opts.protocol!r})")
    if isinstance(events, CodedEvents):
        coded = events
    else:
        if events.is_empty():
            raise ValueError("the input has no events (after the event-type filter)")
        coded = encode_events(events, test_events, opts.session_gap)
        del events, test_events  # the caller may still hold them; we no longer do
    vocab = coded.vocab
    raw = {"events": coded.n_input_events}
    coded_events, coded_test = coded.take()
    if coded_events.is_empty():
        raise ValueError("the input has no events (after the event-type filter)")

    frame = order_sessions(coded_events)
    del coded_events
    raw["sessions"] = int(frame["session_id"].n_unique())
    raw["users"] = int(frame["user_id"].drop_nulls().n_unique())
    raw["items"] = int(frame["item_id"].n_unique())
    if opts.dedupe_repeats:
        frame = remove_repeats(frame)
    frame, report = apply_filters(frame, opts.min_item_support, opts.min_session_length,
                                  opts.min_user_sessions, opts.iterative_filters)
    if frame.is_empty():
        raise ValueError("no events left after the filters (min item support "
                         f"{opts.min_item_support}, min session length "
                         f"{opts.min_session_length}, min sessions per user "
                         f"{opts.min_user_sessions}); lower them for small data")

    # ---- split --------------------------------------------------------------------
    has_label_targets = False
    if opts.protocol == "last-session":
        test_ids = _last_session_per_user(frame, 2)
        if test_ids.is_empty():
            raise ValueError("protocol 'last-session' needs users with at least 2 sessions; "
                             "none left (no user ids in the input?)")
        is_test = pl.col("session_id").is_in(test_ids.implode())
        train, test = frame.filter(~is_test), frame.filter(is_test)
        del frame
        valid_ids = _last_session_per_user(train, 2) if opts.make_valid else None
    elif opts.protocol == "time":
        test_ids = _sessions_ending_after(frame, opts.test_days)
        is_test = pl.col("session_id").is_in(test_ids.implode())
        train, test = frame.filter(~is_test), frame.filter(is_test)
        del frame
        if train.is_empty():
            raise ValueError(f"every session ends in the last {opts.test_days:g} day(s); "
                             "nothing left to train on (lower --test-days)")
        valid_ids = _sessions_ending_after(train, opts.valid_days) if opts.make_valid else None
    elif opts.protocol == "given":
        assert coded_test is not None
        train = frame
        del frame
        has_label_targets = "target" in coded_test.columns
        test = order_sessions(coded_test)
        valid_ids = (_last_fraction_of_sessions(train, opts.valid_fraction)
                     if opts.make_valid else None)
    else:  # user-ratio
        # this protocol names new sessions "<id>~test"/"<id>~valid": do it on the raw
        # ids, then code the sessions again (rank order must follow the new names)
        frame = _decode_sessions(frame, vocab["session_id"])
        train, test = _user_ratio_split(frame, opts.user_ratio, opts.min_user_events)
        del frame
        if test.is_empty():
            raise ValueError(f"protocol 'user-ratio' needs users with at least "
                             f"{opts.min_user_events} events; none left")
        valid_ids = None
        if opts.make_valid:
            # the same protocol once more inside train: per user, the later part of
            # their training events is the validation part
            fit, held = _user_ratio_split(train, opts.user_ratio, opts.min_user_events,
                                          suffix="~valid")
            train = pl.concat([fit, held])
            valid_ids = held["session_id"].unique()
        # valid ids are train ids, so coding them alongside changes no code
        extra = [valid_ids.to_frame("session_id")] if valid_ids is not None else []
        recoded, _ = _code_column([train, test, *extra], "session_id")
        train, test = recoded[0], recoded[1]
        valid_ids = recoded[2]["session_id"] if valid_ids is not None else None

    if valid_ids is not None and valid_ids.len():
        train = _mark_valid(train, valid_ids)
    else:
        train = train.with_columns(pl.lit(False).alias("valid"))

    test_before = {"events": test.height, "sessions": int(test["session_id"].n_unique())}
    known_items = train["item_id"].unique()
    test = restrict_to_items(test, known_items, 2)
    if not has_label_targets:
        test = test.with_columns(
            (pl.int_range(pl.len()).over("session_id") > 0).alias("target"))
    if test.is_empty():
        raise ValueError("no test sessions left after dropping items unseen in train and "
                         "sessions shorter than 2 clicks")

    dataset = _index(train, test, vocab)
    dataset.stats = _stats(dataset, opts, fmt, sources or [], raw, report, test_before)
    return dataset


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


def _index(train: pl.DataFrame, test: pl.DataFrame,
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


def split_counts(frame: pl.DataFrame) -> dict[str, int]:
    """events / sessions / users (non-anonymous) / items of one indexed split."""
    return {
        "events": frame.height,
        "sessions": int(frame["session"].n_unique()) if frame.height else 0,
        "users": int(frame.filter(pl.col("user") > 0)["user"].n_unique()) if frame.height else 0,
        "items": int(frame["item"].n_unique()) if frame.height else 0,
    }


def _stats(dataset: PreparedDataset, opts: PrepareOptions, fmt: str, sources: list[str],
           raw: dict[str, int], report: FilterReport,
           test_before: dict[str, int]) -> dict[str, Any]:
    fit = dataset.train.filter(~pl.col("valid"))
    valid = dataset.train.filter(pl.col("valid"))
    test = dataset.test
    valid_flags = valid.with_columns(
        (pl.int_range(pl.len()).over("session") > 0).alias("_target"),
        pl.col("item").is_in(fit["item"].unique().implode()).alias("_known"))
    valid_targets = int(valid_flags["_target"].sum()) if valid.height else 0
    valid_unknown = int((valid_flags["_target"] & ~valid_flags["_known"]).sum()) \
        if valid.height else 0
    counts = {
        "input": raw,
        "train": split_counts(dataset.train),
        "fit": split_counts(fit),
        "valid": {**split_counts(valid), "targets": valid_targets,
                  "targets_unseen_in_fit": valid_unknown},
        "test": {**split_counts(test), "targets": int(test["target"].sum())},
        "n_items": dataset.n_items,
        "n_users": dataset.n_users,
    }
    return {
        "format": fmt,
        "protocol": opts.protocol,
        "options": asdict(opts),
        "sources": sources,
        "counts": counts,
        "filters": asdict(report),
        "test_before_unseen_item_removal": test_before,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def summary(dataset: PreparedDataset) -> str:
    """One paragraph for the CLI."""
    stats = dataset.stats
    counts = stats["counts"]
    fit, valid, test = counts["fit"], counts["valid"], counts["test"]
    where = f" in {dataset.path}" if dataset.path else ""
    return (
        f"Prepared {stats.get('format') or 'events'} with protocol {stats['protocol']}{where}: "
        f"{counts['input']['events']:,} input events -> {dataset.n_items:,} items, "
        f"{dataset.n_users:,} users. Train {fit['events']:,} events in {fit['sessions']:,} "
        f"sessions ({fit['users']:,} users); valid {valid['events']:,} events in "
        f"{valid['sessions']:,} sessions; test {test['events']:,} events in "
        f"{test['sessions']:,} sessions ({test['users']:,} users) with "
        f"{test['targets']:,} targets. Fingerprint {dataset.fingerprint or '-'}."
    )
