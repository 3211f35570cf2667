"""``nextclick bench --peer naive``: our service against the service a user would write
themselves (``loadtest.naive_peer``), measured side by side in one run with the same
closed-loop client: the peer, our NARM and our HRNN-Init (random weights, the same
catalogue size), each with its own embedded Redis (the same redis-server binary, AOF
every second), one worker each, at each concurrency, repeated ``repeats`` times with the
systems interleaved so that machine noise spreads over all of them."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtest.http_load import (
    BENCH_DIR,
    ServerProcess,
    build_bench_bundle,
    measure,
    serve_command,
)

SYSTEMS = (("naive peer (NARM, eager torch)", None), ("nextclick NARM", "narm"),
           ("nextclick HRNN-Init", "hrnn-init"))


def compare_with_peer(n_items: int, concurrencies: list[int], *, duration: float,
                      repeats: int, k: int = 20, progress: bool = True) -> dict[str, Any]:
    """Every measurement (system, repeat, concurrency) and the ratios ours / peer."""
    from service.embedded import EmbeddedRedis

    bundles = {model: build_bench_bundle(n_items, BENCH_DIR / f"artifacts-{model}-{n_items}",
                                         model)
               for _, model in SYSTEMS if model is not None}
    rows: list[dict[str, Any]] = []
    for repeat in range(1, repeats + 1):
        for system, model in SYSTEMS:
            with tempfile.TemporaryDirectory(prefix="nextclick-bench-") as folder:
                env = {key: value for key, value in os.environ.items()
                       if not key.startswith("NEXTCLICK_")}
                env["NEXTCLICK_DATA_DIR"] = str(Path(folder) / "var")
                if model is None:
                    with EmbeddedRedis(Path(folder) / "redis") as redis_server:
                        command = [sys.executable, "-m", "loadtest.naive_peer", "--port",
                                   "{port}", "--redis-url", redis_server.url, "--items",
                                   str(n_items)]
                        with ServerProcess(command, env=env) as server:
                            results = measure(server.url, concurrencies, k=k,
                                              n_items=n_items, duration=duration)
                else:
                    artifacts = bundles[model].parent.parent
                    with ServerProcess(serve_command(artifacts, model=model), env=env) as server:
                        results = measure(server.url, concurrencies, k=k, n_items=n_items,
                                          duration=duration)
            for result in results:
                row = {"system": system, "repeat": repeat, **result}
                rows.append(row)
                if progress:
                    print(_line(row), file=sys.stderr, flush=True)
    return {"n_items": n_items, "duration_s": duration, "repeats": repeats, "rows": rows,
            "ratios": _ratios(rows)}


def _line(row: dict[str, Any]) -> str:
    return (f"{row['system']:32} run {row['repeat']}  {row['concurrency']:>3} clients: "
            f"{row['clicks_per_s']:8.1f} clicks/s  p50 {row['p50_ms']:7.2f} ms  "
            f"p99 {row['p99_ms']:8.2f} ms  errors {row['errors'] or 0}  "
            f"lost {row['clicks_lost']}  twice {row['clicks_stored_twice']}")


def _ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per our system and concurrency: clicks/s ours / peer in each repeat, and the lone
    client's p50 ours / peer."""
    peer = SYSTEMS[0][0]
    by_key = {(row["system"], row["repeat"], row["concurrency"]): row for row in rows}
    ratios: dict[str, dict[str, list[float]]] = {}
    for system, model in SYSTEMS[1:]:
        del model
        for (name, repeat, clients), row in by_key.items():
            if name != system:
                continue
            base = by_key.get((peer, repeat, clients))
            if base is None or not base["clicks_per_s"]:
                continue
            entry = ratios.setdefault(f"{system} @ {clients} clients",
                                      {"throughput": [], "p50": []})
            entry["throughput"].append(round(row["clicks_per_s"] / base["clicks_per_s"], 2))
            entry["p50"].append(round(row["p50_ms"] / base["p50_ms"], 2)
                                if base["p50_ms"] else 0.0)
    return ratios


def table(comparison: dict[str, Any]) -> str:
    """The comparison as a Markdown table: per system and concurrency, the range over the
    repeats, then the ratios."""
    from training.tables import markdown_table

    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in comparison["rows"]:
        groups.setdefault((row["system"], row["concurrency"]), []).append(row)

    def span(values: list[float], digits: int = 1) -> str:
        low, high = min(values), max(values)
        return f"{low:.{digits}f}" if low == high else f"{low:.{digits}f}–{high:.{digits}f}"

    body = []
    for (system, clients), group in groups.items():
        errors = sum(sum((row["errors"] or {}).values()) for row in group)
        body.append([system, str(clients), span([r["clicks_per_s"] for r in group]),
                     span([r["p50_ms"] for r in group], 2), span([r["p99_ms"] for r in group], 2),
                     str(errors), str(sum(r["clicks_lost"] + r["clicks_stored_twice"]
                                          for r in group))])
    lines = [markdown_table(["system", "clients", "clicks/s", "p50 ms", "p99 ms", "errors",
                             "lost or twice"], body), ""]
    ratio_rows = [[name, span(values["throughput"], 2), span(values["p50"], 2),
                   f"{statistics.median(values['throughput']):.2f}"]
                  for name, values in comparison["ratios"].items()]
    lines.append(markdown_table(["ours vs the peer", "clicks/s ratio", "p50 ratio",
                                 "median clicks/s ratio"], ratio_rows))
    return "\n".join(lines)
