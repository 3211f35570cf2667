"""Run the API: uvicorn (uvloop + httptools when installed) around ``create_app``, with the
embedded Redis started first when no Redis URL is configured.

The embedded ``redis-server`` is started here, once, before uvicorn, and stopped after
uvicorn returns: uvicorn turns SIGINT/SIGTERM into a graceful shutdown and then re-raises
the signal, which our SIGTERM handler (also covering the start-up window) turns into
KeyboardInterrupt so the ``finally`` below always runs. It is supervised from this
process (restarted when it dies), password-protected and bounded by ``maxmemory``
(service/embedded.py). Workers (``workers > 1``) are fresh processes that build their
settings from the environment: every setting of this process, the Redis URL with its
password included, is exported to them as ``NEXTCLICK_*``.

The HTTP protocol is uvicorn's httptools one with a bound on the request head and on the
time to receive a request (service/protocol.py).
"""

from __future__ import annotations

import functools
import importlib.util
import json
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


def settings_env(settings: Settings) -> dict[str, str]:
    """``NEXTCLICK_*`` variables from which a worker process rebuilds ``settings``."""
    env = {}
    for name, value in settings.model_dump(mode="json", exclude_none=True).items():
        if isinstance(value, (list, dict)):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"NEXTCLICK_{name.upper()}"] = text
    for name in ("artifacts_dir", "data_dir"):  # workers may resolve paths elsewhere
        env[f"NEXTCLICK_{name.upper()}"] = str(Path(getattr(settings, name)).resolve())
    return env


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
    from service.protocol import BoundedHttpToolsProtocol
    from service.security import check_exposure

    check_exposure(settings)  # before anything starts: a refusal leaves nothing behind
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
                                     appendfsync=settings.redis_appendfsync,
                                     require_password=True,
                                     maxmemory=settings.redis_maxmemory, supervise=True)
            try:
                url = embedded.start()
            except EmbeddedRedisError as exc:
                raise ValueError(str(exc)) from None
            settings = settings.model_copy(update={"redis_url": url, "embedded_redis": True})
            log.info("embedded Redis at %s (data in %s)", embedded.display_url,
                     embedded.data_dir)
        # A partial of a module-level class: it pickles into --workers processes.
        protocol: Any = functools.partial(
            BoundedHttpToolsProtocol, max_head_bytes=settings.max_header_bytes,
            read_timeout=settings.request_read_timeout)
        extra: dict[str, Any] = {"http": protocol}
        if importlib.util.find_spec("uvloop") is not None:
            extra["loop"] = "uvloop"
        # uvicorn swaps in its own SIGINT/SIGTERM handlers for a graceful shutdown, then
        # restores ours and re-raises the signal: it arrives below as KeyboardInterrupt.
        if settings.workers > 1:
            os.environ.update(settings_env(settings))
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
