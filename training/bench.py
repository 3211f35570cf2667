"""``nextclick bench``: per-click latency of the engine alone and of the HTTP click path.

The benchmark model is an HRNN-Init with random weights over a 40k-item catalogue (the
size the performance budget names): accuracy is irrelevant here, the graph shapes are
what cost time. The HTTP part starts a real ``nextclick serve`` (embedded Redis unless
``NEXTCLICK_REDIS_URL`` is set) and drives it with a bounded asyncio client: a fixed
number of requests at each ``--concurrency`` (clients replaying sessions of clicks, half
of them as known users), on loopback only. The client shares the machine's cores with
the server, so the numbers are a lower bound on what the server alone sustains. Each run
ends with an end-state check over every session: clicks stored = clicks acknowledged.

``--cas`` compares WATCH/MULTI with a Lua compare-and-set on Redis; ``--memory`` measures
the Redis bytes per session and per user (``MEMORY USAGE``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path("var/bench")


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    """Latency summary, with the same percentile definition as the engine benchmark."""
    from service.bench_engine import percentile

    return {"p50_ms": round(percentile(samples_ms, 50), 3),
            "p90_ms": round(percentile(samples_ms, 90), 3),
            "p99_ms": round(percentile(samples_ms, 99), 3),
            "mean_ms": round(statistics.fmean(samples_ms), 3), "n": len(samples_ms)}


def build_bench_bundle(n_items: int, root: Path, model_name: str = "hrnn-init") -> Path:
    """A random-weight bundle of the paper-default model shape, cached under ``root``."""
    model_root = root / model_name
    bundles = sorted(p for p in model_root.glob("*") if (p / "manifest.json").exists()) \
        if model_root.exists() else []
    if bundles:
        return bundles[-1]
    from training.export import export_random_bundle

    return export_random_bundle(model_name, n_items, root, n_users=1000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Connection:
    """A minimal keep-alive HTTP/1.1 client connection. The load generator shares the
    machine's cores with the server, and a full client library costs more CPU per request
    than the server's click path (httpx capped the measured rate at ~40% of what the server
    sustains), so the hot loop writes raw requests."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, payload: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _drive(base_url: str, requests: int, concurrency: int, k: int, n_items: int,
                 seed: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    acknowledged: dict[str, int] = {}
    issued = 0
    rng = random.Random(seed)
    # Zipf-ish item ids: a few popular, a long tail (as real click logs).
    weights = [1.0 / (rank ** 0.8) for rank in range(1, n_items + 1)]
    population = [f"item-{index}" for index in range(1, n_items + 1)]
    item_pool = rng.choices(population, weights=weights, k=50_000)

    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    run_token = os.urandom(4).hex()  # fresh ids: the embedded Redis outlives a bench run

    async def client(worker: int) -> None:
        nonlocal issued
        connection = _Connection(host, int(port))
        try:
            await replay_sessions(worker, connection)
        finally:
            connection.close()

    async def replay_sessions(worker: int, connection: _Connection) -> None:
        nonlocal issued
        local = random.Random(seed * 1000 + worker)
        session_no = 0
        while issued < requests:
            session_no += 1
            session_id = f"bench-{run_token}-{worker}-{session_no}"
            # A user belongs to one client, so their sessions follow each other as in life
            # (a user's new session closes their previous one: two clients sharing a user
            # would restart each other's sessions and the end-state check would count it).
            user = (f"user-{run_token}-{worker}-{local.randint(1, 150)}" if local.random() < 0.5
                    else None)
            for _ in range(local.randint(3, 12)):
                if issued >= requests:
                    return
                issued += 1
                body: dict[str, Any] = {"item_id": local.choice(item_pool)}
                if user:
                    body["user_id"] = user
                payload = json.dumps(body).encode()
                started = time.perf_counter()
                try:
                    code = str(await connection.post_json(
                        f"/sessions/{session_id}/events?k={k}", payload))
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    code = type(exc).__name__
                    connection.close()
                latencies.append((time.perf_counter() - started) * 1000)
                if code == "200":
                    acknowledged[session_id] = acknowledged.get(session_id, 0) + 1
                else:
                    errors[code] = errors.get(code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client(worker) for worker in range(concurrency)))
    wall = time.perf_counter() - started
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        # End-state check over every session: the clicks stored equal the clicks
        # acknowledged (no lost click, none stored twice).
        lost = extra = 0
        for session_id, count in sorted(acknowledged.items()):
            response = await http.get(f"/sessions/{session_id}")
            stored = len(response.json().get("clicks", [])) if response.status_code == 200 else 0
            lost += max(0, count - stored)
            extra += max(0, stored - count)
    result = _percentiles(latencies)
    result.update({"clicks_per_s": round(len(latencies) / wall, 1), "errors": errors,
                   "concurrency": concurrency, "sessions_checked": len(acknowledged),
                   "clicks_acknowledged": sum(acknowledged.values()),
                   "clicks_lost": lost, "clicks_stored_twice": extra})
    return result


