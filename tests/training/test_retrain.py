"""The closed loop end to end on a real service: clicks served -> the event log exported ->
a candidate retrained and gated against the served version through the serving engine ->
installed and reloaded; a user's personalised start-of-session list survives it, rebuilt by
the new version from the user's history."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import polars as pl
import pytest
import redis
from fastapi.testclient import TestClient

from models import registry
from service.app import create_app
from service.event_log import export_events
from service.settings import Settings
from service.store import connect
from training.export.writer import export_bundle
from training.retrain import latest_bundle, retrain

pytestmark = pytest.mark.usefixtures("single_thread")
T0 = 1_700_000_000.0
DAY = 86_400.0
ITEMS = [f"i{index}" for index in range(1, 31)]


def _walk(user: int, session: int) -> list[str]:
    """Sessions that walk i -> i+1 inside the user's block of items."""
    first = 1 + (user * 5 + session * 2) % 25
    return [ITEMS[(first - 1 + step) % 30] for step in range(3 + (user + session) % 4)]


def test_retrain_gate_install_reload_keeps_a_users_personal_list(
        tmp_path: Path, redis_url: str) -> None:
    artifacts = tmp_path / "artifacts"
    served = registry.build("hrnn-init", len(ITEMS), 1)  # random weights: the champion
    export_bundle(served.eval(), ITEMS, artifacts, version="v1",
                  popular=[(item, 30 - i) for i, item in enumerate(ITEMS)])
    settings = Settings(redis_url=redis_url, artifacts_dir=artifacts,
                        data_dir=tmp_path / "var")
    with TestClient(create_app(settings)) as client:
        for user in range(40):
            for session in range(5):
                clock = T0 + session * DAY + user * 60  # five days; the last is the holdout
                for step, item in enumerate(_walk(user, session)):
                    assert client.post(f"/sessions/u{user}-s{session}/events", json={
                        "item_id": item, "user_id": f"u{user}",
                        "timestamp": clock + step}).status_code == 200
                client.post(f"/sessions/u{user}-s{session}/end", json={})
        before = client.get("/recommend", params={"user_id": "u7", "k": 5}).json()
        stranger = client.get("/recommend", params={"user_id": "nobody", "k": 5}).json()
        assert before["source"] == "user" and before["model"]["version"] == "v1"

        async def export() -> int:
            store_client = connect(redis_url, settings)
            try:
                return (await export_events(store_client, tmp_path / "events")).events
            finally:
                await store_client.aclose()

        assert asyncio.run(export()) == sum(len(_walk(u, s)) for u in range(40)
                                            for s in range(5))
        gate = retrain(tmp_path / "events", "hrnn-init", artifacts, tmp_path / "work",
                       holdout_days=1.0, metric="recall@5", epochs=4, progress=False)
        assert gate.current is not None and gate.current["model"] == "hrnn-init@v1"
        assert gate.candidate["targets"] == gate.current["targets"] > 50
        # a trained model against random weights on walks it can learn
        assert gate.promoted and gate.candidate["recall@5"] > gate.current["recall@5"]
        assert gate.bundle == latest_bundle(artifacts, "hrnn-init")
        record = json.loads((tmp_path / "work" / "gate.json").read_text())
        assert record["promoted"] and record["metric"] == "recall@5"

        # A base log holding the same clicks again counts each once (the holdout does not
        # double), and a holdout smaller than --min-holdout installs nothing.
        logged = pl.read_parquet(tmp_path / "events" / "*.parquet")
        logged.select("user_id", "session_id", "item_id", "timestamp").write_csv(
            tmp_path / "base.csv")
        again = retrain(tmp_path / "events", "hrnn-init", artifacts, tmp_path / "work-2",
                        base=tmp_path / "base.csv", holdout_days=1.0, min_holdout=10_000,
                        metric="recall@5", epochs=1, progress=False)
        assert again.candidate["targets"] == gate.candidate["targets"]
        assert not again.promoted and "fewer than 10,000" in again.reason
        assert latest_bundle(artifacts, "hrnn-init") == gate.bundle

        reloaded = client.post("/admin/reload", json={})
        assert reloaded.status_code == 200, reloaded.text
        listed = {entry["key"]: entry for entry in client.get("/models").json()["models"]}
        # the new version's headline accuracy is the gate's score of it
        assert listed[gate.candidate["model"]]["accuracy"] == {
            "recall@20": gate.candidate["recall@20"], "mrr@20": gate.candidate["mrr@20"],
            "n": gate.candidate["targets"]}
        new_version = gate.bundle.name if gate.bundle else ""
        after = client.get("/recommend", params={"user_id": "u7", "k": 5}).json()
        fresh = client.get("/recommend", params={"user_id": "nobody-else", "k": 5}).json()
    assert after["model"]["version"] == new_version and after["source"] == "user"
    # the new version rebuilt u7's state from u7's five sessions of history
    db = redis.Redis.from_url(redis_url, decode_responses=True)
    assert db.hget("nc:{u:u7}:state", f"hrnn-init@{new_version}#n") == "5"
    db.close()
    assert [r["item_id"] for r in after["recommendations"]] != \
        [r["item_id"] for r in fresh["recommendations"]]  # personal, not a new user's list
    assert stranger["source"] != "user" or stranger["recommendations"] != before[
        "recommendations"]
