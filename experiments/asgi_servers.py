"""Is granian clearly faster than our uvicorn setup on the click path?

Serves the same app two ways, one worker each, and drives both with the closed-loop client
of ``nextclick bench`` (``loadtest.http_load.measure``: POST /sessions/{id}/events, sessions
of 3-12 clicks, half by known users, then the end-state check of every session):

- **uvicorn**: ``nextclick serve --workers 1`` itself (``loadtest.http_load.serve_command``):
  httptools with the head-size and read-time bounds of ``service/protocol.py``, uvloop,
  proxy headers, no access log.
- **granian** (2.8): ``granian --interface asgi --factory service.app:app_factory`` (the
  entry point ``nextclick serve --workers N`` gives its workers), HTTP/1 only, uvloop, no
  websockets, its head buffer and header-read timeout set to our two bounds.

Both get the same environment: the ``NEXTCLICK_*`` variables that ``nextclick serve``
exports to its workers (``service.server.settings_env``), naming a fresh password-protected
embedded Redis started here per server (AOF every second, as ``nextclick serve`` starts
it), and the 40k-item random-weight HRNN-Init bundle of ``nextclick bench``. The servers
alternate (uvicorn, granian, uvicorn, granian, ...), each started fresh per repeat and
measured at every concurrency after a 300-click warm-up, so machine noise spreads over
both; only the ratios within one run mean much on a shared machine. Per measurement: the
clicks/s and latency of the client, the 1-minute load average before it, and the CPU the
server's processes (and the Redis) used per click and the client's own CPU (it shares the
cores), from psutil over the middle of the run. Granian's other settings can be tried
through its environment variables, e.g. ``GRANIAN_TASK_IMPL=rust`` (uvicorn ignores them).

Run from the repository root (granian is not a dependency of the project):

    .venv/bin/pip install 'granian==2.8.*'
    .venv/bin/python experiments/asgi_servers.py [--repeats 3] [--duration 20]

Prints one line per measurement, then the Markdown tables of docs/performance.md ("ASGI
server: uvicorn or granian"); writes every row to var/bench/asgi_servers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from loadtest.http_load import BENCH_DIR, ServerProcess, build_bench_bundle, measure, serve_command
from service.embedded import EmbeddedRedis
from service.server import settings_env
from service.settings import Settings
from training.tables import markdown_table

SERVERS = ("uvicorn", "granian")
N_ITEMS = 40_000
K = 20
WARMUP_CLICKS = 300


def granian_command(settings: Settings) -> list[str]:
    """granian serving the workers' app factory, with our head and read-time bounds."""
    return [sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
            "service.app:app_factory", "--host", "127.0.0.1", "--port", "{port}",
            "--workers", "1", "--http", "1", "--no-ws", "--loop", "uvloop",
            "--http1-buffer-size", str(max(8192, settings.max_header_bytes)),
            "--http1-header-read-timeout", str(int(settings.request_read_timeout * 1000))]


class CpuWindow(threading.Thread):
    """CPU seconds per wall second of some processes, sampled from ``start`` to ``stop``
    seconds after the thread starts (inside the measured run, away from its edges)."""

    def __init__(self, processes: list[psutil.Process], start: float, stop: float) -> None:
        super().__init__(daemon=True)
        self.processes, self.start_s, self.stop_s = processes, start, stop
        self.cores: list[float] = []

    def _cpu(self) -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in self.processes]

    def run(self) -> None:
        time.sleep(self.start_s)
        began, before = time.monotonic(), self._cpu()
        time.sleep(self.stop_s - self.start_s)
        wall, after = time.monotonic() - began, self._cpu()
        self.cores = [(b - a) / wall for a, b in zip(before, after, strict=True)]


def measure_one(url: str, clients: int, duration: float, server: list[psutil.Process],
                redis: psutil.Process) -> dict[str, Any]:
    load = os.getloadavg()[0]
    measure(url, [clients], k=K, n_items=N_ITEMS, requests=WARMUP_CLICKS, warmup=0)
    # The server's processes, Redis, and this process (the client: it shares the cores).
    window = CpuWindow([*server, redis, psutil.Process()], start=1.0, stop=duration - 1.0)
    window.start()
    row = measure(url, [clients], k=K, n_items=N_ITEMS, duration=duration, warmup=0)[0]
    window.join()
    server_cores, (redis_cores, client_cores) = sum(window.cores[:-2]), window.cores[-2:]
    rate = row["clicks_per_s"] or float("nan")
    row.update({"load_avg_1m": round(load, 2), "server_cores": round(server_cores, 3),
                "redis_cores": round(redis_cores, 3), "client_cores": round(client_cores, 3),
                "server_cpu_ms_per_click": round(1000 * server_cores / rate, 3),
                "redis_cpu_ms_per_click": round(1000 * redis_cores / rate, 3)})
    return row


