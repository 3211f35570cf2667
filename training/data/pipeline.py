"""The ``nextclick prepare`` pipeline: canonical events -> ``PreparedDataset``.

Steps, in order (each one the way the papers describe it): sessionize and code the ids
(``sessionize``), optionally drop immediate repeats, filters (``filters``), split by
protocol (``splits``; test items unseen in train are dropped and test sessions left with
fewer than 2 clicks are dropped — for prefix/label tests: a line whose label is unseen,
or whose prefix becomes empty), validation sessions marked in train (kept whole, see
``splits.mark_valid``), vocabularies and indices (``vocabulary``), and ``stats.json``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from training.data.dataset import PreparedDataset
from training.data.filters import FilterReport, apply_filters, restrict_to_items
from training.data.readers import SYNTHETIC_EPOCH, ReaderOptions, read_events
from training.data.sessionize import (
    CodedEvents,
    code_column,
    decode_sessions,
    encode_events,
    order_sessions,
    remove_repeats,
)
from training.data.splits import (
    PROTOCOLS,
    last_fraction_of_sessions,
    last_session_per_user,
    mark_valid,
    sessions_ending_after,
    user_ratio_split,
)
from training.data.vocabulary import index_dataset

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
        test_ids = last_session_per_user(frame, 2)
        if test_ids.is_empty():
            raise ValueError("protocol 'last-session' needs users with at least 2 sessions; "
                             "none left (no user ids in the input?)")
        is_test = pl.col("session_id").is_in(test_ids.implode())
        train, test = frame.filter(~is_test), frame.filter(is_test)
        del frame
        valid_ids = last_session_per_user(train, 2) if opts.make_valid else None
    elif opts.protocol == "time":
        test_ids = sessions_ending_after(frame, opts.test_days)
        is_test = pl.col("session_id").is_in(test_ids.implode())
        train, test = frame.filter(~is_test), frame.filter(is_test)
        del frame
        if train.is_empty():
            raise ValueError(f"every session ends in the last {opts.test_days:g} day(s); "
                             "nothing left to train on (lower --test-days)")
        valid_ids = sessions_ending_after(train, opts.valid_days) if opts.make_valid else None
    elif opts.protocol == "given":
        assert coded_test is not None
        train = frame
        del frame
        has_label_targets = "target" in coded_test.columns
        test = order_sessions(coded_test)
        valid_ids = (last_fraction_of_sessions(train, opts.valid_fraction)
                     if opts.make_valid else None)
    else:  # user-ratio
        # this protocol names new sessions "<id>~test"/"<id>~valid": do it on the raw
        # ids, then code the sessions again (rank order must follow the new names)
        frame = decode_sessions(frame, vocab["session_id"])
        train, test = user_ratio_split(frame, opts.user_ratio, opts.min_user_events)
        del frame
        if test.is_empty():
            raise ValueError(f"protocol 'user-ratio' needs users with at least "
                             f"{opts.min_user_events} events; none left")
        valid_ids = None
        if opts.make_valid:
            # the same protocol once more inside train: per user, the later part of
            # their training events is the validation part
            fit, held = user_ratio_split(train, opts.user_ratio, opts.min_user_events,
                                          suffix="~valid")
            train = pl.concat([fit, held])
            valid_ids = held["session_id"].unique()
        # valid ids are train ids, so coding them alongside changes no code
        extra = [valid_ids.to_frame("session_id")] if valid_ids is not None else []
        recoded, _ = code_column([train, test, *extra], "session_id")
        train, test = recoded[0], recoded[1]
        valid_ids = recoded[2]["session_id"] if valid_ids is not None else None

    if valid_ids is not None and valid_ids.len():
        train = mark_valid(train, valid_ids)
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

    dataset = index_dataset(train, test, vocab)
    dataset.stats = _stats(dataset, opts, fmt, sources or [], raw, report, test_before)
    return dataset


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


def prepare_files(input_path: Path, fmt: str, options: PrepareOptions,
                  reader_options: ReaderOptions, out: Path,
                  test_path: Path | None = None) -> PreparedDataset:
    """Read a click log (and, for ``given``, its test file), prepare it and save the
    dataset folder ``out``. Options are checked before a big file is read."""
    options.resolved(fmt)
    if options.protocol != "given" and test_path is not None:
        raise ValueError("--test is only used with --protocol given")
    if options.protocol == "given" and test_path is None:
        raise ValueError("--protocol given needs --test PATH")
    events = read_events(input_path, fmt, reader_options)
    test_events = None
    sources = [str(input_path)]
    if test_path is not None:
        if fmt == "sessions":
            # benchmark files have no clock: start the test clock after the train one
            last_train_time = float(events["timestamp"].cast(pl.Float64).max()  # type: ignore[arg-type]
                                    or SYNTHETIC_EPOCH)
            reader_options.time_offset = last_train_time - SYNTHETIC_EPOCH + 86400.0
        test_events = read_events(test_path, fmt, reader_options, test=True)
        sources.append(str(test_path))
    if events.is_empty():
        raise ValueError(f"{input_path}: no events (after the event-type filter)")
    # code the ids now and drop the raw string frames before the heavy steps: on a
    # YOOCHOOSE-size log they are most of the memory
    coded = encode_events(events, test_events, options.session_gap)
    del events, test_events
    dataset = prepare_dataset(coded, options, fmt=fmt, sources=sources)
    dataset.save(out)
    return dataset
