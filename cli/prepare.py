"""``nextclick prepare``: read a raw click log, cut it into sessions, filter it, split it by
an evaluation protocol and write a prepared dataset folder (train.parquet, test.parquet,
items.txt, users.txt, stats.json)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """examples:
  nextclick prepare --format csv --input data/synth.csv --protocol last-session --out data/synth
  nextclick prepare --format yoochoose --input train_full.txt --test test.txt \\
      --protocol given --out data/yoochoose
  nextclick prepare --format csv --input events.csv \\
      --columns item=itemid,user=visitorid,time=timestamp --protocol time --out data/shop

protocols: last-session (each user's last session is the test: HRNN), time (the last
day/week is the test: GRU4Rec, NARM), given (train and test files as provided), user-ratio
(per user, the first 70% of events train: RUM). Filters default to the protocol's."""


def register(subparsers: Any, help_text: str) -> None:
    from training.data.readers import FORMATS, TIME_UNITS
    from training.data.splits import PROTOCOLS

    parser = subparsers.add_parser(
        "prepare", help=help_text, description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="input format (session-rec = the yoochoose TSV)")
    parser.add_argument("--input", required=True, type=Path, help="the (training) click log")
    parser.add_argument("--test", type=Path, default=None,
                        help="test file for --protocol given")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS,
                        help="how to split train and test (see below)")
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    reading = parser.add_argument_group("reading")
    reading.add_argument("--columns", default=None,
                         help="csv column names by role, e.g. item=itemid,user=visitorid")
    reading.add_argument("--sep", default=None, help="field separator (default: sniffed)")
    reading.add_argument("--time-unit", choices=TIME_UNITS, default=None,
                         help="unit of the time column (default: sniffed)")
    reading.add_argument("--event-types", default=None,
                         help="comma-separated event types to keep (default: the format's)")
    shaping = parser.add_argument_group("sessions and filters")
    shaping.add_argument("--session-gap", type=float, default=1800.0,
                         help="idle seconds that end a session (default 1800)")
    shaping.add_argument("--dedupe-repeats", action="store_true",
                         help="drop a click on the same item as the click before it")
    shaping.add_argument("--min-item-support", type=int, default=None,
                         help="least events per item")
    shaping.add_argument("--min-session-length", type=int, default=None,
                         help="least clicks per session")
    shaping.add_argument("--min-user-sessions", type=int, default=None,
                         help="least sessions per user")
    shaping.add_argument("--iterative-filters", action=argparse.BooleanOptionalAction,
                         default=None, help="repeat the filters until nothing changes")
    split = parser.add_argument_group("split")
    split.add_argument("--test-days", type=float, default=None,
                       help="time protocol: days at the end that are test")
    split.add_argument("--valid-days", type=float, default=None,
                       help="time protocol: validation days before the test days")
    split.add_argument("--valid-fraction", type=float, default=0.1,
                       help="given protocol: latest share of train used for validation")
    split.add_argument("--user-ratio", type=float, default=0.7,
                       help="user-ratio protocol: share of each user's events in train")
    split.add_argument("--min-user-events", type=int, default=10,
                       help="user-ratio protocol: users with fewer events stay in train")
    split.add_argument("--no-valid", action="store_true",
                       help="mark no validation sessions (train on everything)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.data.pipeline import PrepareOptions, prepare_files, summary
    from training.data.readers import ReaderOptions, parse_column_mapping

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
    dataset = prepare_files(args.input, args.format, options, reader_options, args.out,
                            test_path=args.test)
    print(summary(dataset))
    return 0