def run(repeats: int, duration: float, concurrencies: list[int]) -> list[dict[str, Any]]:
    bundle = build_bench_bundle(N_ITEMS, BENCH_DIR / f"artifacts-hrnn-init-{N_ITEMS}")
    artifacts = bundle.parent.parent
    base_env = {key: value for key, value in os.environ.items()
                if not key.startswith("NEXTCLICK_")}
    rows: list[dict[str, Any]] = []
    for repeat in range(1, repeats + 1):
        for name in SERVERS:
            with tempfile.TemporaryDirectory(prefix="nextclick-asgi-") as folder:
                defaults = Settings()
                redis_server = EmbeddedRedis(Path(folder) / "redis", require_password=True,
                                             appendfsync=defaults.redis_appendfsync,
                                             maxmemory=defaults.redis_maxmemory)
                with redis_server:
                    settings = Settings(artifacts_dir=artifacts, redis_url=redis_server.url,
                                        data_dir=Path(folder) / "var")
                    env = {**base_env, **settings_env(settings)}
                    command = (serve_command(artifacts) if name == "uvicorn"
                               else granian_command(settings))
                    with ServerProcess(command, env=env) as server:
                        assert server.process is not None and redis_server.process is not None
                        root = psutil.Process(server.process.pid)
                        processes = [root, *root.children(recursive=True)]
                        redis_process = psutil.Process(redis_server.process.pid)
                        for clients in concurrencies:
                            row = {"server": name, "repeat": repeat, **measure_one(
                                server.url, clients, duration, processes, redis_process)}
                            row["server_processes"] = len(processes)
                            rows.append(row)
                            print(line(row), flush=True)
    return rows


def line(row: dict[str, Any]) -> str:
    return (f"{row['server']:8} run {row['repeat']} {row['concurrency']:>3} clients: "
            f"{row['clicks_per_s']:7.1f} clicks/s  p50 {row['p50_ms']:7.2f} ms  "
            f"p99 {row['p99_ms']:7.2f} ms  server {row['server_cpu_ms_per_click']:.2f} "
            f"CPU ms/click ({row['server_cores']:.2f} cores)  redis "
            f"{row['redis_cpu_ms_per_click']:.2f}  client {row['client_cores']:.2f} cores  "
            f"load {row['load_avg_1m']:.2f}  "
            f"errors {row['errors'] or 0}  lost {row['clicks_lost']}  "
            f"twice {row['clicks_stored_twice']}")


def tables(rows: list[dict[str, Any]]) -> str:
    """Per concurrency and repeat: both servers and granian / uvicorn; then the spread."""
    by = {(r["server"], r["repeat"], r["concurrency"]): r for r in rows}
    body: list[list[str]] = []
    ratios: dict[int, list[float]] = {}
    for clients in sorted({r["concurrency"] for r in rows}):
        for repeat in sorted({r["repeat"] for r in rows}):
            u, g = by[("uvicorn", repeat, clients)], by[("granian", repeat, clients)]
            ratio = g["clicks_per_s"] / u["clicks_per_s"]
            ratios.setdefault(clients, []).append(ratio)
            body.append([str(clients), str(repeat),
                         f"{u['load_avg_1m']:.1f} / {g['load_avg_1m']:.1f}",
                         f"{u['clicks_per_s']:.0f}", f"{g['clicks_per_s']:.0f}",
                         f"**{ratio:.2f}**",
                         f"{u['p50_ms']:.2f} / {g['p50_ms']:.2f}",
                         f"{u['p99_ms']:.1f} / {g['p99_ms']:.1f}",
                         f"{u['server_cpu_ms_per_click']:.2f} / "
                         f"{g['server_cpu_ms_per_click']:.2f}",
                         f"{u['redis_cpu_ms_per_click']:.2f} / "
                         f"{g['redis_cpu_ms_per_click']:.2f}",
                         f"{u['client_cores']:.2f} / {g['client_cores']:.2f}"])
    first = markdown_table(
        ["clients", "repeat", "load avg u / g", "uvicorn clicks/s", "granian clicks/s",
         "granian / uvicorn", "p50 ms u / g", "p99 ms u / g", "server CPU ms/click u / g",
         "Redis CPU ms/click u / g", "client cores u / g"], body)
    spread = []
    for clients, values in ratios.items():
        for name in SERVERS:
            rates = [r["clicks_per_s"] for r in rows
                     if r["server"] == name and r["concurrency"] == clients]
            spread.append([f"{name}, {clients} clients",
                           f"{min(rates):.0f}-{max(rates):.0f}",
                           f"{100 * (max(rates) - min(rates)) / statistics.median(rates):.0f}%",
                           ""])
        spread.append([f"granian / uvicorn, {clients} clients",
                       f"{min(values):.2f}-{max(values):.2f}", "",
                       f"{statistics.median(values):.2f}"])
    errors = sum(sum((r["errors"] or {}).values()) + r["clicks_lost"]
                 + r["clicks_stored_twice"] for r in rows)
    second = markdown_table(["over the repeats", "range", "(max - min) / median", "median"],
                            spread)
    return f"{first}\n\n{second}\n\nerrors + lost + stored twice, all rows: {errors}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "asgi_servers.json")
    args = parser.parse_args()
    rows = run(args.repeats, args.duration, args.concurrency)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print()
    print(tables(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