def bench_http(artifacts: Path, requests: int, concurrencies: list[int], workers: int, k: int,
               n_items: int) -> list[dict[str, Any]]:
    """One warm server with ``workers`` processes; one measurement per concurrency."""
    import httpx

    port = _free_port()
    env = dict(os.environ)
    env.setdefault("NEXTCLICK_DATA_DIR", str(BENCH_DIR / "var"))
    command = [sys.executable, "-m", "training.cli", "serve", "--artifacts", str(artifacts),
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError("server exited: " + (server.stderr.read().decode()[-2000:]
                                                        if server.stderr else ""))
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become ready within 120 s")
            time.sleep(0.3)
        # Warm-up: first requests pay for lazy imports, connection set-up, ORT arenas.
        asyncio.run(_drive(base_url, 300, max(concurrencies), k, n_items, seed=99))
        results = []
        for run_no, concurrency in enumerate(concurrencies, start=1):
            result = asyncio.run(_drive(base_url, requests, concurrency, k, n_items,
                                        seed=run_no))
            result["workers"] = workers
            results.append(result)
        return results
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


_CAS_SCRIPT = """
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', tonumber(ARGV[1]) + 1, 'blob', ARGV[2])
return 1
"""


async def _cas_run(url: str, method: str, clients: int, updates: int, shared: bool
                   ) -> dict[str, Any]:
    """``clients`` concurrent writers each apply ``updates`` read-modify-write updates (read
    the version, write version + 1 and a 400-byte blob), to one shared key or to a key each,
    with WATCH/MULTI/EXEC or a Lua compare-and-set, retrying on conflict."""
    import redis.asyncio as aioredis
    from redis.exceptions import WatchError

    client = aioredis.Redis.from_url(url, max_connections=clients + 4)
    blob = os.urandom(400)
    sha = await client.script_load(_CAS_SCRIPT)
    keys = [f"bench:cas:{method}:{'shared' if shared else index}" for index in range(clients)]
    await client.delete(*set(keys))
    retries = 0

    async def writer(key: str) -> None:
        nonlocal retries
        for _ in range(updates):
            while True:
                if method == "lua":
                    version = await client.hget(key, "v")
                    expected = version.decode() if version else "0"
                    if await client.evalsha(sha, 1, key, expected, blob):
                        break
                else:
                    async with client.pipeline(transaction=True) as pipe:
                        try:
                            await pipe.watch(key)
                            version = await pipe.hget(key, "v")
                            pipe.multi()
                            pipe.hset(key, mapping={"v": int(version or 0) + 1, "blob": blob})
                            await pipe.execute()
                            break
                        except WatchError:
                            pass
                retries += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer(key) for key in keys))
    wall = time.perf_counter() - started
    final = 0
    for key in set(keys):
        final += int(await client.hget(key, "v") or 0)
    await client.delete(*set(keys))
    await client.aclose()
    return {"method": method, "key": "shared" if shared else "one per client",
            "clients": clients, "updates_per_s": round(clients * updates / wall),
            "retries": retries, "lost_updates": clients * updates - final}


def bench_cas(clients: int, updates: int) -> list[dict[str, Any]]:
    """WATCH/MULTI against Lua compare-and-set on a Redis (NEXTCLICK_REDIS_URL, else a
    throwaway embedded server)."""
    import tempfile

    from service.embedded import EmbeddedRedis

    url = os.environ.get("NEXTCLICK_REDIS_URL")
    with tempfile.TemporaryDirectory() as folder:
        server = None
        if not url:
            server = EmbeddedRedis(Path(folder), appendonly=False)
            url = server.start()
        try:
            return [asyncio.run(_cas_run(url, method, clients, updates, shared))
                    for shared in (False, True) for method in ("watch", "lua")]
        finally:
            if server is not None:
                server.stop()


