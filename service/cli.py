"""``nextclick serve``: run the API with uvicorn (uvloop + httptools when installed).

With no Redis URL, an embedded ``redis-server`` is started here, once, before uvicorn, and
stopped after uvicorn returns: uvicorn turns SIGINT/SIGTERM into a graceful shutdown and then
re-raises the signal, which our SIGTERM handler (also covering the start-up window) turns
into KeyboardInterrupt so the ``finally`` below always runs. Workers (``--workers
N``) receive its URL through ``NEXTCLICK_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

log = logging.getLogger("nextclick.serve")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the recommendation API (embedded Redis unless --redis-url)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, default=None,
                        help="folder of exported bundles (default: $NEXTCLICK_ARTIFACTS_DIR "
                             "or ./artifacts)")
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default 1)")
    parser.add_argument("--redis-url", default=None,
                        help="external Redis (redis://, rediss://, redis+cluster://); "
                             "default: start an embedded redis-server under --data-dir")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="embedded Redis data folder parent (default ./var)")
    parser.add_argument("--model", default=None, help="default model name")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true",
                        help="log every request (off by default: it costs ~0.1 ms a click; "
                             "/metrics counts requests)")
    parser.set_defaults(func=run_serve)


def _check_artifacts(artifacts: Path) -> None:
    """Fail early, in words, when there is nothing to serve."""
    hint = "train and export a model first: `make run`, or `nextclick export --run RUN`"
    if not artifacts.is_dir():
        raise FileNotFoundError(f"{artifacts}: no artifacts folder; {hint}")
    if not any(artifacts.glob("*/*/manifest.json")):
        raise FileNotFoundError(f"{artifacts}: no exported model (no <model>/<version>/"
                                f"manifest.json); {hint}")


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.embedded import EmbeddedRedis, EmbeddedRedisError
    from service.settings import Settings

    overrides: dict[str, Any] = {
        key: value for key, value in (
            ("artifacts_dir", args.artifacts), ("host", args.host), ("port", args.port),
            ("workers", args.workers), ("redis_url", args.redis_url),
            ("data_dir", args.data_dir), ("default_model", args.model)) if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ValueError(f"invalid setting: {exc}") from None
    _check_artifacts(settings.artifacts_dir)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    embedded: EmbeddedRedis | None = None
    previous_term = signal.getsignal(signal.SIGTERM)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds to the finally below, which stops Redis

    try:
        signal.signal(signal.SIGTERM, _terminate)
        if settings.redis_url is None:
            embedded = EmbeddedRedis(settings.data_dir / "redis",
                                     appendfsync=settings.redis_appendfsync)
            try:
                url = embedded.start()
            except EmbeddedRedisError as exc:
                raise ValueError(str(exc)) from None
            settings = settings.model_copy(update={"redis_url": url})
            log.info("embedded Redis at %s (data in %s)", url, embedded.data_dir)
        extra: dict[str, Any] = {}
        if importlib.util.find_spec("uvloop") is not None:
            extra["loop"] = "uvloop"
        if importlib.util.find_spec("httptools") is not None:
            extra["http"] = "httptools"
        # uvicorn swaps in its own SIGINT/SIGTERM handlers for a graceful shutdown, then
        # restores ours and re-raises the signal: it arrives below as KeyboardInterrupt.
        if settings.workers > 1:
            # Workers are fresh processes that build their settings from the environment.
            env = {"NEXTCLICK_REDIS_URL": settings.redis_url or "",
                   "NEXTCLICK_ARTIFACTS_DIR": str(settings.artifacts_dir.resolve()),
                   "NEXTCLICK_DATA_DIR": str(settings.data_dir.resolve())}
            if settings.default_model:
                env["NEXTCLICK_DEFAULT_MODEL"] = settings.default_model
            os.environ.update(env)
            uvicorn.run("service.app:app_factory", factory=True, host=settings.host,
                        port=settings.port, workers=settings.workers,
                        log_level=args.log_level, proxy_headers=True,
                        access_log=args.access_log, **extra)
        else:
            from service.app import create_app

            uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                        log_level=args.log_level, proxy_headers=True,
                        access_log=args.access_log, **extra)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if embedded is not None:
            embedded.stop()
            print("nextclick serve: embedded Redis stopped", file=sys.stderr)
    return 0
