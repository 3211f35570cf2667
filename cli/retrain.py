"""``nextclick retrain``: from served clicks back to a better model. Prepares the exported
event log (plus an optional base click log) with its latest days (or each user's last
session) as the holdout, trains a candidate, scores it and the version being served on the
same holdout through the serving engine, and installs the candidate into the artifacts
folder only when it is at least as good on the chosen metric; ``--reload`` then asks the
running service to load it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe

EPILOG = """examples:
  nextclick events export --out data/events --redis-url redis://127.0.0.1:6379/0
  nextclick retrain --events data/events --model hrnn-init --base data/synth.csv \\
      --reload http://127.0.0.1:8000 --admin-key $NEXTCLICK_ADMIN_KEY
  make retrain EVENTS=data/events MODEL=hrnn-init"""


def register(subparsers: Any, help_text: str) -> None:
    from training.data.readers import FORMATS

    parser = subparsers.add_parser("retrain", help=help_text, description=describe(__doc__),
                                   epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--events", required=True, type=Path, metavar="DIR",
                        help="the exported event log (nextclick events export --out)")
    parser.add_argument("--model", required=True, metavar="NAME",
                        help="the model to retrain, e.g. hrnn-init")
    parser.add_argument("--base", type=Path, default=None, metavar="FILE",
                        help="an earlier click log to train on as well")
    parser.add_argument("--base-format", choices=FORMATS, default="csv", metavar="FORMAT",
                        help=f"format of --base: {', '.join(FORMATS)} (default csv)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), metavar="DIR",
                        help="the folder the service serves (default artifacts)")
    parser.add_argument("--metric", default="recall@20", metavar="METRIC",
                        help="what the candidate must match or beat (default recall@20)")
    parser.add_argument("--protocol", choices=("time", "last-session"), default="time",
                        metavar="PROTOCOL",
                        help="the holdout: the latest --holdout-days (time, the default) or "
                             "each user's last session (last-session, the HRNN papers')")
    parser.add_argument("--holdout-days", type=float, default=1.0, metavar="DAYS",
                        help="the latest days held out for the comparison (default 1)")
    parser.add_argument("--min-holdout", type=int, default=100, metavar="N",
                        help="install nothing when the holdout has fewer targets than this "
                             "(default 100): a handful of clicks cannot tell models apart")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="most epochs (default: the model's paper setting)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default 1, the fastest for these small "
                             "models; a warning says when other work keeps the cores busy)")
    parser.add_argument("--work", type=Path, default=None, metavar="DIR",
                        help="working folder (default var/retrain/<model>-<time>)")
    parser.add_argument("--reload", default=None, metavar="URL",
                        help="after installing, POST URL/admin/reload")
    parser.add_argument("--admin-key", default=None, metavar="KEY",
                        help="an admin key for --reload (X-API-Key)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.fit.threads import apply_threads
    from training.retrain import reload_service, retrain

    apply_threads(args.threads, warn=not args.quiet)
    work = args.work or Path("var/retrain") / f"{args.model}-{time.strftime('%Y%m%dT%H%M%S')}"
    gate = retrain(args.events, args.model, args.artifacts, work, base=args.base,
                   base_format=args.base_format, protocol=args.protocol,
                   holdout_days=args.holdout_days, min_holdout=args.min_holdout,
                   metric=args.metric, epochs=args.epochs, progress=not args.quiet)
    current = gate.current
    shown = "none served" if current is None else (
        current.get("error") or f"{float(current[gate.metric]):.4f} ({current['model']})")
    print(f"{gate.metric} on {gate.candidate['targets']:,} holdout targets: candidate "
          f"{gate.candidate[gate.metric]:.4f} ({gate.candidate['model']}), served {shown}")
    if not gate.promoted:
        print(f"kept the served version: {gate.reason}")
        return 0
    print(f"installed {gate.bundle}")
    if args.reload:
        answer = reload_service(args.reload, args.admin_key)
        print(f"reloaded {args.reload}: {', '.join(answer.get('loaded', []))}")
    return 0
