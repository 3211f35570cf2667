"""``nextclick events export``: page through the service's event log (every accepted
event, kept in Redis Streams) and write what is new since the last export as parquet in
the canonical event format; ``nextclick prepare --format events --input DIR`` reads it."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe

EPILOG = """examples:
  nextclick events export --out data/events            # the service `make run` started
  nextclick events export --out data/events --redis-url redis://127.0.0.1:6379/0
  nextclick events export --out data/events --since 2026-11-30T00:00:00
  nextclick prepare --format events --input data/events --protocol time --out data/live

Each run appends one events-<time>.parquet and remembers where it stopped
(DIR/export-state.json), so running it again exports only what is new."""


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser("events", help=help_text, description=describe(__doc__),
                                   epilog=EPILOG, formatter_class=HelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="export the event log as parquet",
                                description=describe(__doc__), epilog=EPILOG,
                                formatter_class=HelpFormatter)
    export.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder of exported files")
    export.add_argument("--since", default=None, metavar="TIME",
                        help="skip events logged before this time (ISO 8601 or seconds)")
    export.add_argument("--redis-url", default=None, metavar="URL",
                        help="the service's Redis (default $NEXTCLICK_REDIS_URL, else the "
                             "embedded Redis of a `nextclick serve` running on --data-dir)")
    export.add_argument("--data-dir", type=Path, default=Path("var"), metavar="DIR",
                        help="the data folder of a running `nextclick serve` (default var)")
    export.set_defaults(func=run_export)


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: give seconds since the epoch or an ISO 8601 "
                         "time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run_export(args: argparse.Namespace) -> int:
    from service.embedded import running_url
    from service.event_log import export_events
    from service.settings import Settings
    from service.store import connect

    url = (args.redis_url or os.environ.get("NEXTCLICK_REDIS_URL")
           or running_url(args.data_dir / "redis"))
    if not url:
        raise ValueError(f"no running service found on {args.data_dir} (its embedded Redis "
                         "holds the log): start `nextclick serve`, or give --redis-url")
    since = _since(args.since)

    async def export() -> Any:
        client = connect(url, Settings(redis_url=url))
        try:
            return await export_events(client, args.out, since=since)
        finally:
            await client.aclose()

    result = asyncio.run(export())
    where = f" to {result.file}" if result.file else " (nothing new)"
    print(f"exported {result.events:,} events from {result.shards} log shards{where}")
    return 0
