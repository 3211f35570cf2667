"""Faults with real parts: a real redis-server (AOF, ``appendfsync always``) killed with
SIGKILL and restarted while clients post events over real HTTP; Redis refusing (OOM,
READONLY, MASTERDOWN, NOREPLICAS, BUSY, CLUSTERDOWN), frozen (SIGSTOP) and, as
``nextclick serve``'s embedded server, killed and restarted by its supervisor; broken
model bundles at start and at reload."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.app import create_app
from service.embedded import EmbeddedRedis
from service.settings import Settings
from tests.servers import LiveServer, ServeProcess, _port_pair_free, free_port

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


def test_after_a_redis_restart_no_request_fails_on_a_stale_connection(
        artifacts: Path, tmp_path: Path) -> None:
    """Redis restarted while idle (a deploy, a failover): the pooled connections to the old
    server are dead. Each one's first command fails, is retried once on a new connection,
    and no client sees it. (With the synchronous Retry class the retry never ran and every
    stale connection cost a client a 503.)"""
    from fastapi.testclient import TestClient

    server = EmbeddedRedis(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        settings = Settings(redis_url=server.url, artifacts_dir=artifacts,
                            data_dir=tmp_path / "var", default_model="hrnn-init")
        with TestClient(create_app(settings)) as client:
            for n in range(3):
                assert client.post("/sessions/s/events", json={
                    "item_id": f"i{n + 1}", "event_id": f"e{n}"}).status_code == 200
            server.stop()
            server.restart()  # same port, the AOF replayed
            for n in range(3, 6):
                response = client.post("/sessions/s/events", json={
                    "item_id": f"i{n + 1}", "event_id": f"e{n}"})
                assert response.status_code == 200, response.text
            assert len(client.get("/sessions/s").json()["clicks"]) == 6
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


# ---- Redis refusing: 503 + Retry-After, /readyz 503, then recovery ----------------------
def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    # No internals: neither the server's reply nor the word Redis reaches the client.
    for leaked in ("redis", "oom", "readonly", "script", "maxmemory", "replica"):
        assert leaked not in error["message"].lower()


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, free to be filled, demoted, stopped or frozen."""
    server = EmbeddedRedis(tmp_path / "fault-redis", appendonly=False)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def _settings(artifacts: Path, tmp_path: Path, url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=url, artifacts_dir=artifacts, data_dir=tmp_path / "var",
                    default_model="hrnn-init", inference_threads=2, **overrides)


@contextlib.contextmanager
def _oom(db: redis.Redis) -> Iterator[None]:
    db.set("fill", b"x" * 2_000_000)
    db.config_set("maxmemory", "1mb")  # noeviction is Redis' default policy
    try:
        yield
    finally:
        db.config_set("maxmemory", "0")
        db.delete("fill")


@contextlib.contextmanager
def _readonly(db: redis.Redis) -> Iterator[None]:
    with EmbeddedRedis(Path(tempfile.mkdtemp()), appendonly=False) as master:
        db.replicaof("127.0.0.1", master.port)
        try:
            deadline = time.monotonic() + 20  # a replica after failover: synced, read-only
            while db.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "replica did not sync"
                time.sleep(0.05)
            yield
        finally:
            db.replicaof("NO", "ONE")


@contextlib.contextmanager
def _masterdown(db: redis.Redis) -> Iterator[None]:
    db.config_set("replica-serve-stale-data", "no")
    db.replicaof("127.0.0.1", free_port())  # a master that is not there
    try:
        yield
    finally:
        db.replicaof("NO", "ONE")
        db.config_set("replica-serve-stale-data", "yes")


@contextlib.contextmanager
def _noreplicas(db: redis.Redis) -> Iterator[None]:
    db.config_set("min-replicas-to-write", 1)
    try:
        yield
    finally:
        db.config_set("min-replicas-to-write", 0)


@contextlib.contextmanager
def _busy(db: redis.Redis) -> Iterator[None]:
    """A script that never ends (and writes nothing, so SCRIPT KILL can end it)."""
    db.config_set("lua-time-limit", 50)
    looping = redis.Redis(port=db.connection_pool.connection_kwargs["port"])

    def loop() -> None:
        with contextlib.suppress(redis.RedisError):
            looping.eval("while true do end", 0)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            db.ping()
        except redis.ResponseError as exc:
            assert str(exc).startswith("BUSY")
            break
        assert time.monotonic() < deadline, "the script did not make Redis busy"
        time.sleep(0.02)
    try:
        yield
    finally:
        while thread.is_alive():
            with contextlib.suppress(redis.ResponseError):
                db.script_kill()
            thread.join(0.1)
        db.config_set("lua-time-limit", 5000)
        looping.close()


