"""HTTP load on the click path: a real ``nextclick serve`` started in a subprocess and
driven by a bounded asyncio client (concurrent clients replaying sessions of clicks, half of
them as known users) on loopback, with an end-state check over every session: clicks stored
= clicks acknowledged.

The benchmark model is an HRNN-Init with random weights over a 40k-item catalogue (the size
the performance budget names): accuracy is irrelevant here, the graph shapes are what cost
time. The client shares the machine's cores with the server, so the numbers are a lower
bound on what the server alone sustains.
"""


from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from loadtest.stats import latency_summary

BENCH_DIR = Path("var/bench")


def build_bench_bundle(n_items: int, root: Path, model_name: str = "hrnn-init") -> Path:
    """A random-weight bundle of the paper-default model shape, cached under ``root``."""
    model_root = root / model_name
    bundles = sorted(p for p in model_root.glob("*") if (p / "manifest.json").exists()) \
        if model_root.exists() else []
    if bundles:
        return bundles[-1]
    from training.export.writer import export_random_bundle

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
    result: dict[str, Any] = latency_summary(latencies)
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
    command = [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(artifacts),
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
