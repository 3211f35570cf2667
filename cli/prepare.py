"""``nextclick prepare``: read a raw click log, cut it into sessions, filter it, split it by
an evaluation protocol and write a prepared dataset folder (train and test sessions, the
item and user lists, statistics, and the item catalogue when there is one)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe

EPILOG = """examples:
  nextclick prepare --format csv --input data/synth.csv --protocol last-session --out data/synth
  nextclick prepare --format movielens --input ml/ratings.csv --protocol last-session --out data/ml
  nextclick prepare --format yoochoose --input train_full.txt --test test.txt \\
      --protocol given --out data/yoochoose
  nextclick prepare --format csv --input events.csv \\
      --columns item=itemid,user=visitorid,time=timestamp --protocol time --out data/shop

protocols:
  last-session  each user's last session is the test set (HRNN)
  time          the last day or week is the test set (GRU4Rec, NARM)
  given         train and test files as provided (--test)
  user-ratio    per user, the first 70% of events train, the rest test (RUM)

filter defaults by protocol (least events per item / clicks per session / sessions per
user, repeated until nothing changes or once):
{filters}

item titles: a catalogue next to the log is kept in the dataset (catalog.csv) and shown by
the demo page: <name>.items.csv from `nextclick synth`, movies.csv next to MovieLens
ratings.csv, or any CSV given with --catalog."""


def register(subparsers: Any, help_text: str) -> None:
    from training.data.pipeline import PROTOCOL_FILTER_DEFAULTS
    from training.data.readers import FORMATS, TIME_UNITS
    from training.data.splits import PROTOCOLS

    filters = "\n".join(
        f"  {protocol:<13} {items}/{length}/{users}{' repeated' if repeated else ''}"
        for protocol, (items, length, users, repeated) in PROTOCOL_FILTER_DEFAULTS.items())
    parser = subparsers.add_parser(
        "prepare", help=help_text, description=describe(__doc__),
        epilog=EPILOG.format(filters=filters),
        formatter_class=HelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS, metavar="FORMAT",
                        help=f"input format: {', '.join(FORMATS)} (session-rec is the "
                             "yoochoose TSV)")
    parser.add_argument("--input", required=True, type=Path, metavar="FILE",
                        help="the click log (the training file for --protocol given)")
    parser.add_argument("--test", type=Path, default=None, metavar="FILE",
                        help="test file, for --protocol given only")
    parser.add_argument("--protocol", required=True, choices=PROTOCOLS, metavar="PROTOCOL",
                        help=f"how to split train and test: {', '.join(PROTOCOLS)} (see "
                             "below)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="dataset folder to write")
    parser.add_argument("--catalog", type=Path, default=None, metavar="FILE",
                        help="item titles: a CSV with item_id and title columns, and "
                             "optionally category (default: found next to the log; see "
                             "below)")
    parser.add_argument("--no-catalog", action="store_true",
                        help="keep no item titles, even when a catalogue is found")
    reading = parser.add_argument_group("reading")
    reading.add_argument("--columns", default=None, metavar="ROLE=NAME,...",
                         help="csv column names by role (item, user, time, session, type), "
                              "e.g. item=itemid,user=visitorid")
    reading.add_argument("--sep", default=None, metavar="CHAR",
                         help="field separator (default: guessed from the first lines)")
    reading.add_argument("--time-unit", choices=TIME_UNITS, default=None, metavar="UNIT",
                         help="unit of the time column: s, ms or iso (default: guessed)")
    reading.add_argument("--event-types", default=None, metavar="TYPE,...",
                         help="event types to keep (default: the format's clicks or views)")
    shaping = parser.add_argument_group("sessions and filters")
    shaping.add_argument("--session-gap", type=float, default=1800.0, metavar="SECONDS",
                         help="idle time that ends a session when the log has no session "
                              "ids (default 1800)")
    shaping.add_argument("--dedupe-repeats", action="store_true",
                         help="drop a click on the same item as the click before it")
    shaping.add_argument("--min-item-support", type=int, default=None, metavar="N",
                         help="least events per item (default: the protocol's, see below)")
    shaping.add_argument("--min-session-length", type=int, default=None, metavar="N",
                         help="least clicks per session (default: the protocol's)")
    shaping.add_argument("--min-user-sessions", type=int, default=None, metavar="N",
                         help="least sessions per user (default: the protocol's)")
    shaping.add_argument("--iterative-filters", action=argparse.BooleanOptionalAction,
                         default=None,
                         help="repeat the filters until nothing changes (default: the "
                              "protocol's)")
    split = parser.add_argument_group("split")
    split.add_argument("--test-days", type=float, default=None, metavar="DAYS",
                       help="time protocol: days at the end that are test (default 1; 7 "
                            "for diginetica)")
    split.add_argument("--valid-days", type=float, default=None, metavar="DAYS",
                       help="time protocol: validation days before the test days (default: "
                            "as many as --test-days)")
    split.add_argument("--valid-fraction", type=float, default=0.1, metavar="F",
                       help="given protocol: latest share of train used for validation "
                            "(default 0.1)")
    split.add_argument("--user-ratio", type=float, default=0.7, metavar="F",
                       help="user-ratio protocol: share of each user's events in train "
                            "(default 0.7)")
    split.add_argument("--min-user-events", type=int, default=10, metavar="N",
                       help="user-ratio protocol: users with fewer events stay in train "
                            "(default 10)")
    split.add_argument("--no-valid", action="store_true",
                       help="mark no validation sessions (train on everything; no early "
                            "stopping)")
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
    if args.catalog is not None and args.no_catalog:
        raise ValueError("--catalog and --no-catalog exclude each other")
    dataset = prepare_files(args.input, args.format, options, reader_options, args.out,
                            test_path=args.test, catalog_path=args.catalog,
                            find_catalog_file=not args.no_catalog)
    print(summary(dataset))
    return 0
