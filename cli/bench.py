"""``nextclick bench``: load-test the serving path on this machine. By default: the engine
alone (clicks/s when 1, 8, 32 or 128 sessions share one advance + top-20 run) and the HTTP
click path of a real ``nextclick serve`` at 1 and 32 concurrent clients with 1 and 2
workers, on a random-weight HRNN-Init over 40k items, ending with a check that every
acknowledged click is stored exactly once. ``--peer naive`` instead compares, in one run,
the service a user would write themselves (FastAPI + redis-py + eager torch NARM) with our
NARM and HRNN-Init. Results go to reports/bench.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe

EPILOG = """examples:
  nextclick bench                          # engine + HTTP, 1 and 2 workers
  nextclick bench --peer naive --repeats 3 # ours against the naive peer, 20 s per row
  nextclick bench --engine-only --items 1000000
  nextclick bench --workers 1 --concurrency 1 32 --requests 8000
  nextclick bench --cas                    # WATCH/MULTI vs Lua compare-and-set on Redis
  nextclick bench --memory                 # Redis bytes per session, user, logged click"""


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser(
        "bench", help=help_text, description=describe(__doc__), epilog=EPILOG,
        formatter_class=HelpFormatter)
    parser.add_argument("--models", default="hrnn-init", metavar="NAME,...",
                        help="comma-separated models to time (random weights; default "
                             "hrnn-init); the HTTP part serves the first")
    parser.add_argument("--items", type=int, default=40_000, metavar="N",
                        help="catalogue size of the benchmark model (default 40000)")
    parser.add_argument("--clicks", type=int, default=2_000, metavar="N",
                        help="clicks timed on the engine alone (default 2000)")
    parser.add_argument("--requests", type=int, default=4_000, metavar="N",
                        help="HTTP requests per measurement (default 4000)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32], metavar="N",
                        help="concurrent clients, one measurement each (default: 1 and 32)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="N",
                        help="server worker processes, one server each (default: 1 and 2)")
    parser.add_argument("--k", type=int, default=20, metavar="N",
                        help="list length (default 20)")
    parser.add_argument("--engine-only", action="store_true", help="skip the HTTP part")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128], metavar="N",
                        help="sessions per engine run to time (default 1 8 32 128)")
    parser.add_argument("--peer", choices=("none", "naive"), default="none", metavar="WHICH",
                        help="naive: compare with the naive peer service, which needs the "
                             "[train] extra (default none)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="seconds per HTTP measurement instead of --requests "
                             "(--peer naive: default 20)")
    parser.add_argument("--repeats", type=int, default=1, metavar="N",
                        help="--peer naive: repeat the comparison (default 1)")
    parser.add_argument("--cas", action="store_true",
                        help="only compare WATCH/MULTI with a Lua compare-and-set on Redis")
    parser.add_argument("--cas-clients", type=int, default=16, metavar="N",
                        help="concurrent writers for --cas (default 16)")
    parser.add_argument("--cas-updates", type=int, default=500, metavar="N",
                        help="updates per writer for --cas (default 500)")
    parser.add_argument("--memory", action="store_true",
                        help="only measure Redis memory per session, per user and per logged event")
    parser.add_argument("--memory-users", type=int, default=200, metavar="N",
                        help="users for --memory (default 200)")
    parser.add_argument("--memory-events", type=int, default=20_000, metavar="N",
                        help="clicks logged for --memory's event log figure (default 20000)")
    parser.add_argument("--memory-clicks", type=int, default=10, metavar="N",
                        help="clicks per session for --memory (default 10)")
    parser.add_argument("--out", default="reports/bench.json", metavar="FILE",
                        help="where to write the results (default reports/bench.json)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from loadtest.engine_timing import bench_engine_batches
    from loadtest.http_load import BENCH_DIR, bench_http, build_bench_bundle

    if args.memory:
        from loadtest.memory import bench_event_log, bench_memory

        artifacts = BENCH_DIR / f"artifacts-hrnn-init-{args.items}"
        build_bench_bundle(args.items, artifacts)
        print("memory   " + json.dumps(bench_memory(artifacts, args.memory_users, 3,
                                                          args.memory_clicks)))
        print("eventlog " + json.dumps(bench_event_log(artifacts, args.memory_events)))
        return 0
    if args.cas:
        from loadtest.cas import bench_cas

        for row in bench_cas(args.cas_clients, args.cas_updates):
            print(f"cas      {row['method']:5} {row['key']:14} {row['clients']} clients: "
                  f"{row['updates_per_s']} updates/s, {row['retries']} retries, "
                  f"{row['lost_updates']} lost")
        return 0

    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not models:
        raise ValueError("--models: name at least one model")
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                          "python": sys.version.split()[0]}, "engine": {}}
    for model in models:
        bundle_dir = build_bench_bundle(args.items, BENCH_DIR / f"artifacts-{model}-{args.items}",
                                        model)
        report["engine"][model] = rows = bench_engine_batches(
            bundle_dir, args.batch_sizes, clicks=args.clicks, k=args.k)
        for row in rows:
            print(f"engine   {model} ({args.items} items), {row['batch']:>3} sessions per "
                  f"run: {row['clicks_per_s']:9.1f} clicks/s, {row['per_click_p50_ms']:.3f} "
                  f"ms per click")
    if args.peer == "naive" and not args.engine_only:
        from loadtest.comparison import compare_with_peer, table

        report["comparison"] = comparison = compare_with_peer(
            args.items, args.concurrency, duration=args.duration or 20.0,
            repeats=args.repeats, k=args.k)
        print(table(comparison))
    elif not args.engine_only:
        artifacts = BENCH_DIR / f"artifacts-{models[0]}-{args.items}"
        report["http"] = []
        for workers in args.workers:
            for http in bench_http(artifacts, args.requests, args.concurrency, workers,
                                   args.k, args.items, duration=args.duration):
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
