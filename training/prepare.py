"""``nextclick prepare``: read a raw click log, sessionize, filter, split by protocol and
write a prepared-dataset folder (``training.dataset``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from training.dataset import PreparedDataset
from training.preprocess import (
    PROTOCOLS,
    PrepareOptions,
    encode_events,
    prepare_dataset,
    summary,
)
from training.readers import (
    FORMATS,
    SYNTHETIC_EPOCH,
    TIME_UNITS,
    ReaderOptions,
    parse_column_mapping,
    read_events,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "prepare", help="raw click log -> prepared dataset folder",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="input format (session-rec = the yoochoose TSV)")
    parser.add_argument("--input", required=True, type=Path, help="the (training) click log")
    parser.add_argument("--test", type=Path, default=None,
                        help="test file for --protocol given (for --format sessions: the "
                             "prefix<TAB>label file)")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    reading = parser.add_argument_group("reading")
    reading.add_argument("--columns", default=None,
                         help="csv: role=column pairs, e.g. item=itemid,user=visitorid,"
                              "time=timestamp,session=sid,type=event (default: item_id, "
                              "user_id, timestamp, session_id, event_type when present)")
    reading.add_argument("--sep", default=None,
                         help="csv/diginetica separator (default: sniffed from , TAB ;)")
    reading.add_argument("--time-unit", choices=TIME_UNITS, default=None,
                         help="unit of the time column (default: the format's, or sniffed)")
    reading.add_argument("--event-types", default=None,
                         help="comma-separated event types to keep (default: pv for taobao, "
                              "view for retailrocket events.csv, clicks for otto, all else)")
    shaping = parser.add_argument_group("sessions and filters (default: the protocol's)")
    shaping.add_argument("--session-gap", type=float, default=1800.0,
                         help="idle seconds that end a session when no session id is given")
    shaping.add_argument("--dedupe-repeats", action="store_true",
                         help="drop a click on the same item as the click before it")
    shaping.add_argument("--min-item-support", type=int, default=None,
                         help="min events per item (last-session/time/user-ratio 5, given 1)")
    shaping.add_argument("--min-session-length", type=int, default=None,
                         help="min clicks per session (given 1, else 2)")
    shaping.add_argument("--min-user-sessions", type=int, default=None,
                         help="min sessions per user (last-session 2, else 1)")
    shaping.add_argument("--iterative-filters", action=argparse.BooleanOptionalAction,
                         default=None,
                         help="repeat the filters until stable (last-session, user-ratio)")
    split = parser.add_argument_group("split")
    split.add_argument("--test-days", type=float, default=None,
                       help="time: sessions ending in the last N days are test (default 1; "
                            "7 for diginetica)")
    split.add_argument("--valid-days", type=float, default=None,
                       help="time: validation window at the end of train (default --test-days)")
    split.add_argument("--valid-fraction", type=float, default=0.1,
                       help="given: latest fraction of train sessions marked valid")
    split.add_argument("--user-ratio", type=float, default=0.7,
                       help="user-ratio: fraction of each user's events in train")
    split.add_argument("--min-user-events", type=int, default=10,
                       help="user-ratio: users with fewer events stay in train only")
    split.add_argument("--no-valid", action="store_true",
                       help="do not mark validation sessions")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    event_types = ([t.strip() for t in args.event_types.split(",") if t.strip()]
                   if args.event_types else None)
    reader_options = ReaderOptions(columns=parse_column_mapping(args.columns), sep=args.sep,
                                   time_unit=args.time_unit, event_types=event_types,
                                   progress=sys.stderr.isatty())
    options = PrepareOptions(
        protocol=args.protocol, session_gap=args.session_gap,
        dedupe_repeats=args.dedupe_repeats, min_item_support=args.min_item_support,
        min_session_length=args.min_session_length, min_user_sessions=args.min_user_sessions,
        iterative_filters=args.iterative_filters, test_days=args.test_days,
        valid_days=args.valid_days, valid_fraction=args.valid_fraction,
        user_ratio=args.user_ratio, min_user_events=args.min_user_events,
        make_valid=not args.no_valid)
    options.resolved(args.format)  # reject bad options before reading a big file
    if args.protocol != "given" and args.test is not None:
        raise ValueError("--test is only used with --protocol given")
    if args.protocol == "given" and args.test is None:
        raise ValueError("--protocol given needs --test PATH")
    events = read_events(args.input, args.format, reader_options)
    test_events = None
    sources = [str(args.input)]
    if args.test is not None:
        if args.format == "sessions":
            # benchmark files have no clock: start the test clock after the train one
            last_train_time = float(events["timestamp"].cast(pl.Float64).max()  # type: ignore[arg-type]
                                    or SYNTHETIC_EPOCH)
            reader_options.time_offset = last_train_time - SYNTHETIC_EPOCH + 86400.0
        test_events = read_events(args.test, args.format, reader_options, test=True)
        sources.append(str(args.test))
    if events.is_empty():
        raise ValueError(f"{args.input}: no events (after the event-type filter)")
    # code the ids now and drop the raw string frames before the heavy steps: on a
    # YOOCHOOSE-size log they are most of the memory (DESIGN §2)
    coded = encode_events(events, test_events, options.session_gap)
    del events, test_events
    dataset: PreparedDataset = prepare_dataset(coded, options, fmt=args.format,
                                               sources=sources)
    dataset.save(args.out)
    print(summary(dataset))
    return 0
