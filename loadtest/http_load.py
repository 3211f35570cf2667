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


def _graph_source_fingerprint() -> str:
    """A hash of the code that decides what an exported graph computes (the models and the
    exporter): a cached benchmark bundle built by other code is rebuilt, not timed."""
    import hashlib

    top = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*(top / "models").glob("*.py"),
                        *(top / "training" / "export").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_bench_bundle(n_items: int, root: Path, model_name: str = "hrnn-init") -> Path:
    """A random-weight bundle of the paper-default model shape, cached under ``root`` as
    long as the model and exporter code is unchanged (``root``.source records its hash)."""
    model_root = root / model_name
    stamp = root.parent / f"{root.name}.source"
    source = _graph_source_fingerprint()
    bundles = sorted(p for p in model_root.glob("*") if (p / "manifest.json").exists()) \
        if model_root.exists() else []
    if bundles and stamp.exists() and stamp.read_text().strip() == source:
        return bundles[-1]
    import shutil

    from training.export.writer import export_random_bundle

    shutil.rmtree(model_root, ignore_errors=True)
    bundle = export_random_bundle(model_name, n_items, root, n_users=1000)
    stamp.write_text(source + "\n")
    return bundle


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


async def _drive(base_url: str, requests: int | None, concurrency: int, k: int, n_items: int,
                 seed: int, duration: float | None = None) -> dict[str, Any]:
    """``concurrency`` closed-loop clients replaying sessions until ``requests`` were sent
    or ``duration`` seconds passed; then the end-state check over every session."""
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
    deadline = None if duration is None else time.perf_counter() + duration

    def done() -> bool:
        if deadline is not None:
            return time.perf_counter() >= deadline
        return requests is not None and issued >= requests
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
        while not done():
            session_no += 1
            session_id = f"bench-{run_token}-{worker}-{session_no}"
            # A user belongs to one client, so their sessions follow each other as in life
            # (a user's new session closes their previous one: two clients sharing a user
            # would restart each other's sessions and the end-state check would count it).
            user = (f"user-{run_token}-{worker}-{local.randint(1, 150)}" if local.random() < 0.5
                    else None)
            for _ in range(local.randint(3, 12)):
                if done():
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


class ServerProcess:
    """A server started as a subprocess (its own process group) and stopped on exit;
    ``url`` answers once ``ready_path`` answers 200."""

    def __init__(self, command: list[str], *, env: dict[str, str] | None = None,
                 ready_path: str = "/readyz", port: int | None = None,
                 timeout: float = 180.0) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.env = env
        self.ready_path = ready_path
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        import httpx

        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"server exited: {stderr[-2000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready within {self.timeout:.0f} s")
            time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.stderr is not None:
            self.process.stderr.close()


def serve_command(artifacts: Path, workers: int = 1, model: str | None = None) -> list[str]:
    """``nextclick serve`` on a free port ({port}) of loopback."""
    command = [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(artifacts),
               "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers)]
    return command + (["--model", model] if model else [])


def measure(url: str, concurrencies: list[int], *, k: int, n_items: int,
            requests: int | None = None, duration: float | None = None,
            warmup: int = 300) -> list[dict[str, Any]]:
    """Warm a running server up, then one closed-loop measurement per concurrency."""
    asyncio.run(_drive(url, warmup, max(concurrencies), k, n_items, seed=99))
    return [asyncio.run(_drive(url, requests, concurrency, k, n_items, seed=run_no,
                               duration=duration))
            for run_no, concurrency in enumerate(concurrencies, start=1)]


def bench_http(artifacts: Path, requests: int, concurrencies: list[int], workers: int, k: int,
               n_items: int, duration: float | None = None) -> list[dict[str, Any]]:
    """One warm server with ``workers`` processes; one measurement per concurrency."""
    env = dict(os.environ)
    env.setdefault("NEXTCLICK_DATA_DIR", str(BENCH_DIR / "var"))
    with ServerProcess(serve_command(artifacts, workers), env=env) as server:
        results = measure(server.url, concurrencies, k=k, n_items=n_items, requests=requests,
                          duration=duration)
    for result in results:
        result["workers"] = workers
    return results
