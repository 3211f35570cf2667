"""Faults with real parts: a real redis-server (AOF, ``appendfsync always``) killed with
SIGKILL and restarted while clients post events over real HTTP; broken model bundles at
start and at reload."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from service.app import create_app
from service.embedded import EmbeddedRedis
from service.settings import Settings
from tests.servers import LiveServer

T0 = 1_700_000_000.0


def test_redis_killed_under_load_loses_no_acknowledged_event(artifacts: Path,
                                                              tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True, appendfsync="always")
    server.start()
    settings = Settings(redis_url=server.url, artifacts_dir=artifacts,
                        data_dir=tmp_path / "var", default_model="hrnn-init",
                        inference_threads=2)
    clients, per_client = 4, 120
    acknowledged: list[set[int]] = [set() for _ in range(clients)]
    failures = [0] * clients
    stop_at = time.monotonic() + 120

    def client(index: int) -> None:
        # Each event is retried (same event_id) until acknowledged: the client's side of
        # exactly-once. A 503 or a dropped connection may hide an applied write.
        with httpx.Client(base_url=live.url, timeout=10) as http:
            for n in range(per_client):
                while time.monotonic() < stop_at:
                    try:
                        response = http.post(f"/sessions/load-{index}/events", json={
                            "item_id": f"i{n % 40 + 1}", "event_id": f"c{index}-e{n}",
                            "timestamp": T0 + n})
                    except httpx.TransportError:
                        failures[index] += 1
                        time.sleep(0.02)
                        continue
                    if response.status_code == 200:
                        acknowledged[index].add(n)
                        break
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"] == "1"
                    failures[index] += 1
                    time.sleep(0.02)

    try:
        with LiveServer(settings) as live:
            threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
            for thread in threads:
                thread.start()
            while sum(map(len, acknowledged)) < clients * per_client // 4:
                time.sleep(0.01)
            acked_before_kill = sum(map(len, acknowledged))
            server.kill()  # SIGKILL: no shutdown, no final AOF flush
            time.sleep(0.5)
            server.restart()  # same port and folder: the AOF is replayed
            for thread in threads:
                thread.join(150)
            # The service reconnected by itself: every event was acknowledged in the end.
            assert [len(a) for a in acknowledged] == [per_client] * clients
            assert acked_before_kill < clients * per_client  # the kill came under load
            assert sum(failures) > 0  # and the clients saw it (503 or dropped connection)
        db = redis.Redis.from_url(server.url, decode_responses=True)
        try:
            for index in range(clients):
                stored = db.lrange(f"nc:{{s:load-{index}}}:clicks", 0, -1)
                # Every acknowledged event is stored, exactly once (retries deduplicated).
                timestamps = sorted(float(entry.split("\t")[0]) for entry in stored)
                assert timestamps == [T0 + n for n in range(per_client)]
                assert db.hget(f"nc:{{s:load-{index}}}:meta", "total") == str(per_client)
        finally:
            db.close()
    finally:
        server.stop()


def _break_bundle(artifacts: Path, tmp_path: Path, model: str, version: str) -> Path:
    """A copy of the artifacts with an extra, newest ``version`` of ``model`` whose ONNX
    graphs are garbage."""
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts, root)
    broken = root / model / version
    shutil.copytree(root / model / "v1", broken)
    for graph in broken.glob("*.onnx"):
        graph.write_bytes(b"this is not an onnx file")
    return broken


def test_corrupted_model_at_start_is_skipped_with_a_clear_error(
        settings: Settings, artifacts: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from fastapi.testclient import TestClient

    _break_bundle(artifacts, tmp_path, "hrnn-init", "v2")
    app = create_app(settings.model_copy(update={"artifacts_dir": tmp_path / "artifacts"}))
    with TestClient(app) as client:
        models = client.get("/models").json()
        # The broken newest version is reported; the previous version serves.
        assert models["skipped"] >= 1
        versions = {m["name"]: m["version"] for m in models["models"]}
        assert versions["hrnn-init"] == "v1"
        assert client.post("/sessions/s/events", json={"item_id": "i1"}).status_code == 200
    assert any("v2" in record.getMessage() for record in caplog.records)


def test_missing_model_files_at_start_fail_with_a_clear_message(
        settings: Settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    (tmp_path / "empty").mkdir()
    app = create_app(settings.model_copy(update={"artifacts_dir": tmp_path / "empty"}))
    with pytest.raises(RuntimeError, match="cannot load models"), TestClient(app):
        pass


def test_corrupted_model_at_reload_keeps_the_previous_model_serving(
        settings: Settings, artifacts: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    root = tmp_path / "artifacts"
    shutil.copytree(artifacts, root)
    app = create_app(settings.model_copy(update={"artifacts_dir": root}))
    with TestClient(app) as client:
        assert client.post("/sessions/s/events", json={"item_id": "i1"}).status_code == 200
        for model in ("hrnn-init", "gru4rec"):  # every new version is broken
            broken = root / model / "v2"
            shutil.copytree(root / model / "v1", broken)
            for graph in broken.glob("*.onnx"):
                graph.write_bytes(b"\x00garbage")
            (root / model / "v1" / "manifest.json").unlink()  # and the old one is gone
        response = client.post("/admin/reload")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "reload_failed"
        versions = {m["name"]: m["version"] for m in client.get("/models").json()["models"]}
        assert versions == {"hrnn-init": "v1", "gru4rec": "v1"}
        after = client.post("/sessions/s/events", json={"item_id": "i2"})
        assert after.status_code == 200 and after.json()["model"]["version"] == "v1"
