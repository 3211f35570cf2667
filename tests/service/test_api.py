"""The HTTP API against a real Redis and real ONNX bundles (in-process ASGI)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings

T0 = 1_700_000_000.0
HRNN_FIELD = "hrnn-init@v1"


def click(client: TestClient, session: str, item: str, **fields: Any) -> dict[str, Any]:
    params = fields.pop("params", None)
    response = client.post(f"/sessions/{session}/events", json={"item_id": item, **fields},
                           params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def items_of(body: dict[str, Any]) -> list[str]:
    return [entry["item_id"] for entry in body["recommendations"]]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code


# ---- lifecycle -----------------------------------------------------------------------
def test_session_lifecycle_click_get_end(client: TestClient) -> None:
    first = click(client, "s1", "i3", user_id="u1", timestamp=T0)
    assert first["accepted"] == 1 and first["duplicates"] == 0
    assert first["user_id"] == "u1" and first["session_id"] == "s1"
    assert first["model"] == {"name": "hrnn-init", "version": "v1"}
    assert len(first["recommendations"]) == 20
    scores = [entry["score"] for entry in first["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    assert len(first["recommendation_id"]) == 32
    click(client, "s1", "i7", timestamp=T0 + 5)  # user_id is remembered by the session

    session = client.get("/sessions/s1").json()
    assert session["status"] == "open" and session["user_id"] == "u1"
    assert [(c["item_id"], c["timestamp"]) for c in session["clicks"]] == [
        ("i3", T0), ("i7", T0 + 5)]
    assert session["started_at"] == T0 and session["last_event_at"] == T0 + 5

    ended = client.post("/sessions/s1/end")
    assert ended.status_code == 200
    assert ended.json() == {"session_id": "s1", "user_id": "u1", "status": "closed",
                            "clicks": 2}
    assert client.get("/sessions/s1").json()["status"] == "closed"
    assert client.post("/sessions/s1/end").json()["status"] == "closed"  # idempotent
    assert_error(client.post("/sessions/nope/end"), 404, "unknown_session")
    assert_error(client.get("/sessions/nope"), 404, "unknown_session")

    # A click on a closed session id starts a new generation with a fresh click list.
    click(client, "s1", "i9", user_id="u1", timestamp=T0 + 100)
    session = client.get("/sessions/s1").json()
    assert session["status"] == "open"
    assert [c["item_id"] for c in session["clicks"]] == ["i9"]


def test_out_of_order_timestamps_follow_the_documented_rule(client: TestClient) -> None:
    """Arrival order is click order; last_event_at is the maximum; an older timestamp
    never triggers the idle rollover, and idleness is measured from the maximum."""
    idle = 1800.0
    click(client, "ooo", "i1", timestamp=T0 + 100)
    click(client, "ooo", "i2", timestamp=T0)  # late-arriving older event
    click(client, "ooo", "i3", timestamp=T0 + 100 - 2 * idle)  # far older: no rollover
    session = client.get("/sessions/ooo").json()
    assert [(c["item_id"], c["timestamp"]) for c in session["clicks"]] == [
        ("i1", T0 + 100), ("i2", T0), ("i3", T0 + 100 - 2 * idle)]
    assert session["last_event_at"] == T0 + 100 and session["started_at"] == T0 + 100
    # Within the timeout of the maximum (not of the last arrival): same session.
    click(client, "ooo", "i4", timestamp=T0 + 100 + idle)
    assert len(client.get("/sessions/ooo").json()["clicks"]) == 4
    # Past the timeout of the maximum: the next generation starts with this click.
    click(client, "ooo", "i5", timestamp=T0 + 100 + 2 * idle + 1)
    assert [c["item_id"] for c in client.get("/sessions/ooo").json()["clicks"]] == ["i5"]


def test_recommendations_follow_the_clicks(client: TestClient) -> None:
    after_one = click(client, "s", "i1")
    after_two = click(client, "s", "i20")
    assert after_one["recommendations"] != after_two["recommendations"]
    # /recommend on the session returns exactly the list of the last click.
    again = client.get("/recommend", params={"session_id": "s"}).json()
    assert again["source"] == "session" and again["accepted"] == 0
    assert again["recommendations"] == after_two["recommendations"]


def test_batch_of_events_and_k(client: TestClient) -> None:
    body = {"events": [{"item_id": "i1", "event_id": "a"}, {"item_id": "i2", "event_id": "b"},
                       {"item_id": "i2", "event_id": "b"}]}
    response = client.post("/sessions/b/events", json=body, params={"k": 5})
    assert response.status_code == 200
    data = response.json()
    assert data["accepted"] == 2 and data["duplicates"] == 1
    assert len(data["recommendations"]) == 5


def test_unknown_item_is_accepted_and_recorded(client: TestClient) -> None:
    known = click(client, "s", "i4")
    unknown = click(client, "s", "never-seen-item")
    assert unknown["accepted"] == 1
    # Unknown items are not embedded: the state (and so the list) does not move.
    assert unknown["recommendations"] == known["recommendations"]
    clicks = client.get("/sessions/s").json()["clicks"]
    assert [c["item_id"] for c in clicks] == ["i4", "never-seen-item"]


def test_duplicate_event_id_is_counted_not_appended(client: TestClient) -> None:
    first = click(client, "s", "i1", event_id="e-1")
    repeat = click(client, "s", "i1", event_id="e-1")
    assert first["accepted"] == 1 and first["duplicates"] == 0
    assert repeat["accepted"] == 0 and repeat["duplicates"] == 1
    assert repeat["recommendations"] == first["recommendations"]
    assert len(client.get("/sessions/s").json()["clicks"]) == 1
    metrics = client.get("/metrics").text
    assert "nextclick_duplicate_events_total 1" in metrics


def test_exclude_seen_and_exclude(client: TestClient) -> None:
    plain = click(client, "s", "i1")
    seen_items = set(items_of(plain)[:3])
    for item in seen_items:
        click(client, "s", item)
    excluded = client.get("/recommend", params={"session_id": "s", "exclude_seen": "true",
                                                "k": 10}).json()
    assert not (seen_items | {"i1"}) & set(items_of(excluded))
    assert len(excluded["recommendations"]) == 10
    popular = client.get("/recommend", params={"exclude": "i1,i2", "k": 3}).json()
    assert popular["source"] == "popular"
    assert items_of(popular) == ["i3", "i4", "i5"]


def test_other_model_catches_up_lazily_from_the_click_list(client: TestClient,
                                                           db: redis.Redis) -> None:
    for item in ("i1", "i2", "i3"):
        click(client, "s", item)
    # gru4rec never saw this session: it folds the three stored clicks on first use.
    lazily = client.get("/recommend", params={"session_id": "s", "model": "gru4rec"}).json()
    assert lazily["model"]["name"] == "gru4rec"
    assert db.hget("nc:{s:s}:state", "gru4rec@v1#n") == "3"
    for item in ("i1", "i2", "i3"):
        direct = click(client, "fresh", item, params={"model": "gru4rec"})
    assert direct["recommendations"] == lazily["recommendations"]


# ---- user state ----------------------------------------------------------------------
def user_history(db: redis.Redis, user: str) -> tuple[int, list[list[str]]]:
    total = int(db.hget(f"nc:{{u:{user}}}:meta", "sessions_total") or 0)
    return total, [json.loads(entry) for entry in db.lrange(f"nc:{{u:{user}}}:history", 0, -1)]


def test_user_folded_once_on_explicit_end(client: TestClient, db: redis.Redis) -> None:
    click(client, "s1", "i1", user_id="u", timestamp=T0)
    click(client, "s1", "i2", user_id="u", timestamp=T0 + 10)
    for _ in range(3):
        assert client.post("/sessions/s1/end").status_code == 200
    assert user_history(db, "u") == (1, [["i1", "i2"]])
    assert db.hget("nc:{u:u}:meta", "open_session") is None


def test_user_folded_once_on_idle_timeout(client: TestClient, db: redis.Redis) -> None:
    click(client, "s1", "i1", user_id="u", timestamp=T0)
    click(client, "s1", "i2", user_id="u", timestamp=T0 + 60)
    late = T0 + 60 + 31 * 60
    after = click(client, "s1", "i3", user_id="u", timestamp=late)
    assert after["accepted"] == 1
    session = client.get("/sessions/s1").json()
    assert [c["item_id"] for c in session["clicks"]] == ["i3"]
    assert session["started_at"] == late and session["status"] == "open"
    assert user_history(db, "u") == (1, [["i1", "i2"]])
    click(client, "s1", "i4", user_id="u", timestamp=late + 5)  # same session, no rollover
    assert user_history(db, "u") == (1, [["i1", "i2"]])
    # The user's state folded that one session exactly once for the new session's start.
    assert db.hget("nc:{u:u}:state", f"{HRNN_FIELD}#n") == "1"
    # An anonymous session rolls over too (nobody to fold into).
    click(client, "anon", "i1", timestamp=T0)
    click(client, "anon", "i2", timestamp=T0 + 3600)
    assert [c["item_id"] for c in client.get("/sessions/anon").json()["clicks"]] == ["i2"]
    assert "nextclick_session_rollovers_total 2" in client.get("/metrics").text


def test_user_folded_once_on_next_session(client: TestClient, db: redis.Redis) -> None:
    click(client, "s1", "i1", user_id="u", timestamp=T0)
    click(client, "s1", "i2", user_id="u", timestamp=T0 + 1)
    click(client, "s2", "i5", user_id="u", timestamp=T0 + 100)
    assert client.get("/sessions/s1").json()["status"] == "closed"
    assert db.hget("nc:{u:u}:meta", "open_session") == "s2"
    click(client, "s2", "i6", user_id="u", timestamp=T0 + 101)
    assert user_history(db, "u") == (1, [["i1", "i2"]])
    assert client.post("/sessions/s1/end").status_code == 200  # already closed: no-op
    assert user_history(db, "u")[0] == 1


def test_close_interrupted_between_seal_and_fold_is_completed_later(
        client: TestClient, settings: Settings, db: redis.Redis) -> None:
    """A process that dies after sealing a session (session slot) but before folding it
    into the user (user slot): the next closer (the user's next session, a repeated end,
    or the same session id resuming) finds the sealed generation and folds it, once."""
    from service.store import StateStore

    users = ("u1", "u2", "u3")
    for user in users:
        click(client, f"{user}-a", "i1", user_id=user, timestamp=T0)
        click(client, f"{user}-a", "i2", user_id=user, timestamp=T0 + 1)

    async def seal_only() -> None:
        assert settings.redis_url is not None
        store = StateStore.from_url(settings.redis_url, settings)
        for user in users:
            await store.seal_session(f"{user}-a", expected_gen=None, expected_user=user,
                                     now=T0 + 2)
        await store.close()

    asyncio.run(seal_only())
    assert db.hget("nc:{u:u1}:meta", "sessions_total") is None  # the fold never ran
    click(client, "u1-b", "i3", user_id="u1", timestamp=T0 + 10)  # next session
    assert client.post("/sessions/u2-a/end").status_code == 200  # repeated end
    click(client, "u2-b", "i3", user_id="u2", timestamp=T0 + 10)
    click(client, "u3-a", "i3", user_id="u3", timestamp=T0 + 10)  # same id resumes
    assert [c["item_id"] for c in client.get("/sessions/u3-a").json()["clicks"]] == ["i3"]
    for user in users:
        assert db.hget(f"nc:{{u:{user}}}:meta", "sessions_total") == "1"
        assert db.lrange(f"nc:{{u:{user}}}:history", 0, -1) == ['["i1", "i2"]']


def test_returning_user_gets_a_personal_start(client: TestClient, db: redis.Redis) -> None:
    for offset, item in enumerate(("i1", "i2", "i3", "i4")):
        click(client, "past", item, user_id="u", timestamp=T0 + offset)
    client.post("/sessions/past/end")

    personal = client.get("/recommend", params={"user_id": "u"}).json()
    popular = client.get("/recommend").json()
    stranger = client.get("/recommend", params={"user_id": "nobody"}).json()
    assert personal["source"] == "user" and popular["source"] == "popular"
    assert personal["recommendations"] != stranger["recommendations"]
    assert db.hget("nc:{u:u}:state", f"{HRNN_FIELD}#n") == "1"  # cached, folded once

    returning = click(client, "new", "i9", user_id="u", timestamp=T0 + 7200)
    anonymous = click(client, "anon", "i9", timestamp=T0 + 7200)
    assert returning["recommendations"] != anonymous["recommendations"]


def test_session_of_another_user_is_a_conflict(client: TestClient) -> None:
    click(client, "s", "i1", user_id="alice")
    response = client.post("/sessions/s/events", json={"item_id": "i2", "user_id": "bob"})
    assert_error(response, 409, "session_user_conflict")
    assert len(client.get("/sessions/s").json()["clicks"]) == 1


def test_delete_user_erases_user_and_sessions(client: TestClient, db: redis.Redis) -> None:
    click(client, "s1", "i1", user_id="u", timestamp=T0, event_id="e1")
    click(client, "s2", "i2", user_id="u", timestamp=T0 + 10, event_id="e2")
    click(client, "other", "i2", user_id="v", timestamp=T0, event_id="e3")
    assert db.exists("nc:{s:s1}:events", "nc:{s:s2}:events") == 2
    response = client.delete("/users/u")
    assert response.status_code == 204
    assert not list(db.scan_iter("nc:{u:u}:*"))
    # Sessions, their states and the idempotency record of their event ids are gone.
    assert not list(db.scan_iter("nc:{s:s1}:*")) and not list(db.scan_iter("nc:{s:s2}:*"))
    assert db.exists("nc:{s:other}:meta", "nc:{s:other}:events", "nc:{u:v}:meta") == 3
    assert client.delete("/users/u").status_code == 204  # idempotent


# ---- concurrency -----------------------------------------------------------------------
def test_concurrent_clicks_on_one_session_all_land(settings: Settings,
                                                   db: redis.Redis) -> None:
    app = create_app(settings)
    items = [f"i{index}" for index in range(1, 21)]

    async def main() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                return list(await asyncio.gather(*(
                    http.post("/sessions/busy/events", json={"item_id": item, "user_id": "u",
                                                             "event_id": f"e{item}"})
                    for item in items)))

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 20
    assert sum(r.json()["accepted"] for r in responses) == 20
    stored = [entry.split("\t")[1] for entry in db.lrange("nc:{s:busy}:clicks", 0, -1)]
    assert sorted(stored) == sorted(items)
    assert db.hget("nc:{s:busy}:meta", "total") == "20"
    # The compare-and-set kept the state that folded all 20 clicks.
    assert db.hget("nc:{s:busy}:state", f"{HRNN_FIELD}#n") == "20"


# ---- bad input -------------------------------------------------------------------------
BAD_REQUESTS = [
    ("malformed-json", "post", "/sessions/s/events", {"content": b'{"item_id": "i1"',
                                                      "headers": {"content-type":
                                                                  "application/json"}},
     400),
    ("missing-item", "post", "/sessions/s/events", {"json": {"user_id": "u"}}, 422),
    ("empty-item", "post", "/sessions/s/events", {"json": {"item_id": ""}}, 422),
    ("item-with-tab", "post", "/sessions/s/events", {"json": {"item_id": "a\tb"}}, 422),
    ("long-item", "post", "/sessions/s/events", {"json": {"item_id": "x" * 129}}, 422),
    ("eleven-events", "post", "/sessions/s/events",
     {"json": {"events": [{"item_id": "i1"}] * 11}}, 422),
    ("no-events", "post", "/sessions/s/events", {"json": {"events": []}}, 422),
    ("not-an-object", "post", "/sessions/s/events", {"json": ["i1"]}, 422),
    ("extra-field", "post", "/sessions/s/events", {"json": {"item_id": "i1", "x": 1}}, 422),
    ("two-users", "post", "/sessions/s/events",
     {"json": {"events": [{"item_id": "i1", "user_id": "a"},
                          {"item_id": "i2", "user_id": "b"}]}}, 422),
    ("nan-timestamp", "post", "/sessions/s/events",
     {"content": b'{"item_id": "i1", "timestamp": NaN}',
      "headers": {"content-type": "application/json"}}, 422),
    ("form-content-type", "post", "/sessions/s/events",
     {"content": b'{"item_id": "i1"}',
      "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415),
    ("k-zero", "post", "/sessions/s/events?k=0", {"json": {"item_id": "i1"}}, 422),
    ("k-huge", "post", "/sessions/s/events?k=1000000000", {"json": {"item_id": "i1"}}, 422),
    ("k-text", "get", "/recommend?k=ten", {}, 422),
    ("unknown-model", "post", "/sessions/s/events?model=nope", {"json": {"item_id": "i1"}},
     404),
    ("bad-session-charset", "post", "/sessions/a%20b/events", {"json": {"item_id": "i1"}},
     422),
    ("bad-session-long", "post", f"/sessions/{'s' * 129}/events", {"json": {"item_id": "i1"}},
     422),
    ("bad-user-charset", "post", "/sessions/s/events",
     {"json": {"item_id": "i1", "user_id": "u{x}"}}, 422),
    ("bad-user-path", "delete", "/users/u%24", {}, 422),
    ("oversize", "post", "/sessions/s/events",
     {"json": {"events": [{"item_id": "i" * 100}] * 1000}}, 413),
    ("unknown-route", "get", "/nowhere", {}, 404),
    ("wrong-method", "put", "/sessions/s/events", {"json": {}}, 405),
]


@pytest.mark.parametrize(("method", "url", "kwargs", "status"),
                         [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_in_the_error_shape(client: TestClient, method: str, url: str,
                                                 kwargs: dict[str, Any], status: int) -> None:
    response = client.request(method, url, **kwargs)
    assert_error(response, status)
    assert client.get("/sessions/s").status_code == 404  # nothing was recorded


def test_oversize_streamed_body_without_length(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"max_body_bytes": 1024}))

    def chunks() -> Iterator[bytes]:
        yield b'{"item_id": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    with TestClient(app) as small:
        response = small.post("/sessions/s/events", content=chunks(),
                              headers={"content-type": "application/json"})
        assert_error(response, 413, "payload_too_large")


def test_api_keys(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"api_keys": ["secret-1", "secret-2"]}))
    with TestClient(app) as keyed:
        assert_error(keyed.post("/sessions/s/events", json={"item_id": "i1"}), 401,
                     "unauthorized")
        assert_error(keyed.get("/models", headers={"X-API-Key": "wrong"}), 401)
        ok = keyed.post("/sessions/s/events", json={"item_id": "i1"},
                        headers={"X-API-Key": "secret-2"})
        assert ok.status_code == 200
        assert keyed.get("/healthz").status_code == 200
        assert keyed.get("/readyz").status_code == 200
        assert keyed.get("/openapi.json").status_code == 200


# ---- operations ------------------------------------------------------------------------
def test_models_health_metrics_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "redis": True, "models": 2}
    models = client.get("/models").json()
    assert models["default"] == "hrnn-init"
    assert {m["name"] for m in models["models"]} == {"hrnn-init", "gru4rec"}
    reloaded = client.post("/admin/reload").json()
    assert sorted(reloaded["loaded"]) == ["gru4rec@v1", "hrnn-init@v1"]
    click(client, "s", "i1")
    text = client.get("/metrics").text
    assert "nextclick_clicks_accepted_total 1" in text
    assert 'route="/sessions/{session_id}/events",status="200"' in text
    assert "nextclick_http_request_duration_seconds_bucket" in text
    schema = client.get("/openapi.json").json()
    assert "/sessions/{session_id}/events" in schema["paths"]
    assert client.get("/").status_code == 200


# ---- Redis Cluster -----------------------------------------------------------------------
def test_api_flow_on_a_redis_cluster(settings: Settings, cluster_url: str) -> None:
    """Session and user keys live on different slots (and masters): the click path, the
    close-and-fold across them, personalisation and erasure all hold on a real cluster."""
    cluster = redis.RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"),
                                          decode_responses=True)
    slots = {cluster.keyslot(key) for key in ("nc:{s:c1}:meta", "nc:{s:c2}:meta",
                                               "nc:{u:cu}:meta")}
    assert len(slots) == 3
    app = create_app(settings.model_copy(update={"redis_url": cluster_url}))
    with TestClient(app) as client:
        for offset, item in enumerate(("i1", "i2", "i3")):
            click(client, "c1", item, user_id="cu", timestamp=T0 + offset, event_id=f"e{item}")
        assert click(client, "c1", "i3", user_id="cu", timestamp=T0 + 2,
                     event_id="ei3")["duplicates"] == 1
        assert [c["item_id"] for c in client.get("/sessions/c1").json()["clicks"]] == \
            ["i1", "i2", "i3"]
        # The user's next session closes c1 and folds it into the user, once.
        click(client, "c2", "i4", user_id="cu", timestamp=T0 + 100)
        assert client.post("/sessions/c1/end").status_code == 200
        assert cluster.hget("nc:{u:cu}:meta", "sessions_total") == "1"
        assert [json.loads(h) for h in cluster.lrange("nc:{u:cu}:history", 0, -1)] == \
            [["i1", "i2", "i3"]]
        personal = client.get("/recommend", params={"user_id": "cu", "k": 5}).json()
        assert personal["source"] == "user" and len(personal["recommendations"]) == 5
        assert cluster.hget("nc:{u:cu}:state", f"{HRNN_FIELD}#n") == "1"
        assert client.get("/readyz").status_code == 200
        assert client.delete("/users/cu").status_code == 204
        assert client.get("/sessions/c1").status_code == 404
        assert client.get("/sessions/c2").status_code == 404
        assert not cluster.exists("nc:{u:cu}:meta", "nc:{u:cu}:history", "nc:{s:c1}:events")
    cluster.close()
