"""Admission control: a rate limit shared by every process and replica on the same Redis
(the ``limits`` package, sliding-window counters), and a per-process bound on the requests
in flight.

Why ``limits`` over ``slowapi`` (built on it): slowapi calls limits' synchronous storage
from the event loop, so every request blocks the loop for a Redis round trip; limits'
asyncio storage on the redis-py client the service already uses costs one EVALSHA per
request without blocking (measured: docs/security.md#rate-limits).

When the limiter's Redis fails, requests are let through (fail open): the limit protects
capacity, and a Redis outage already turns the click path into fast 503s, so refusing
every request on top would only add an outage; each let-through is counted
(``nextclick_rate_limit_errors_total``) and logged at most every 10 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import error_body
from service.metrics import Metrics
from service.security import HEALTH_PATHS, identify
from service.settings import Settings

log = logging.getLogger(__name__)

#: Neither limited nor counted in flight: probes and scrapes must get through an overload.
EXEMPT_PATHS = HEALTH_PATHS | {"/metrics"}


def limiter_uri(url: str) -> tuple[str, dict[str, Any]]:
    """The ``limits`` storage URI (and extra options) for a service Redis URL."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    cluster = parts.scheme.endswith("+cluster") or any(
        flag.lower() in ("1", "true", "yes") for flag in query.pop("cluster", []))
    scheme = parts.scheme.removesuffix("+cluster")
    options: dict[str, Any] = {}
    if cluster:
        if scheme == "rediss":
            options["ssl"] = True
        scheme = "redis+cluster"
    elif scheme == "unix":
        scheme = "redis+unix"
    rest = parts._replace(scheme="", query=urlencode(query, doseq=True)).geturl()
    return f"async+{scheme}:{rest}", options


async def _send_error(send: Send, status: int, code: str, message: str,
                      retry_after: int) -> None:
    body = error_body(code, message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(retry_after).encode())]})
    await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """``settings.rate_limit`` per caller, counted in Redis. Call ``start`` once the Redis
    URL is known (the lifespan), ``close`` at the end."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.items: list[RateLimitItem] = (parse_many(settings.rate_limit)
                                           if settings.rate_limit else [])
        self.storage: RedisStorage | None = None
        self.strategy: SlidingWindowCounterRateLimiter | None = None
        self._last_error_log = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.items)

    async def start(self, redis_url: str) -> None:
        if not self.enabled:
            return
        uri, options = limiter_uri(redis_url)
        timeout = self.settings.redis_socket_timeout
        storage_class = (RedisClusterStorage if uri.startswith("async+redis+cluster")
                         else RedisStorage)
        self.storage = storage_class(uri, implementation="redispy", wrap_exceptions=True,
                                     key_prefix="nc:ratelimit", socket_timeout=timeout,
                                     socket_connect_timeout=timeout, **options)
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)

    async def close(self) -> None:
        if self.storage is not None:
            client = cast(Any, self.storage).bridge.get_connection()
            with contextlib.suppress(Exception):
                await client.aclose()
            self.storage = self.strategy = None

    async def retry_after(self, identity: str) -> int | None:
        """Seconds to wait when ``identity`` is over a limit (this request is refused),
        else None (this request is counted)."""
        if self.strategy is None:
            return None
        try:
            for item in self.items:
                if not await self.strategy.hit(item, identity):
                    stats = await self.strategy.get_window_stats(item, identity)
                    self.metrics.inc("nextclick_rate_limited_total")
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as exc:  # any storage failure: fail open (module docstring)
            self.metrics.inc("nextclick_rate_limit_errors_total")
            now = time.monotonic()
            if now - self._last_error_log > 10:
                self._last_error_log = now
                log.warning("rate limiter unavailable, letting requests through: %s", exc)
        return None


class RateLimitMiddleware:
    """429 + Retry-After past the limit. Callers are told apart by their API key when it
    is a valid one (hashed: keys never reach Redis), else by their address."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    def identity(self, scope: Scope) -> str:
        key = Headers(scope=scope).get("x-api-key")
        if key and identify(self.limiter.settings, key) is not None:
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:24]
        client = scope.get("client")
        return f"addr:{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.limiter.enabled
                or scope.get("path") in EXEMPT_PATHS):
            await self.app(scope, receive, send)
            return
        wait = await self.limiter.retry_after(self.identity(scope))
        if wait is not None:
            await _send_error(send, 429, "rate_limited",
                              f"too many requests; retry after {wait} s", wait)
            return
        await self.app(scope, receive, send)


class InFlightLimit:
    """At most ``limit`` requests at once in this process; the next ones get 503 +
    Retry-After at once instead of queueing behind the others (a load balancer or the
    client retries elsewhere)."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.inc("nextclick_requests_shed_total")
            await _send_error(send, 503, "overloaded",
                              "the server is at its request limit; retry shortly", 1)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
