"""RUM served with per-user memory in Redis: real Redis, real ONNX bundles, real app.

The memories of two users diverge with their own clicks, are written once per session
(folded on session end) and per click (the session state), survive a restart of the
service (a new app on the same Redis), and are rebuilt from the user's event history in
Redis when a new model version is deployed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine import ModelBundle
from service.settings import Settings

T0 = 1_700_000_000.0
N_ITEMS = 40
ITEMS = [f"i{index}" for index in range(1, N_ITEMS + 1)]


@pytest.fixture(scope="module")
def rum_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from models import registry
    from training.export.writer import export_bundle

    root = tmp_path_factory.mktemp("rum-artifacts")
    for name in ("rum-item", "rum-feature"):
        torch.manual_seed(0)
        model = registry.build(name, N_ITEMS, 5, embedding_size=8, memory_slots=4, alpha=1.0)
        export_bundle(model, ITEMS, root, version="v1", popular=[(ITEMS[0], 1)])
    return root


def _settings(redis_url: str, artifacts: Path, tmp_path: Path, model: str) -> Settings:
    return Settings(redis_url=redis_url, artifacts_dir=artifacts, data_dir=tmp_path / "var",
                    default_model=model, inference_threads=1)


@pytest.fixture
def db(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _play(client: TestClient, user: str, session: str, items: list[str], t0: float) -> None:
    for offset, item in enumerate(items):
        response = client.post(f"/sessions/{session}/events",
                               json={"item_id": item, "user_id": user, "timestamp": t0 + offset,
                                     "event_id": f"{session}-{offset}"})
        assert response.status_code == 200, response.text
    # a retried event (same event_id) must not be written into the memory twice
    again = client.post(f"/sessions/{session}/events",
                        json={"item_id": items[-1], "user_id": user,
                              "timestamp": t0 + len(items) - 1,
                              "event_id": f"{session}-{len(items) - 1}"})
    assert again.json()["duplicates"] == 1
    assert client.post(f"/sessions/{session}/end").status_code == 200


def _user_memory(db: redis.Redis, bundle: ModelBundle, user: str) -> dict[str, np.ndarray]:
    blob = db.hget(f"nc:{{u:{user}}}:state", f"{bundle.key}")
    assert blob is not None, f"no {bundle.key} state for {user}"
    return bundle.decode_user(blob)


def _recommend(client: TestClient, user: str, source: str = "user"
               ) -> list[tuple[str, float]]:
    body = client.get("/recommend", params={"user_id": user, "k": 10}).json()
    assert body["source"] == source, body
    return [(entry["item_id"], entry["score"]) for entry in body["recommendations"]]


@pytest.mark.parametrize("model", ["rum-item", "rum-feature"])
def test_user_memories_diverge_and_survive_a_restart(model: str, redis_url: str,
                                                     rum_artifacts: Path, tmp_path: Path,
                                                     db: redis.Redis) -> None:
    settings = _settings(redis_url, rum_artifacts, tmp_path, model)
    bundle = ModelBundle(rum_artifacts / model / "v1")
    with TestClient(create_app(settings)) as client:
        _play(client, "ann", "a1", ["i1", "i2", "i3"], T0)
        _play(client, "bob", "b1", ["i30", "i31"], T0)
        ann, bob = _recommend(client, "ann"), _recommend(client, "bob")
        assert ann != bob
        ann_memory = _user_memory(db, bundle, "ann")
        bob_memory = _user_memory(db, bundle, "bob")
        if model == "rum-item":  # FIFO of item indices, newest first, partially filled
            assert ann_memory["user_slots"].tolist() == [[3, 2, 1, 0]]
            assert bob_memory["user_slots"].tolist() == [[31, 30, 0, 0]]
        else:
            assert not np.allclose(ann_memory["user_memory"], bob_memory["user_memory"])
            assert np.abs(ann_memory["user_memory"]).sum() > 0
        # a new user has no memory: p* only, the same list as any other new user
        assert _recommend(client, "cid", "start") == _recommend(client, "dee", "start")
        # the click path writes the session's memory after each accepted event
        response = client.post("/sessions/a2/events",
                               json={"item_id": "i4", "user_id": "ann", "timestamp": T0 + 99})
        assert response.status_code == 200
        if model == "rum-item":
            state = bundle.decode_session(db.hget("nc:{s:a2}:state", bundle.key))  # type: ignore[arg-type]
            assert state["slots"].tolist() == [[4, 3, 2, 1]]
        client.post("/sessions/a2/end")
        ann_after = _recommend(client, "ann")
        assert ann_after != ann
        folded = db.hget("nc:{u:ann}:state", f"{bundle.key}#n")

    # restart: a new service on the same Redis serves the same memories
    with TestClient(create_app(settings)) as client:
        assert _recommend(client, "ann") == ann_after
        assert _recommend(client, "bob") == bob
        assert db.hget("nc:{u:ann}:state", f"{bundle.key}#n") == folded


def test_new_model_version_rebuilds_memory_from_history(redis_url: str, rum_artifacts: Path,
                                                        tmp_path: Path, db: redis.Redis) -> None:
    import shutil

    artifacts = tmp_path / "artifacts"
    shutil.copytree(rum_artifacts / "rum-item", artifacts / "rum-item")
    settings = _settings(redis_url, artifacts, tmp_path, "rum-item")
    with TestClient(create_app(settings)) as client:
        _play(client, "ann", "a1", ["i5", "i6"], T0)
        _play(client, "ann", "a2", ["i7"], T0 + 100)
        first = _recommend(client, "ann")
    # deploy v2 (the same weights under a new version): no v2 state in Redis yet
    shutil.copytree(artifacts / "rum-item" / "v1", artifacts / "rum-item" / "v2")
    import json

    manifest_path = artifacts / "rum-item" / "v2" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = "v2"
    manifest_path.write_text(json.dumps(manifest))
    with TestClient(create_app(settings)) as client:
        rebuilt = _recommend(client, "ann")
        v2 = ModelBundle(artifacts / "rum-item" / "v2")
        assert v2.key != "rum-item@v1"
        assert _user_memory(db, v2, "ann")["user_slots"].tolist() == [[7, 6, 5, 0]]
    assert rebuilt == first
