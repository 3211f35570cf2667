"""Run the API: uvicorn (uvloop + httptools when installed) around ``create_app``, with the
embedded Redis started first when no Redis URL is configured.

The embedded ``redis-server`` is started here, once, before uvicorn, and stopped after
uvicorn returns: uvicorn turns SIGINT/SIGTERM into a graceful shutdown and then re-raises
the signal, which our SIGTERM handler (also covering the start-up window) turns into
KeyboardInterrupt so the ``finally`` below always runs. Workers (``workers > 1``) are
fresh processes that receive its URL through ``NEXTCLICK_REDIS_URL``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from service.settings import Settings

log = logging.getLogger("nextclick.serve")


def check_artifacts(artifacts: Path) -> None:
    """Fail early, in words, when there is nothing to serve."""
    hint = "train and export a model first: `make run`, or `nextclick export --run RUN`"
    if not artifacts.is_dir():
        raise FileNotFoundError(f"{artifacts}: no artifacts folder; {hint}")
    if not any(artifacts.glob("*/*/manifest.json")):
        raise FileNotFoundError(f"{artifacts}: no exported model (no <model>/<version>/"
                                f"manifest.json); {hint}")


def check_onnx_runtime() -> None:
    """Exactly one ONNX Runtime: none installed is an error in words; two (they share the
    import name, the last installed wins) is worth a warning."""
    from importlib import metadata

    installed = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    if not installed or importlib.util.find_spec("onnxruntime") is None:
        raise ValueError("no ONNX Runtime is installed: pip install 'nextclick[cpu]' (or "
                         "'nextclick[gpu]' on a CUDA machine)")
    if len(installed) > 1:
        log.warning("both %s are installed; they share the import name, so the one "
                    "installed last is in use: uninstall one", " and ".join(installed))


def serve(settings: Settings, *, log_level: str = "info", access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM; returns after the embedded Redis (if any) stopped."""
    import uvicorn

    from service.embedded import EmbeddedRedis, EmbeddedRedisError

    check_artifacts(settings.artifacts_dir)
    check_onnx_runtime()
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
                        log_level=log_level, proxy_headers=True,
                        access_log=access_log, **extra)
        else:
            from service.app import create_app

            uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                        log_level=log_level, proxy_headers=True,
                        access_log=access_log, **extra)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if embedded is not None:
            embedded.stop()
            print("nextclick serve: embedded Redis stopped", file=sys.stderr)
