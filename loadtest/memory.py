"""Redis memory per session and per user, measured through the real app on a throwaway
embedded Redis (``nextclick bench --memory``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def _throwaway_redis() -> Iterator[tuple[str, Any, Path]]:
    """An embedded Redis in a temporary folder: (its URL, a client, the folder)."""
    import tempfile

    import redis

    from service.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedRedis(Path(folder) / "redis", appendonly=False)
        url = server.start()
        db = redis.Redis.from_url(url)
        try:
            yield url, db, Path(folder)
        finally:
            db.close()
            server.stop()


def bench_memory(artifacts: Path, users: int, past_sessions: int, clicks: int
                 ) -> dict[str, Any]:
    """Redis memory of the service's state, by ``MEMORY USAGE <key> SAMPLES 0`` summed over
    each session's and each user's keys: ``users`` users, each with ``past_sessions`` closed
    sessions and one open one, every session ``clicks`` clicks carrying event ids, served
    through the real app (in process) on a throwaway embedded Redis."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    with _throwaway_redis() as (url, db, folder):
        settings = Settings(redis_url=url, artifacts_dir=artifacts, data_dir=folder)
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


def bench_event_log(artifacts: Path, events: int, clicks_per_session: int = 10
                    ) -> dict[str, Any]:
    """Redis memory of the event log per logged event, through the real app on a throwaway
    embedded Redis: one click per request, as a client sends them, each with a uuid event id
    and (after a session's first click) the ``recommendation_id`` of the list answered for
    the click before it, so every logged entry carries what served clicks carry. The log's
    keys are summed by ``MEMORY USAGE ... SAMPLES 0`` and divided by their ``XLEN``."""
    import uuid

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    with _throwaway_redis() as (url, db, folder):
        settings = Settings(redis_url=url, artifacts_dir=artifacts, data_dir=folder,
                            event_log_max_events=max(events * 2, 1000))
        clock = 1_700_000_000.0
        with TestClient(create_app(settings)) as client:
            listed: str | None = None
            for n in range(events):
                session, step = divmod(n, clicks_per_session)
                event = {"item_id": f"item-{(session * 7 + step * 13) % 5000 + 1}",
                         "event_id": str(uuid.uuid4()), "timestamp": clock + n}
                if step and listed:
                    event["recommendation_id"] = listed
                response = client.post(f"/sessions/s-{session}/events",
                                       json={"user_id": f"user-{session % 997}",
                                             "events": [event]})
                response.raise_for_status()
                listed = response.json()["recommendation_id"]
        logged = log_bytes = 0
        for key in db.scan_iter("nc:{log:*}:events", count=1000):
            logged += int(db.xlen(key))
            log_bytes += int(db.memory_usage(key, samples=0) or 0)
    per_event = log_bytes / logged if logged else 0.0
    return {"events": events, "logged": logged, "bytes": log_bytes,
            "bytes_per_event": round(per_event, 1),
            "mib_per_million_events": round(per_event * 1_000_000 / 2**20, 1)}
