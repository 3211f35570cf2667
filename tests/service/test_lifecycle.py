"""Real HTTP (uvicorn on a free port), Redis outages, the embedded Redis, ``nextclick serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from cli.main import main as nextclick
from service.embedded import EmbeddedRedis, _pid_alive
from tests.servers import LiveServer, free_port

T0 = 1_700_000_000.0


def test_session_lifecycle_over_real_http(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        for offset, item in enumerate(("i1", "i2", "i3")):
            response = http.post("/sessions/web-1/events",
                                 json={"item_id": item, "user_id": "u", "timestamp": T0 + offset},
                                 params={"k": 5})
            assert response.status_code == 200
            assert len(response.json()["recommendations"]) == 5
        session = http.get("/sessions/web-1").json()
        assert [c["item_id"] for c in session["clicks"]] == ["i1", "i2", "i3"]
        assert http.post("/sessions/web-1/end").json()["clicks"] == 3
        assert http.get("/sessions/web-1").json()["status"] == "closed"
        personal = http.get("/recommend", params={"user_id": "u", "k": 5}).json()
        assert personal["source"] == "user" and len(personal["recommendations"]) == 5
        assert http.get("/readyz").status_code == 200


def test_redis_outage_is_503_then_recovers_without_restart(
        live_server: LiveServer, redis_server: EmbeddedRedis | str) -> None:
    if not isinstance(redis_server, EmbeddedRedis):
        pytest.skip("needs the embedded Redis (it is stopped and restarted)")
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        assert http.post("/sessions/o/events", json={"item_id": "i1"}).status_code == 200
        redis_server.kill()
        try:
            down = http.post("/sessions/o/events", json={"item_id": "i2"})
            assert down.status_code == 503
            assert down.headers["retry-after"] == "1"
            assert down.json()["error"]["code"] == "unavailable"
            assert "redis" not in down.json()["error"]["message"].lower()
            assert http.get("/sessions/o").status_code == 503
            assert http.get("/readyz").status_code == 503
            assert http.get("/healthz").status_code == 200
        finally:
            redis_server.restart()
        back = http.post("/sessions/o/events", json={"item_id": "i3"})
        assert back.status_code == 200, back.text
        assert http.get("/readyz").status_code == 200
        assert "nextclick_redis_unavailable_total 2" in http.get("/metrics").text


def test_embedded_redis_persists_and_replaces_an_orphan(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "redis")
    url = first.start()
    client = redis.Redis.from_url(url)
    client.set("kept", "yes")
    client.close()
    assert first.process is not None
    orphan = first.process
    # Simulate a crash of the owner: the server keeps running, the pid file stays, and
    # the folder's lock goes (the kernel drops a dead process's flock).
    first.process = None
    first._release_folder()
    reaper = threading.Thread(target=orphan.wait, daemon=True)
    reaper.start()

    second = EmbeddedRedis(tmp_path / "redis")
    try:
        url = second.start()
        assert not _pid_alive(orphan.pid)  # the leftover server was stopped first
        client = redis.Redis.from_url(url)
        assert client.get("kept") == b"yes"  # the AOF was flushed and replayed
        client.close()
    finally:
        second.stop()
    assert second.process is None and not (tmp_path / "redis" / "redis.pid").exists()


def test_serve_without_models_says_what_to_do(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert nextclick(["serve", "--artifacts", str(tmp_path / "missing")]) == 2
    assert "make run" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert nextclick(["serve", "--artifacts", str(tmp_path / "empty")]) == 2
    assert "nextclick export" in capsys.readouterr().err


def test_serve_command_runs_and_stops_its_redis(artifacts: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("NEXTCLICK_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--artifacts", str(artifacts),
         "--port", str(port), "--data-dir", str(tmp_path / "var"), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pid_file = tmp_path / "var" / "redis" / "redis.pid"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "nextclick serve did not become ready"
            time.sleep(0.1)
        response = httpx.post(f"http://127.0.0.1:{port}/sessions/cli/events",
                              json={"item_id": "i1"}, timeout=10)
        assert response.status_code == 200
        redis_pid = int(pid_file.read_text())
        assert _pid_alive(redis_pid)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0
    deadline = time.monotonic() + 10
    while _pid_alive(redis_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(redis_pid), "embedded redis-server outlived nextclick serve"
    assert not pid_file.exists()


def test_the_serving_path_never_imports_torch() -> None:
    """`nextclick serve` (its parser and everything the service imports) loads neither
    torch nor the training or model packages."""
    code = ("import sys; from cli.main import build_parser; build_parser(['serve']); "
            "import service.app, service.server, service.sessions, service.store, "
            "service.engine, service.embedded, bundle; "
            "loaded = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'training', 'models')]; print(loaded); sys.exit(int(bool(loaded)))")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
