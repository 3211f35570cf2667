"""The event log: every accepted event, once, in the same atomic step that records it,
exported page by page into parquet, resumable; on a single Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.event_log import export_events
from service.settings import Settings
from service.store import connect
from training.data.readers import ReaderOptions, read_event_log

T0 = 1_700_000_000.0


@pytest.fixture(params=["single", "cluster"])
def logged(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    if request.param == "cluster":
        yield settings.model_copy(update={"redis_url": request.getfixturevalue("cluster_url")})
    else:
        yield settings


def export(settings: Settings, out: Path, since: float | None = None) -> int:
    async def run() -> int:
        assert settings.redis_url is not None
        client = connect(settings.redis_url, settings)
        try:
            return (await export_events(client, out, since=since, page=3)).events
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_every_accepted_event_is_logged_once_and_exported(logged: Settings,
                                                         tmp_path: Path) -> None:
    with TestClient(create_app(logged)) as client:
        first = client.post("/sessions/s1/events", json={
            "user_id": "u1", "events": [{"item_id": "i1", "event_id": "a", "timestamp": T0},
                                        {"item_id": "i2", "event_id": "b",
                                         "timestamp": T0 + 1}]}).json()
        # a duplicate (same event id) and a refused click are not logged
        client.post("/sessions/s1/events", json={"item_id": "i1", "event_id": "a",
                                                 "timestamp": T0})
        assert client.post("/sessions/s1/events", json={"item_id": "i3", "user_id": "u2",
                                                        "timestamp": T0 + 2}).status_code == 409
        client.post("/sessions/s1/events", json={
            "item_id": "i3", "user_id": "u1", "timestamp": T0 + 3, "event_type": "view",
            "recommendation_id": first["recommendation_id"]})
        for index in range(5):
            client.post(f"/sessions/anon{index}/events",
                        json={"item_id": f"i{index + 4}", "timestamp": T0 + 10 + index})
        out = tmp_path / "events"
        assert export(logged, out) == 8
        assert export(logged, out) == 0  # resumed: nothing new
        client.post("/sessions/anon0/events", json={"item_id": "i9", "timestamp": T0 + 20})
    assert export(logged, out) == 1
    frame = read_event_log(out, ReaderOptions())
    assert frame.height == 9
    assert sorted(frame["item_id"].to_list()) == sorted(
        ["i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9"])
    raw = pl.concat([pl.read_parquet(file) for file in sorted(out.glob("events-*.parquet"))])
    s1 = raw.filter(pl.col("session_id") == "s1").sort("timestamp")
    assert s1["user_id"].to_list() == ["u1", "u1", "u1"]
    assert s1["event_id"].to_list() == ["a", "b", None]
    assert s1["event_type"].to_list() == ["click", "click", "view"]
    assert s1["recommendation_id"].to_list() == [None, None, first["recommendation_id"]]
    assert set(raw["model"].to_list()) == {"hrnn-init@v1"}
    assert raw["log_id"].n_unique() == raw.height
    # --since keeps the newer entries only (log ids are server milliseconds)
    assert export(logged, tmp_path / "since", since=4_102_444_800.0) == 0


def test_the_log_is_bounded(settings: Settings, tmp_path: Path) -> None:
    bounded = settings.model_copy(update={"event_log_shards": 1, "event_log_max_events": 100})
    with TestClient(create_app(bounded)) as client:
        for index in range(300):
            client.post(f"/sessions/s{index % 7}/events",
                        json={"item_id": "i1", "timestamp": T0 + index})
    exported = export(bounded, tmp_path / "events")
    # trimmed to about the bound: whole stream nodes of 100 entries go
    assert 100 <= exported < 200


def test_logging_can_be_turned_off(settings: Settings, tmp_path: Path) -> None:
    with TestClient(create_app(settings.model_copy(update={"event_log": False}))) as client:
        client.post("/sessions/s/events", json={"item_id": "i1"})
    assert export(settings, tmp_path / "events") == 0
