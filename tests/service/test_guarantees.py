"""The README's guarantees at their edges, each against a real Redis: a refused request
writes nothing, a session folds exactly once however often it is closed, idle sessions are
closed and folded by the service itself, an idempotency key is bound to its payload, and
timestamps and query parameters are checked rather than silently misread."""

from __future__ import annotations

import asyncio
import time

import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.test_api import assert_error, click, items_of

T0 = 1_700_000_000.0


def user_keys(db: redis.Redis, user: str) -> list[str]:
    return sorted(db.scan_iter(f"nc:{{u:{user}}}:*"))


def test_a_refused_click_writes_nothing(client: TestClient, db: redis.Redis) -> None:
    """The audit's reproduction: a click answered 409 (session owned by another user) used
    to move the user's open-session pointer to the foreign session, so erasing the user
    left the user's real session behind, never folded."""
    click(client, "SA", "i1", user_id="alice", timestamp=T0)
    click(client, "SB", "i2", user_id="bob", timestamp=T0)
    before = {key: db.dump(key) for key in sorted(db.scan_iter("nc:*"))}
    refused = client.post("/sessions/SB/events",
                          json={"item_id": "i3", "user_id": "alice", "timestamp": T0 + 1})
    assert_error(refused, 409, "session_user_conflict")
    after = {key: db.dump(key) for key in sorted(db.scan_iter("nc:*"))}
    assert after == before  # not one key changed
    assert db.hget("nc:{u:alice}:meta", "open_session") == "SA"
    assert client.delete("/users/alice").status_code == 204
    assert client.get("/sessions/SA").status_code == 404
    assert user_keys(db, "alice") == []
    assert client.get("/sessions/SB").status_code == 200  # bob's session is untouched


def test_a_repeated_end_folds_once_after_the_closed_record_is_trimmed(
        settings: Settings, db: redis.Redis) -> None:
    """With one closed session remembered per user, ending an old session again used to
    fold it a second time (its '<sid>#<gen>' was trimmed from the record)."""
    with TestClient(create_app(settings.model_copy(update={"max_closed_tracked": 1}))) as client:
        for index in range(3):
            click(client, f"s{index}", f"i{index + 1}", user_id="u", timestamp=T0 + index)
            assert client.post(f"/sessions/s{index}/end").status_code == 200
        assert db.hget("nc:{u:u}:meta", "sessions_total") == "3"
        for _ in range(3):
            for index in range(3):
                assert client.post(f"/sessions/s{index}/end").status_code == 200
        assert db.hget("nc:{u:u}:meta", "sessions_total") == "3"
        assert db.lrange("nc:{u:u}:history", 0, -1) == ['["i1"]', '["i2"]', '["i3"]']


def test_idle_sessions_are_closed_and_folded_by_the_sweeper(
        settings: Settings, db: redis.Redis) -> None:
    """A user who never comes back: the session is folded into the user by the service
    itself once it has been idle (server time), long before its keys expire; an active
    session is left open; several sweepers (processes) fold each session once."""
    quick = settings.model_copy(update={"session_idle_timeout": 1.0, "sweep_interval": 3600.0,
                                        "sweep_shards": 4})
    with TestClient(create_app(quick)) as client:
        for index in range(5):
            click(client, f"idle{index}", "i1", user_id=f"u{index}", timestamp=T0)
            click(client, f"idle{index}", "i2", user_id=f"u{index}", timestamp=T0 + 1)
        click(client, "anonymous", "i1", timestamp=T0)
        time.sleep(1.2)
        click(client, "busy", "i3", user_id="busy-user")  # server time: just now
        service = client.app.state.service  # type: ignore[attr-defined]

        async def sweep_from_three_processes() -> list[int]:
            return list(await asyncio.gather(*(service.sweep_idle(f"owner-{n}")
                                               for n in range(3))))

        closed = client.portal.call(sweep_from_three_processes)  # type: ignore[union-attr]
        assert sum(closed) == 5
        for index in range(5):
            assert db.hget(f"nc:{{s:idle{index}}}:meta", "status") == "closed"
            assert db.hget(f"nc:{{u:u{index}}}:meta", "sessions_total") == "1"
            assert db.lrange(f"nc:{{u:u{index}}}:history", 0, -1) == ['["i1", "i2"]']
        assert db.hget("nc:{s:busy}:meta", "status") == "open"
        assert db.hget("nc:{s:anonymous}:meta", "status") == "open"  # nothing to fold
        # the busy session stays indexed for a later round; the closed ones are not
        indexed = {member for shard in range(4)
                   for member in db.zrange(f"nc:{{sweep:{shard}}}:sessions", 0, -1)}
        assert indexed == {"busy"}
        assert client.portal.call(service.sweep_idle, "owner-0") == 0  # type: ignore[union-attr]
        metrics = client.get("/metrics").text
        assert "nextclick_sessions_swept_total 5" in metrics


def test_an_event_id_is_bound_to_its_payload(client: TestClient, db: redis.Redis) -> None:
    first = {"item_id": "i1", "event_id": "e-1", "timestamp": T0}
    assert client.post("/sessions/s/events", json=first).json()["accepted"] == 1
    again = client.post("/sessions/s/events", json=first).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    changed = client.post("/sessions/s/events", json={**first, "item_id": "i2"})
    assert_error(changed, 409, "event_id_reused")
    assert changed.json()["error"]["details"] == {"event_id": "e-1"}
    # refused as a whole: the fresh event sent beside it is not recorded either
    batch = client.post("/sessions/s/events", json={"events": [
        {"item_id": "i3", "event_id": "e-2", "timestamp": T0 + 1},
        {"item_id": "i9", "event_id": "e-1", "timestamp": T0}]})
    assert_error(batch, 409, "event_id_reused")
    assert [c["item_id"] for c in client.get("/sessions/s").json()["clicks"]] == ["i1"]
    # the same id twice in one request with two payloads is refused too
    twice = client.post("/sessions/t/events", json={"events": [
        {"item_id": "i1", "event_id": "x"}, {"item_id": "i2", "event_id": "x"}]})
    assert_error(twice, 409, "event_id_reused")


def test_timestamps_far_in_the_future_are_refused(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_future_skew": 60.0}))) as client:
        now = time.time()
        response = client.post("/sessions/s/events", json={"item_id": "i1",
                                                             "timestamp": now + 3600})
        assert_error(response, 422)
        assert response.json()["error"]["message"].startswith("body.timestamp:")
        assert client.get("/sessions/s").status_code == 404
        assert click(client, "s", "i1", timestamp=now + 30)["accepted"] == 1


def test_repeated_query_parameters(client: TestClient) -> None:
    click(client, "s", "i1", timestamp=T0)
    full = items_of(client.get("/recommend", params={"session_id": "s", "k": 5}).json())
    repeated = client.get(f"/recommend?session_id=s&k=5&exclude={full[0]}&exclude={full[1]}")
    assert repeated.status_code == 200
    assert not {full[0], full[1]} & set(items_of(repeated.json()))
    both = client.get(f"/recommend?session_id=s&k=5&exclude={full[0]},{full[1]}")
    assert items_of(both.json()) == items_of(repeated.json())
    for query in ("k=5&k=6", "session_id=s&session_id=t", "model=gru4rec&model=hrnn-init"):
        response = client.get(f"/recommend?{query}")
        assert_error(response, 422)
        assert "given more than once" in response.json()["error"]["message"]
    twice = client.post("/sessions/s/events?k=1&k=2", json={"item_id": "i2"})
    assert_error(twice, 422)

