"""``nextclick replay``: replay a real click log against a running service, session by
session in time order, and measure what the service's lists were worth online.

Every click is sent with its original user, timestamp and an event id, and names the
``recommendation_id`` of the list the service answered for the click before it in the same
session, so the service attributes it (``GET /admin/experiments``); the replay counts the
same thing on its side: per model version that answered, the lists, the attributed clicks,
the hits (the clicked item was in the list) and the reciprocal rank of its position. With
every list of length k this is the next-item protocol of offline evaluation (Recall@k and
MRR@k over every click but a session's first).

Input: a prepared dataset folder (its test split, with raw ids), or the service's exported
event log (``nextclick events export``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ReplaySession:
    session_id: str
    user_id: str | None
    clicks: list[tuple[str, float]]  # (item id, timestamp), in order


@dataclass
class ModelCounts:
    lists: int = 0
    clicks: int = 0
    hits: int = 0
    rr: float = 0.0
    rr2: float = 0.0

    def as_counters(self) -> dict[str, float]:
        return {"lists": self.lists, "clicks": self.clicks, "hits": self.hits,
                "rr": self.rr, "rr2": self.rr2}


@dataclass
class ReplayResult:
    sessions: int = 0
    clicks_sent: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    models: dict[str, ModelCounts] = field(default_factory=dict)


def load_sessions(path: Path, limit: int | None = None) -> list[ReplaySession]:
    """Sessions of a prepared dataset's test split, or of an exported event log, ordered by
    their first click."""
    import polars as pl

    if (path / "test.parquet").exists():
        from training.data.dataset import PreparedDataset

        dataset = PreparedDataset.load(path)
        items = pl.Series(["", *dataset.items])
        users = pl.Series(["", *dataset.users])
        frame = dataset.test.select(
            pl.col("session").cast(pl.Utf8).alias("session_id"),
            pl.col("user").map_elements(lambda u: users[u] or None, return_dtype=pl.Utf8)
            .alias("user_id"),
            pl.col("item").map_elements(lambda i: items[i], return_dtype=pl.Utf8)
            .alias("item_id"),
            pl.col("timestamp").cast(pl.Float64))
    else:
        from training.data.readers import ReaderOptions, read_event_log

        frame = read_event_log(path, ReaderOptions()).select(
            "session_id", "user_id", "item_id", "timestamp")
    sessions: list[ReplaySession] = []
    for (session_id,), group in frame.group_by("session_id", maintain_order=True):
        users = [u for u in group["user_id"].to_list() if u]
        sessions.append(ReplaySession(str(session_id), users[0] if users else None,
                                      list(zip(group["item_id"].to_list(),
                                               group["timestamp"].to_list(), strict=True))))
    sessions.sort(key=lambda session: session.clicks[0][1] if session.clicks else 0.0)
    return sessions[:limit] if limit is not None else sessions


class _RateLimiter:
    """At most ``rate`` clicks per second over all clients (None: as fast as it answers)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.perf_counter()
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.perf_counter()
            if self.next > now:
                await asyncio.sleep(self.next - now)
            self.next = max(self.next, now) + self.interval


async def replay(url: str, sessions: Iterable[ReplaySession], *, k: int = 20,
                 concurrency: int = 8, rate: float | None = None,
                 api_key: str | None = None, model: str | None = None) -> ReplayResult:
    """Replay ``sessions`` against the service at ``url`` (see the module docstring)."""
    import httpx

    result = ReplayResult()
    queue: asyncio.Queue[ReplaySession] = asyncio.Queue()
    for session in sessions:
        queue.put_nowait(session)
    limiter = _RateLimiter(rate)
    token = os.urandom(3).hex()  # fresh session ids: the service outlives a replay
    headers = {"X-API-Key": api_key} if api_key else {}
    params: dict[str, Any] = {"k": k}
    if model:
        params["model"] = model

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            session = queue.get_nowait()
            result.sessions += 1
            session_id = f"replay-{token}-{session.session_id}"
            previous: dict[str, Any] | None = None
            for number, (item, timestamp) in enumerate(session.clicks):
                await limiter.wait()
                body: dict[str, Any] = {"item_id": item, "timestamp": timestamp,
                                        "event_id": f"{session_id}-{number}"}
                if session.user_id:
                    body["user_id"] = session.user_id
                if previous is not None:
                    body["recommendation_id"] = previous["recommendation_id"]
                    _count_click(result, previous, item)
                result.clicks_sent += 1
                response = await http.post(f"/sessions/{session_id}/events", json=body,
                                           params=params)
                if response.status_code != 200:
                    result.errors[str(response.status_code)] = result.errors.get(
                        str(response.status_code), 0) + 1
                    previous = None
                    continue
                previous = response.json()
                key = f"{previous['model']['name']}@{previous['model']['version']}"
                result.models.setdefault(key, ModelCounts()).lists += 1

    began = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                                 limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - began
    return result


def _count_click(result: ReplayResult, answer: dict[str, Any], item: str) -> None:
    """A click on the list ``answer`` (the previous response of its session)."""
    key = f"{answer['model']['name']}@{answer['model']['version']}"
    counts = result.models.setdefault(key, ModelCounts())
    counts.clicks += 1
    listed = [entry["item_id"] for entry in answer["recommendations"]]
    if item in listed:
        reciprocal = 1.0 / (listed.index(item) + 1)
        counts.hits += 1
        counts.rr += reciprocal
        counts.rr2 += reciprocal * reciprocal
