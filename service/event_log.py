"""Export the service's event log (the Redis Streams that ``ingest`` appends every accepted
event to, see ``service.store``) as parquet files in the canonical event format, resumable.

Each run pages through every log shard from the last entry the previous run exported
(kept in ``OUT/export-state.json``, rewritten only after the new file is complete), writes
one ``events-<time>.parquet`` with what it found, and returns the counts. ``nextclick
prepare --format events --input OUT`` reads the folder.

Columns: ``user_id`` (null when anonymous), ``session_id``, ``item_id``, ``timestamp``
(seconds), ``event_type``, ``event_id``, ``model`` (the model version that answered the
click), ``recommendation_id`` (the list the item was clicked in), ``log_id`` (shard and
stream entry: unique).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from service.store import RedisClient

STATE_FILE = "export-state.json"
PAGE = 10_000
LOG_PATTERN = "nc:{log:*}:events"
COLUMNS = ("user_id", "session_id", "item_id", "timestamp", "event_type", "event_id",
           "model", "recommendation_id", "log_id")


@dataclass
class ExportResult:
    events: int
    shards: int
    file: Path | None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _next_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (XRANGE bounds are inclusive)."""
    milliseconds, _, sequence = entry_id.partition("-")
    return f"{milliseconds}-{int(sequence or 0) + 1}"


async def export_events(client: RedisClient, out: Path, *, since: float | None = None,
                        page: int = PAGE) -> ExportResult:
    """Append every log entry not exported yet (and not older than ``since``, seconds)
    to a new parquet file under ``out``; resumable from ``out/export-state.json``."""
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state: dict[str, str] = (json.loads(state_path.read_text(encoding="utf-8"))["shards"]
                             if state_path.exists() else {})
    rows: dict[str, list[Any]] = {column: [] for column in COLUMNS}
    shards = 0
    keys = sorted({_text(key) async for key in cast(Any, client).scan_iter(
        match=LOG_PATTERN, count=1000)})
    for key in keys:
        shards += 1
        start = _next_id(state[key]) if key in state else "-"
        if since is not None:
            floor = f"{int(since * 1000)}-0"
            if start == "-" or _older(start, floor):
                start = floor
        while True:
            entries: list[Any] = list(await cast(Any, client).xrange(key, min=start, max="+",
                                                                     count=page) or [])
            for entry_id, fields in entries:
                values = {_text(name): _text(value) for name, value in (fields or {}).items()}
                rows["user_id"].append(values.get("u") or None)
                rows["session_id"].append(values.get("s", ""))
                rows["item_id"].append(values.get("i", ""))
                rows["timestamp"].append(float(values.get("t", "0")))
                rows["event_type"].append(values.get("y") or "click")
                rows["event_id"].append(values.get("e") or None)
                rows["model"].append(values.get("m") or None)
                rows["recommendation_id"].append(values.get("r") or None)
                rows["log_id"].append(f"{key}/{_text(entry_id)}")
                state[key] = _text(entry_id)
            if len(entries) < page:
                break
            start = _next_id(_text(entries[-1][0]))
    written: Path | None = None
    if rows["item_id"]:
        frame = pl.DataFrame(rows, schema={
            "user_id": pl.Utf8, "session_id": pl.Utf8, "item_id": pl.Utf8,
            "timestamp": pl.Float64, "event_type": pl.Utf8, "event_id": pl.Utf8,
            "model": pl.Utf8, "recommendation_id": pl.Utf8, "log_id": pl.Utf8})
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        written = out / f"events-{stamp}-{len(list(out.glob('events-*.parquet'))):04d}.parquet"
        partial = written.with_suffix(".parquet.tmp")
        frame.write_parquet(partial)
        partial.replace(written)
    temporary = state_path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"shards": state, "updated": time.time()}, indent=1),
                         encoding="utf-8")
    temporary.replace(state_path)
    return ExportResult(events=len(rows["item_id"]), shards=shards, file=written)


def _older(entry_id: str, other: str) -> bool:
    left = tuple(int(part) for part in entry_id.split("-"))
    right = tuple(int(part) for part in other.split("-"))
    return left < right
