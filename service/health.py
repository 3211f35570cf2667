"""What ``/healthz`` and ``/readyz`` check beyond "the process answers": whether Redis
accepts writes, and whether the embedded Redis that ``nextclick serve`` supervises is up.

Readiness writes instead of pinging: a Redis that is full under ``noeviction`` (OOM) or
a replica after a failover (READONLY) still answers PING while refusing every click. The
probe is one ``SET`` of a tiny key with a 10 s expiry (it cleans itself up, and a full
Redis refuses it like any other write), so readiness follows the server's state at the
moment of the probe; remembering the last refused request instead would report a
recovered server as down until it expired, and a failing one as up until some client had
paid for noticing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from service.embedded import SupervisorStatus, read_status
from service.errors import refusal_reason

log = logging.getLogger(__name__)

#: The readiness probe's key (hash-tagged: one cluster slot, like every nextclick key).
PROBE_KEY = "nc:{probe}:ready"


async def redis_refuses_writes(client: Any, timeout: float = 1.0) -> str | None:
    """None when Redis accepted a probe write, else why not (``oom``, ``readonly``, ...)."""
    try:
        await asyncio.wait_for(client.set(PROBE_KEY, str(os.getpid()), px=10_000),
                               timeout=timeout)
    except Exception as exc:  # any failure means "not ready", never a 500
        reason = refusal_reason(exc) or "error"
        log.info("readiness: redis refused the probe write (%s): %s", reason, exc)
        return reason
    return None


def embedded_status(redis_dir: Path | None) -> SupervisorStatus | None:
    """The supervisor's record of the embedded Redis, or None when there is none."""
    return None if redis_dir is None else read_status(redis_dir)


def embedded_metrics(redis_dir: Path | None) -> list[str]:
    """Exposition lines for the embedded Redis (none when Redis is external)."""
    if redis_dir is None:
        return []
    status = read_status(redis_dir)
    restarts = status.restarts if status else 0
    up = int(bool(status and status.running))
    return ["# HELP nextclick_embedded_redis_restarts_total Times the supervisor restarted "
            "the embedded redis-server after it died.",
            "# TYPE nextclick_embedded_redis_restarts_total counter",
            f"nextclick_embedded_redis_restarts_total {restarts}",
            "# HELP nextclick_embedded_redis_up Whether the embedded redis-server runs.",
            "# TYPE nextclick_embedded_redis_up gauge",
            f"nextclick_embedded_redis_up {up}"]
