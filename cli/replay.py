"""``nextclick replay``: replay a real click log (a prepared dataset's test split, or an
exported event log) against a running service, session by session in time order, and
print the online hit rate and MRR per model version that answered — the numbers
``GET /admin/experiments`` shows for the same clicks."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe

EPILOG = """examples:
  nextclick replay --events data/synth --url http://127.0.0.1:8000
  nextclick replay --events data/events --url http://127.0.0.1:8000 --rate 200 --k 20

Each click names the recommendation_id of the list answered for the click before it, so
the service attributes it; with a traffic split (NEXTCLICK_TRAFFIC_SPLIT) each model's
share of the sessions shows up as its own row."""


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser("replay", help=help_text, description=describe(__doc__),
                                   epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--events", required=True, type=Path, metavar="DIR",
                        help="a prepared dataset folder (its test split) or an exported "
                             "event log folder")
    parser.add_argument("--url", required=True, metavar="URL",
                        help="the running service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--k", type=int, default=20, metavar="N",
                        help="list length asked (default 20)")
    parser.add_argument("--rate", type=float, default=None, metavar="N",
                        help="most clicks per second (default: as fast as it answers)")
    parser.add_argument("--concurrency", type=int, default=8, metavar="N",
                        help="sessions replayed at once (default 8)")
    parser.add_argument("--sessions", type=int, default=None, metavar="N",
                        help="replay only the first N sessions (default: all)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="ask this model for every click (default: the service's "
                             "choice, its traffic split included)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="a client key (X-API-Key)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from loadtest.replay import load_sessions, replay
    from service.experiments import summarize_online
    from training.tables import markdown_table

    sessions = load_sessions(args.events, args.sessions)
    if not sessions:
        raise ValueError(f"{args.events}: no sessions to replay")
    result = asyncio.run(replay(args.url, sessions, k=args.k, concurrency=args.concurrency,
                                rate=args.rate, api_key=args.api_key, model=args.model))
    rows = []
    for model, counts in sorted(result.models.items()):
        summary = summarize_online(counts.as_counters())

        def ci(name: str, summary: dict[str, Any] = summary) -> str:
            low_high = summary[f"{name}_ci95"]
            return "-" if low_high is None else f"{low_high[0]:.4f}–{low_high[1]:.4f}"

        rows.append([model, str(summary["lists"]), str(summary["clicks"]),
                     "-" if summary["hit_rate"] is None else f"{summary['hit_rate']:.4f}",
                     ci("hit_rate"), "-" if summary["mrr"] is None else f"{summary['mrr']:.4f}",
                     ci("mrr")])
    print(f"replayed {result.sessions:,} sessions, {result.clicks_sent:,} clicks in "
          f"{result.seconds:.1f} s ({result.clicks_sent / max(result.seconds, 1e-9):.0f} "
          f"clicks/s); errors: {result.errors or 'none'}")
    print(markdown_table(["model", "lists", "attributed clicks", f"hit rate@{args.k}",
                          "95% CI", f"MRR@{args.k}", "95% CI"], rows))
    return 1 if result.errors and not result.models else 0
