"""``nextclick synth``: write a synthetic click log in which a user's history predicts their
next clicks (the demo dataset of ``make run``), plus an item catalogue with titles and
categories for the demo page."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe


def register(subparsers: Any, help_text: str) -> None:
    from training.data.synth import SynthConfig

    defaults = SynthConfig()
    parser = subparsers.add_parser(
        "synth", help=help_text, description=describe(__doc__),
        formatter_class=HelpFormatter,
        epilog="examples:\n  nextclick synth --out data/synth.csv --seed 7\n"
               "  nextclick synth --out data/small.csv --users 200 --items 500\n\n"
               "How the clicks are generated: training/data/synth.py.")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="events CSV to write; the catalogue goes next to it as "
                             "<name>.items.csv")
    parser.add_argument("--seed", type=int, default=defaults.seed, metavar="N",
                        help=f"random seed (default {defaults.seed})")
    parser.add_argument("--users", type=int, default=defaults.users, metavar="N",
                        help=f"number of users (default {defaults.users})")
    parser.add_argument("--items", type=int, default=defaults.items, metavar="N",
                        help=f"catalogue size (default {defaults.items})")
    parser.add_argument("--clusters", type=int, default=defaults.clusters, metavar="N",
                        help=f"item topic clusters (default {defaults.clusters})")
    parser.add_argument("--sessions-per-user", type=float, default=defaults.sessions_per_user,
                        metavar="N",
                        help=f"mean sessions per user, at least 2 (default "
                             f"{defaults.sessions_per_user:g})")
    parser.add_argument("--session-length", type=float, default=defaults.mean_session_length,
                        metavar="N",
                        help=f"mean clicks per session, at least 2 (default "
                             f"{defaults.mean_session_length:g})")
    parser.add_argument("--interests", type=int, default=defaults.interests_per_user,
                        metavar="N",
                        help=f"interest clusters per user (default {defaults.interests_per_user})")
    parser.add_argument("--interest-focus", type=float, default=defaults.interest_focus,
                        metavar="P",
                        help=f"probability that a session's intent is one of the user's "
                             f"interests (default {defaults.interest_focus:g})")
    parser.add_argument("--drift", type=float, default=defaults.drift, metavar="P",
                        help=f"probability that one interest changes before a session "
                             f"(default {defaults.drift:g})")
    parser.add_argument("--set", action="append", metavar="KNOB=VALUE", default=[],
                        help="any other generator knob, e.g. --set p_routine=0.5 (repeatable)")
    parser.add_argument("--no-items", action="store_true",
                        help="do not write the <name>.items.csv catalogue (titles for the "
                             "demo page)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.data.synth import SynthConfig, generate, write
    from training.fit.overrides import config_overrides

    cfg = SynthConfig(users=args.users, items=args.items, clusters=args.clusters,
                      sessions_per_user=args.sessions_per_user,
                      mean_session_length=args.session_length,
                      interests_per_user=args.interests, interest_focus=args.interest_focus,
                      drift=args.drift, seed=args.seed)
    cfg = dataclasses.replace(cfg, **config_overrides(SynthConfig, "synth", args.set))
    events, catalog = generate(cfg)
    items_path = write(events, None if args.no_items else catalog, args.out)
    n_sessions = events["session_id"].n_unique()
    print(f"Wrote {events.height:,} events ({n_sessions:,} sessions, {cfg.users:,} users, "
          f"{events['item_id'].n_unique():,} of {cfg.items:,} items clicked; mean session "
          f"length {events.height / n_sessions:.2f}) to {args.out}"
          + (f"; catalog {items_path}" if items_path else "") + f". Seed {cfg.seed}.")
    return 0
