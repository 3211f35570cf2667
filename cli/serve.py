"""``nextclick serve``: run the recommendation API, with its demo page and API docs, on the
exported bundles, with an embedded Redis (data under var/) unless --redis-url names one.
Settings not given here come from NEXTCLICK_* environment variables (docs/operations.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe

EPILOG = """examples:
  nextclick serve                # artifacts/ on http://127.0.0.1:8000 (demo page at /)
  nextclick serve --workers 2 --redis-url redis://localhost:6379/0
  NEXTCLICK_API_KEYS=... NEXTCLICK_ADMIN_API_KEYS=... nextclick serve --host 0.0.0.0

A non-loopback --host needs client keys (NEXTCLICK_API_KEYS) or --insecure
(docs/security.md)."""


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser(
        "serve", help=help_text, description=describe(__doc__), epilog=EPILOG,
        formatter_class=HelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                        help="folder of exported bundles (default: $NEXTCLICK_ARTIFACTS_DIR "
                             "or artifacts)")
    parser.add_argument("--host", default=None, metavar="ADDRESS",
                        help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, metavar="N",
                        help="TCP port (default 8000)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (default 1)")
    parser.add_argument("--redis-url", default=None, metavar="URL",
                        help="external Redis: redis://, rediss:// or redis+cluster:// "
                             "(default: start an embedded redis-server under --data-dir)")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="where the embedded Redis keeps its data (default var)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="model for requests that name none (default: the first loaded "
                             "of hrnn-init, hrnn-all, gru4rec, pop, else the first by name)")
    parser.add_argument("--log-level", default="info", metavar="LEVEL",
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="critical, error, warning, info or debug (default info)")
    parser.add_argument("--insecure", action="store_true",
                        help="serve a non-loopback --host without API keys (a demo on a "
                             "network only you reach; the same as "
                             "NEXTCLICK_ALLOW_INSECURE=true)")
    parser.add_argument("--access-log", action="store_true",
                        help="log every request (off by default; /metrics counts requests)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from service.server import serve
    from service.settings import Settings

    overrides: dict[str, Any] = {
        key: value for key, value in (
            ("artifacts_dir", args.artifacts), ("host", args.host), ("port", args.port),
            ("workers", args.workers), ("redis_url", args.redis_url),
            ("data_dir", args.data_dir), ("default_model", args.model),
            ("allow_insecure", True if args.insecure else None)) if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ValueError(f"invalid setting: {exc}") from None
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings, log_level=args.log_level, access_log=args.access_log)
    return 0
