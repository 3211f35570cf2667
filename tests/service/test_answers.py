"""What the answers say: unknown items named, a batch's user given once, errors at the
field sent, a truthful ``source``, popular scores on one scale, compact ``/models``, and
clicks attributed to the list they were made in (session lists and start-of-session lists).
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.service.test_api import assert_error, click, items_of

T0 = 1_700_000_000.0


def attributed(client: TestClient) -> dict[tuple[str, str], float]:
    """nextclick_attributed_clicks_total by (model, position)."""
    found = {}
    for model, position, value in re.findall(
            r'^nextclick_attributed_clicks_total\{model="([^"]+)",position="([^"]+)"\} (\S+)$',
            client.get("/metrics").text, re.M):
        found[(model, position)] = float(value)
    return found


def test_unknown_items_are_named(client: TestClient) -> None:
    body = click(client, "s", "i1", timestamp=T0)
    assert body["unknown_items"] == []
    body = client.post("/sessions/s/events", json={"events": [
        {"item_id": "not-in-catalogue", "timestamp": T0 + 1},
        {"item_id": "i2", "timestamp": T0 + 2},
        {"item_id": "not-in-catalogue", "timestamp": T0 + 3}]}).json()
    assert body["accepted"] == 3 and body["unknown_items"] == ["not-in-catalogue"]


def test_a_batch_gives_its_user_once_and_errors_point_at_what_was_sent(
        client: TestClient) -> None:
    body = client.post("/sessions/b/events", json={
        "user_id": "u1", "events": [{"item_id": "i1"}, {"item_id": "i2"}]}).json()
    assert body["user_id"] == "u1" and body["accepted"] == 2
    clash = client.post("/sessions/c/events", json={
        "user_id": "u1", "events": [{"item_id": "i1", "user_id": "u2"}]})
    assert_error(clash, 422)
    assert clash.json()["error"]["details"][0]["loc"] == "body.user_id"
    single = client.post("/sessions/d/events", json={"item_id": ""})
    assert_error(single, 422)
    assert single.json()["error"]["details"][0]["loc"] == "body.item_id"
    batch = client.post("/sessions/d/events", json={"events": [{"item_id": "i1"},
                                                               {"item_id": 7}]})
    assert_error(batch, 422)
    assert batch.json()["error"]["details"][0]["loc"] == "body.events[1].item_id"


def test_source_says_where_a_list_comes_from(client: TestClient) -> None:
    assert client.get("/recommend", params={"user_id": "new-user"}).json()["source"] == "start"
    click(client, "past", "i1", user_id="u", timestamp=T0)
    click(client, "past", "i2", user_id="u", timestamp=T0 + 1)
    client.post("/sessions/past/end", json={})
    assert client.get("/recommend", params={"user_id": "u"}).json()["source"] == "user"
    popular = client.get("/recommend", params={"k": 5}).json()
    assert popular["source"] == "popular"
    scores = [entry["score"] for entry in popular["recommendations"]]
    assert scores[0] == 1.0 and all(0 < score <= 1.0 for score in scores)
    assert client.get("/recommend", params={"session_id": "past"}).json()["source"] == "user"
    unknown = client.get("/recommend", params={"session_id": "never-seen"})
    assert_error(unknown, 404, "unknown_session")
    assert client.get("/sessions/never-seen").status_code == 404  # the same answer


def test_models_are_compact_unless_details_are_asked(client: TestClient) -> None:
    compact = client.get("/models").json()
    entry = compact["models"][0]
    assert {"name", "version", "default", "n_items", "user_state", "accuracy"} <= set(entry)
    assert "state" not in entry and "metrics" not in entry
    assert len(client.get("/models").content) < 2000
    detailed = client.get("/models", params={"details": "true"}).json()["models"][0]
    assert {"state", "graphs", "metrics"} <= set(detailed)


def test_clicks_are_attributed_to_the_list_they_name(client: TestClient) -> None:
    first = click(client, "s", "i1", timestamp=T0)
    listed = items_of(first)
    chosen = listed[2]
    click(client, "s", chosen, timestamp=T0 + 1, recommendation_id=first["recommendation_id"])
    second = client.post("/sessions/s/events", json={
        "item_id": "not-listed", "timestamp": T0 + 2,
        "recommendation_id": first["recommendation_id"]}).json()
    assert second["accepted"] == 1
    counts = attributed(client)
    model = f"{first['model']['name']}@{first['model']['version']}"
    assert counts[(model, "3")] == 1 and counts[(model, "0")] == 1
    # a start-of-session list answered for a user: the first click of their next session
    click(client, "old", "i1", user_id="u9", timestamp=T0)
    client.post("/sessions/old/end", json={})
    start = client.get("/recommend", params={"user_id": "u9", "k": 5}).json()
    click(client, "new", items_of(start)[0], user_id="u9", timestamp=T0 + 100,
          recommendation_id=start["recommendation_id"])
    for _ in range(50):  # counted off the click's critical path
        if attributed(client).get((model, "1")):
            break
        client.get("/healthz")
    assert attributed(client)[(model, "1")] == 1
    experiments = client.get("/admin/experiments").json()["models"][model]
    assert experiments["clicks"] == 3 and experiments["hits"] == 2
    assert experiments["lists"] >= 4
    assert experiments["mrr"] == pytest.approx((1 / 3 + 1 / 1 + 0) / 3, abs=1e-4)
