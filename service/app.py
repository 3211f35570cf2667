"""The FastAPI application: ``create_app(settings)`` and its lifespan.

The lifespan loads the ONNX engine, connects to Redis (starting an embedded
``redis-server`` when no URL is configured and the caller did not start one), and creates
the inference thread pool; everything is released on shutdown. Nothing happens at import
time, and the app never imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import pages
from service.embedded import EmbeddedRedis
from service.errors import error_body, install_error_handlers
from service.health import embedded_metrics
from service.metrics import Metrics, MetricsMiddleware
from service.routes import admin, api, public
from service.security import HostAllowList, allowed_hosts, check_exposure
from service.sessions import SessionService
from service.settings import Settings
from service.store import StateStore
from service.throttle import InFlightLimit, RateLimiter, RateLimitMiddleware

log = logging.getLogger(__name__)

_BODYLESS_METHODS = {"GET", "HEAD", "OPTIONS", "DELETE"}


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413: by Content-Length up front, and by
    counting the streamed bytes (chunked uploads), before any route parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send) -> None:
        body = error_body("payload_too_large",
                          f"request body larger than {self.max_bytes} bytes")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in _BODYLESS_METHODS:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await self._refuse(send)
                    return
        chunks: list[bytes] = []
        size = 0
        first: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # client went away; let the app see it
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                if first is not None and not chunks:
                    return first
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _sweep_forever(service: SessionService, interval: float) -> None:
    """The idle-session sweeper of this process: a round every ``interval`` seconds (the
    first one after a random part of it, so processes started together do not collide).
    Failures (Redis away) are logged and the next round tries again."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    await asyncio.sleep(random.uniform(0.1, 1.0) * interval)
    while True:
        try:
            closed = await service.sweep_idle(owner)
            if closed:
                log.info("sweeper closed %d idle session(s)", closed)
        except Exception as exc:  # keep sweeping; the sessions stay until the next round
            log.warning("idle-session sweep failed: %s", exc)
        await asyncio.sleep(interval)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. ``settings`` defaults to ``Settings()`` (the environment)."""
    settings = settings if settings is not None else Settings()
    check_exposure(settings)
    metrics = Metrics()
    limiter = RateLimiter(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from bundle import BundleError
        from service.engine import Engine

        embedded: EmbeddedRedis | None = None
        url = settings.redis_url
        if url is None:
            embedded = EmbeddedRedis(settings.data_dir / "redis",
                                     appendfsync=settings.redis_appendfsync,
                                     require_password=True,
                                     maxmemory=settings.redis_maxmemory, supervise=True)
            url = await asyncio.to_thread(embedded.start)
            app.state.embedded_redis_dir = embedded.data_dir
        try:
            try:
                engine = await asyncio.to_thread(
                    Engine, settings.artifacts_dir, settings.providers, settings.default_model,
                    settings.intra_op_threads)
            except BundleError as exc:
                raise RuntimeError(f"cannot load models: {exc}. Train and export one first "
                                   f"(`make run`, or `nextclick export`)") from None
            store = StateStore.from_url(url, settings)
            await limiter.start(url)
            executor = ThreadPoolExecutor(settings.inference_threads,
                                          thread_name_prefix="nextclick-infer")
            service = app.state.service = SessionService(store, engine, settings, executor,
                                                         metrics)
            sweeper = asyncio.create_task(_sweep_forever(service, settings.sweep_interval))
            log.info("serving %s (default %s) with redis at %s",
                     ", ".join(b.key for b in engine.models.values()), engine.default,
                     "embedded" if embedded else "configured URL")
            try:
                yield
            finally:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
                await service.drain()
                executor.shutdown(wait=True, cancel_futures=True)
                await limiter.close()
                await store.close()
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    app = FastAPI(
        title="nextclick", version="0.1.0", lifespan=lifespan,
        docs_url=None, redoc_url=None,  # served by service.pages from packaged assets
        description="Session-based next-item recommendations: every click answers the "
                    "top-K next items; sessions and user state live in Redis.")
    app.state.settings = settings
    app.state.metrics = metrics
    # Set when the Redis is the embedded one that `nextclick serve` (or the lifespan)
    # supervises: /healthz and /metrics read its supervisor's status file.
    app.state.embedded_redis_dir = (settings.data_dir / "redis" if settings.embedded_redis
                                    else None)
    metrics.add_collector(lambda: embedded_metrics(app.state.embedded_redis_dir))
    install_error_handlers(app)
    app.include_router(public)
    app.include_router(api)
    app.include_router(admin)
    app.include_router(pages.router)  # demo page, /catalog, offline /docs and /redoc

    # Added innermost first. From the outside in: metrics time and count everything,
    # including refusals; a wrong Host is refused before it costs anything; the in-flight
    # bound also covers the rate limiter's Redis call; bodies are read last.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, limiter=limiter)
    app.add_middleware(InFlightLimit, limit=settings.max_in_flight, metrics=metrics)
    app.add_middleware(HostAllowList, hosts=allowed_hosts(settings))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def app_factory() -> FastAPI:
    """For ``uvicorn --factory service.app:app_factory`` (used by multi-worker serving):
    settings come from the environment, where ``nextclick serve`` put the Redis URL."""
    return create_app(Settings())