def bench_memory(artifacts: Path, users: int, past_sessions: int, clicks: int
                 ) -> dict[str, Any]:
    """Redis memory of the service's state, by ``MEMORY USAGE <key> SAMPLES 0`` summed over
    each session's and each user's keys: ``users`` users, each with ``past_sessions`` closed
    sessions and one open one, every session ``clicks`` clicks carrying event ids, served
    through the real app (in process) on a throwaway embedded Redis."""
    import tempfile

    import redis
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.embedded import EmbeddedRedis
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedRedis(Path(folder) / "redis", appendonly=False)
        url = server.start()
        try:
            settings = Settings(redis_url=url, artifacts_dir=artifacts, data_dir=Path(folder))
            db = redis.Redis.from_url(url)
            baseline = int(db.info("memory")["used_memory"])
            clock = 1_700_000_000.0
            with TestClient(create_app(settings)) as client:
                for user in range(users):
                    for session in range(past_sessions + 1):
                        clock += 10 + clicks
                        events = [{"item_id": f"item-{(user * 7 + session * 3 + n) % 5000 + 1}",
                                   "user_id": f"user-{user}",
                                   "event_id": f"ev-{user}-{session}-{n}",
                                   "timestamp": clock + n} for n in range(clicks)]
                        for start in range(0, clicks, 10):
                            response = client.post(f"/sessions/s-{user}-{session}/events",
                                                   json={"events": events[start:start + 10]})
                            response.raise_for_status()
                    # A personalised request caches the user's model state too.
                    client.get("/recommend", params={"user_id": f"user-{user}"})

            def usage(pattern: str) -> tuple[int, int]:
                total = keys = 0
                for key in db.scan_iter(pattern, count=1000):
                    total += int(db.memory_usage(key, samples=0) or 0)
                    keys += 1
                return total, keys

            open_bytes, open_keys = usage("nc:{s:s-*-" + str(past_sessions) + "}:*")
            all_session_bytes, _ = usage("nc:{s:*")
            user_bytes, user_keys = usage("nc:{u:*")
            used = int(db.info("memory")["used_memory"]) - baseline
            db.close()
        finally:
            server.stop()
    closed = users * past_sessions
    return {"users": users, "past_sessions_per_user": past_sessions,
            "clicks_per_session": clicks,
            "bytes_per_open_session": round(open_bytes / users),
            "keys_per_open_session": round(open_keys / users, 1),
            "bytes_per_closed_session": round((all_session_bytes - open_bytes) / closed)
            if closed else None,
            "bytes_per_user": round(user_bytes / users),
            "keys_per_user": round(user_keys / users, 1),
            "used_memory_per_user_with_sessions": round(used / users)}


def run(args: argparse.Namespace) -> int:
    from service.bench_engine import bench_engine

    if args.memory:
        artifacts = BENCH_DIR / f"artifacts-{args.items}"
        build_bench_bundle(args.items, artifacts)
        print("memory   " + json.dumps(bench_memory(artifacts, args.memory_users, 3,
                                                          args.memory_clicks)))
        return 0
    if args.cas:
        for row in bench_cas(args.cas_clients, args.cas_updates):
            print(f"cas      {row['method']:5} {row['key']:14} {row['clients']} clients: "
                  f"{row['updates_per_s']} updates/s, {row['retries']} retries, "
                  f"{row['lost_updates']} lost")
        return 0

    artifacts = BENCH_DIR / f"artifacts-{args.items}"
    bundle_dir = build_bench_bundle(args.items, artifacts)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    report["engine"] = engine = bench_engine(bundle_dir, args.clicks, k=args.k)
    print(f"engine   {bundle_dir} ({args.items} items): advance + top-{args.k} per click "
          f"{json.dumps({key: value for key, value in engine.items() if 'ms' in key})}")
    if not args.engine_only:
        report["http"] = []
        for workers in args.workers:
            for http in bench_http(artifacts, args.requests, args.concurrency, workers,
                                   args.k, args.items):
                report["http"].append(http)
                print(f"http     POST /sessions/{{id}}/events, {workers} worker(s), "
                      f"{http['concurrency']} clients: {http['clicks_per_s']} clicks/s, "
                      f"p50 {http['p50_ms']} ms, p99 {http['p99_ms']} ms, "
                      f"errors {http['errors']}, acknowledged {http['clicks_acknowledged']}, "
                      f"lost {http['clicks_lost']}, stored twice {http['clicks_stored_twice']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="engine and HTTP click-path latency",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=40_000, help="catalogue size")
    parser.add_argument("--clicks", type=int, default=2_000, help="engine-only clicks")
    parser.add_argument("--requests", type=int, default=4_000, help="HTTP requests")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32],
                        help="concurrent clients; 1 gives the latency of a lone click")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--engine-only", action="store_true")
    parser.add_argument("--cas", action="store_true",
                        help="only compare WATCH/MULTI with Lua compare-and-set on Redis")
    parser.add_argument("--cas-clients", type=int, default=16)
    parser.add_argument("--memory", action="store_true",
                        help="only measure Redis memory per session and per user")
    parser.add_argument("--memory-users", type=int, default=200)
    parser.add_argument("--memory-clicks", type=int, default=10, help="clicks per session")
    parser.add_argument("--cas-updates", type=int, default=500)
    parser.add_argument("--out", default="reports/bench.json")
    parser.set_defaults(func=run)
