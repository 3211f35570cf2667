"""What does a Redis-backed rate limit cost per request, and which library to use?

The question behind service/throttle.py's choice (docs/security.md#rate-limits): the
``limits`` package's asyncio Redis storage (on the redis-py client the service already
uses, or on coredis; fixed-window, moving-window and sliding-window-counter strategies)
against ``slowapi`` (built on limits' synchronous storage), each as a pure ASGI layer in
front of one trivial route, in process (httpx's ASGI transport, so HTTP parsing is not in
the numbers), against a real local redis-server. Prints mean/p50/p99 per request when
sequential, and the throughput of 32 concurrent callers.

Needs two packages the project does not install: ``pip install slowapi 'coredis<6'``
(coredis 6 wants its pool opened as a context manager, which limits 5.8 does not do).
Run from the repository root: ``.venv/bin/python experiments/rate_limiter_cost.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.responses import JSONResponse

from service.embedded import EmbeddedRedis

REQUESTS = 2000
CONCURRENCY = 32
LIMIT = "1000000/second"  # never reached: the cost of counting, not of refusing


def plain_app() -> FastAPI:
    app = FastAPI()

    @app.get("/x")
    async def x() -> dict[str, int]:
        return {"ok": 1}

    return app


def limits_app(url: str, implementation: str, strategy: str) -> Any:
    from limits import parse
    from limits.aio import storage, strategies

    store = storage.RedisStorage("async+" + url, implementation=implementation)
    limiter = {"fixed": strategies.FixedWindowRateLimiter,
               "moving": strategies.MovingWindowRateLimiter,
               "sliding": strategies.SlidingWindowCounterRateLimiter}[strategy](store)
    item = parse(LIMIT)
    inner = plain_app()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not await limiter.hit(item, implementation, strategy):
            await JSONResponse({}, status_code=429)(scope, receive, send)
            return
        await inner(scope, receive, send)

    return app


def slowapi_app(url: str) -> Any:
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    app = plain_app()
    app.state.limiter = Limiter(key_func=get_remote_address, default_limits=[LIMIT],
                                storage_uri=url)
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


async def measure(app: Any) -> tuple[float, float, float, float]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                 limits=httpx.Limits(max_connections=100)) as client:
        for _ in range(200):  # warm-up: connections, scripts loaded
            assert (await client.get("/x")).status_code == 200
        samples = []
        for _ in range(REQUESTS):
            started = time.perf_counter()
            await client.get("/x")
            samples.append(time.perf_counter() - started)
        started = time.perf_counter()

        async def caller() -> None:
            for _ in range(REQUESTS // CONCURRENCY):
                await client.get("/x")

        await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
        throughput = REQUESTS // CONCURRENCY * CONCURRENCY / (time.perf_counter() - started)
    samples.sort()
    return (statistics.mean(samples) * 1e6, samples[len(samples) // 2] * 1e6,
            samples[int(len(samples) * 0.99)] * 1e6, throughput)


async def main(url: str) -> None:
    rows: list[tuple[str, Any]] = [("no limiter", plain_app())]
    for implementation in ("redispy", "coredis"):
        for strategy in ("fixed", "moving", "sliding"):
            rows.append((f"limits {implementation} {strategy}-window",
                         limits_app(url, implementation, strategy)))
    rows.append(("slowapi (sync storage, fixed-window)", slowapi_app(url)))
    print(f"{'':40s} {'mean us':>8s} {'p50 us':>8s} {'p99 us':>8s} "
          f"{f'{CONCURRENCY} callers req/s':>18s}")
    for name, app in rows:
        mean, p50, p99, throughput = await measure(app)
        print(f"{name:40s} {mean:8.0f} {p50:8.0f} {p99:8.0f} {throughput:18.0f}")


if __name__ == "__main__":
    with EmbeddedRedis(Path(tempfile.mkdtemp()), appendonly=False) as server:
        asyncio.run(main(server.url))