@pytest.mark.parametrize(("reason", "refuse"), [
    ("oom", _oom), ("readonly", _readonly), ("masterdown", _masterdown),
    ("noreplicas", _noreplicas), ("busy", _busy)])
def test_redis_refusals_answer_503_and_readiness_follows(
        reason: str, refuse: Callable[[redis.Redis], contextlib.AbstractContextManager[None]],
        fault_redis: EmbeddedRedis, artifacts: Path, tmp_path: Path) -> None:
    """OOM (maxmemory reached), READONLY (a replica after failover), MASTERDOWN, NOREPLICAS
    and BUSY all still answer PING: the click path answers 503 + Retry-After (not 500),
    /readyz 503 (its probe writes), each counted by reason, and all recover by themselves."""
    db = redis.Redis.from_url(fault_redis.url)
    event = {"item_id": "i2", "event_id": "e-2", "timestamp": T0 + 1}
    with LiveServer(_settings(artifacts, tmp_path, fault_redis.url)) as live, \
            httpx.Client(base_url=live.url, timeout=10) as http:
        first = http.post("/sessions/f/events", json={"item_id": "i1", "timestamp": T0})
        assert first.status_code == 200
        with refuse(db):
            _assert_unavailable(http.post("/sessions/f/events", json=event))
            ready = http.get("/readyz")
            assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
            assert ready.json()["error"]["details"]["redis"] is False
            assert http.get("/healthz").status_code == 200  # the process itself is fine
            metrics = http.get("/metrics").text
            assert f'nextclick_redis_refusals_total{{reason="{reason}"}} 1' in metrics
            assert "nextclick_redis_unavailable_total 1" in metrics
        back = http.post("/sessions/f/events", json=event)  # the client's retry
        assert back.status_code == 200, back.text
        assert http.get("/readyz").status_code == 200
    db.close()


def test_redis_that_lost_its_cluster_slots_answers_503(artifacts: Path,
                                                        tmp_path: Path) -> None:
    """A cluster node that serves no slot answers CLUSTERDOWN to every key command."""
    from service.embedded import redis_server_binary

    port = free_port()
    while not _port_pair_free(port):  # a cluster node also binds port + 10000
        port = free_port()
    node = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
         "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
         "--dir", str(tmp_path), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        probe = redis.Redis(port=port, retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + 20
        while True:
            assert node.poll() is None, "the cluster node did not start"
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        probe.close()
        with LiveServer(_settings(artifacts, tmp_path, url)) as live, \
                httpx.Client(base_url=live.url, timeout=10) as http:
            _assert_unavailable(http.post("/sessions/c/events", json={"item_id": "i1"}))
            _assert_unavailable(http.get("/sessions/c"))
            assert http.get("/readyz").status_code == 503
            assert 'nextclick_redis_refusals_total{reason="clusterdown"} 2' in \
                http.get("/metrics").text
    finally:
        node.terminate()
        node.wait(10)


@pytest.mark.parametrize(("reply", "reason"), [
    ("TRYAGAIN Multiple keys request during rehashing of slot", "tryagain"),
    ("LOADING Redis is loading the dataset in memory", "loading"),
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to "
     "persist to disk", "misconf"),
    ("ERR Error running script (call to f_0): @user_script:1: @user_script: 1: -OOM command "
     "not allowed when used memory > 'maxmemory'.", "oom"),
    ("OOM command not allowed when used memory > 'maxmemory'. script: f_0, on "
     "@user_script:1.", "oom"),
    ("WRONGTYPE Operation against a key holding the wrong kind of value", None),
    ("BUSYKEY Target key name already exists.", None)])
def test_refusals_that_cannot_be_staged_are_classified(reply: str, reason: str | None) -> None:
    """Replies a single test server cannot be made to send (a resharding cluster, a
    server loading a large dataset, a failing disk, Redis 7's script error format), parsed
    by redis-py's own parser as they would arrive."""
    from redis._parsers import _RESP2Parser

    from service.errors import refusal_reason

    parsed = _RESP2Parser(socket_read_size=65536).parse_error(reply)
    assert refusal_reason(parsed) == reason


def test_a_redis_error_that_is_not_a_refusal_stays_a_500_without_internals(
        fault_redis: EmbeddedRedis, artifacts: Path, tmp_path: Path) -> None:
    """Not everything is the dependency's fault: a corrupt key is our bug, and says so
    (500) without telling the client what Redis said."""
    db = redis.Redis.from_url(fault_redis.url)
    db.set("nc:{s:w}:meta", "not a hash")
    with LiveServer(_settings(artifacts, tmp_path, fault_redis.url)) as live:
        response = httpx.post(f"{live.url}/sessions/w/events", json={"item_id": "i1"},
                              timeout=10)
    assert response.status_code == 500
    assert response.json()["error"] == {"code": "internal_error", "message": "internal error",
                                        "details": None}
    db.close()


def test_frozen_redis_answers_503_within_the_socket_timeout_then_recovers(
        fault_redis: EmbeddedRedis, artifacts: Path, tmp_path: Path) -> None:
    """SIGSTOP: the connection stays open and nothing answers. Requests must not hang:
    503 once the socket timeout (and its one retry) ran out; after SIGCONT, served again."""
    assert fault_redis.process is not None
    settings = _settings(artifacts, tmp_path, fault_redis.url, redis_socket_timeout=0.5)
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        assert http.post("/sessions/z/events", json={"item_id": "i1"}).status_code == 200
        os.kill(fault_redis.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            _assert_unavailable(http.post("/sessions/z/events", json={
                "item_id": "i2", "event_id": "z-2"}))
            # 2 x 0.5 s plus the retry's backoff; generous for a busy 2-core machine.
            assert time.monotonic() - started < 5
            assert http.get("/readyz").status_code == 503
            assert 'nextclick_redis_refusals_total{reason="timeout"}' in \
                http.get("/metrics").text
        finally:
            os.kill(fault_redis.process.pid, signal.SIGCONT)
        deadline = time.monotonic() + 15
        while True:  # the client retries; a connection that timed out is replaced
            back = http.post("/sessions/z/events", json={"item_id": "i2", "event_id": "z-2"})
            if back.status_code == 200:
                break
            _assert_unavailable(back)
            assert time.monotonic() < deadline, "no recovery after SIGCONT"
            time.sleep(0.1)
        assert http.get("/readyz").status_code == 200
        clicks = [c["item_id"] for c in http.get("/sessions/z").json()["clicks"]]
        assert clicks == ["i1", "i2"]  # the frozen attempt and the retry: recorded once


# ---- the embedded Redis dies: supervised restart, no human action ------------------------
def test_embedded_redis_death_is_restarted_counted_and_seen_by_healthz(
        artifacts: Path, tmp_path: Path) -> None:
    """`nextclick serve`'s own Redis is SIGKILLed. While it cannot come back (the test
    holds its port) /healthz and /readyz say so; once it can, the supervisor has restarted
    it on the same port and data (AOF) with no human action, and counted the restart."""
    events = [{"item_id": f"i{n}", "event_id": f"d-{n}", "timestamp": T0 + n}
              for n in range(1, 4)]
    with ServeProcess(artifacts, tmp_path / "var",
                      env={"NEXTCLICK_REDIS_APPENDFSYNC": "always"}) as serve, \
            httpx.Client(base_url=serve.url, timeout=10) as http:
        assert serve.process is not None
        for event in events[:2]:
            assert http.post("/sessions/d/events", json=event).status_code == 200
        port, redis_pid = serve.redis_port(), serve.redis_pid()
        # Freeze nextclick (its supervisor too), kill its Redis and take the port, so the
        # supervisor's restarts fail until the test lets go.
        os.kill(serve.process.pid, signal.SIGSTOP)
        try:
            os.kill(redis_pid, signal.SIGKILL)
            squatter = socket.socket()
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.monotonic() + 10
            while True:
                try:
                    squatter.bind(("127.0.0.1", port))
                    break
                except OSError:  # the killed server's socket is not gone yet
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            squatter.listen()
        finally:
            os.kill(serve.process.pid, signal.SIGCONT)
        try:
            health = http.get("/healthz")
            assert health.status_code == 503, health.text
            assert health.json()["error"]["code"] == "embedded_redis_down"
            assert http.get("/readyz").status_code == 503
            _assert_unavailable(http.post("/sessions/d/events", json=events[2]))
            assert "nextclick_embedded_redis_up 0" in http.get("/metrics").text
        finally:
            squatter.close()
        deadline = time.monotonic() + 30
        while http.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the embedded Redis was not restarted"
            time.sleep(0.1)
        assert serve.redis_pid() != redis_pid and serve.redis_port() == port
        metrics = http.get("/metrics").text
        assert "nextclick_embedded_redis_restarts_total 1" in metrics
        assert "nextclick_embedded_redis_up 1" in metrics
        deadline = time.monotonic() + 15
        while (response := http.post("/sessions/d/events", json=events[2])).status_code != 200:
            _assert_unavailable(response)  # a pooled connection to the dead server
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while http.get("/readyz").status_code != 200:  # likewise: retried, not a human
            assert time.monotonic() < deadline
            time.sleep(0.1)
        stored = http.get("/sessions/d").json()["clicks"]
        assert [c["item_id"] for c in stored] == ["i1", "i2", "i3"]  # the AOF kept them
