"""Who may call what, over real HTTP against real Redis: client and admin keys, the
refusal to serve a network without keys, JSON-only state changes, the Host allow-list,
the Redis-backed rate limit (shared by two servers, failing open) and the in-flight
bound."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from cli.main import main as nextclick
from service.app import create_app
from service.embedded import EmbeddedRedis
from service.security import check_exposure
from service.settings import Settings
from tests.servers import LiveServer

CLIENT, ADMIN = "client-key-0123456789", "admin-key-0123456789"


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


@pytest.fixture
def keyed(settings: Settings) -> Iterator[httpx.Client]:
    update = {"api_keys": [CLIENT], "admin_api_keys": [ADMIN]}
    with LiveServer(settings.model_copy(update=update)) as live, \
            httpx.Client(base_url=live.url, timeout=10) as http:
        yield http


# ---- roles -------------------------------------------------------------------------------
def test_client_and_admin_keys(keyed: httpx.Client) -> None:
    client, admin = {"X-API-Key": CLIENT}, {"X-API-Key": ADMIN}
    event = {"item_id": "i1", "user_id": "u1"}
    # No key, or an unknown one: 401 everywhere but the probes.
    for headers in ({}, {"X-API-Key": "nope"}):
        _error(keyed.post("/sessions/s/events", json=event, headers=headers), 401,
               "unauthorized")
        _error(keyed.delete("/users/u1", headers=headers), 401, "unauthorized")
        _error(keyed.post("/admin/reload", headers=headers), 401, "unauthorized")
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200
    # A client key: the client routes, not the admin ones.
    assert keyed.post("/sessions/s/events", json=event, headers=client).status_code == 200
    assert keyed.get("/models", headers=client).status_code == 200
    assert keyed.get("/sessions/s", headers=client).status_code == 200
    _error(keyed.delete("/users/u1", headers=client), 403, "forbidden")
    _error(keyed.post("/admin/reload", headers=client), 403, "forbidden")
    assert keyed.get("/sessions/s", headers=client).json()["user_id"] == "u1"  # not erased
    # An admin key: everything.
    assert keyed.post("/admin/reload", headers=admin).status_code == 200
    assert keyed.get("/recommend", headers=admin).status_code == 200
    assert keyed.delete("/users/u1", headers=admin).status_code == 204
    _error(keyed.get("/sessions/s", headers=client), 404, "unknown_session")


def test_admin_routes_without_admin_keys(settings: Settings) -> None:
    # No keys at all, on loopback: a developer's machine, everything open.
    with LiveServer(settings) as live:
        assert httpx.post(f"{live.url}/admin/reload", timeout=10).status_code == 200
    # Client keys but no admin keys: someone may reach this loopback server through a
    # proxy, so the admin routes stay shut.
    with LiveServer(settings.model_copy(update={"api_keys": [CLIENT]})) as live:
        _error(httpx.post(f"{live.url}/admin/reload", headers={"X-API-Key": CLIENT},
                          timeout=10), 403, "forbidden")
    # Not on loopback (explicitly insecure): client routes open, admin routes shut.
    app = create_app(settings.model_copy(update={"host": "0.0.0.0", "allow_insecure": True}))
    from fastapi.testclient import TestClient

    with TestClient(app) as http:
        assert http.get("/models").status_code == 200
        error = _error(http.delete("/users/u"), 403, "forbidden")
        assert "NEXTCLICK_ADMIN_API_KEYS" in error["message"]


@pytest.mark.parametrize("value", ["", " , ", '[""]', ",,"])
@pytest.mark.parametrize("variable", ["NEXTCLICK_API_KEYS", "NEXTCLICK_ADMIN_API_KEYS"])
def test_blank_key_settings_are_a_startup_error(value: str, variable: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match="holds no key"):
        Settings()


def test_no_keys_on_a_network_address_refuses_to_start(
        tmp_path: Path, artifacts: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NEXTCLICK_API_KEYS", "NEXTCLICK_ALLOW_INSECURE", "NEXTCLICK_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "var"
    code = nextclick(["serve", "--artifacts", str(artifacts), "--host", "0.0.0.0",
                      "--data-dir", str(data)])
    assert code == 2
    message = capsys.readouterr().err
    assert "without API keys" in message and "--insecure" in message
    assert not data.exists()  # refused before anything started
    monkeypatch.setenv("NEXTCLICK_API_KEYS", " , ")
    assert nextclick(["serve", "--artifacts", str(artifacts)]) == 2
    assert "holds no key" in capsys.readouterr().err
    monkeypatch.delenv("NEXTCLICK_API_KEYS")
    # What the flag, the environment variable and keys each allow:
    check_exposure(Settings(host="0.0.0.0", allow_insecure=True))
    monkeypatch.setenv("NEXTCLICK_ALLOW_INSECURE", "true")
    check_exposure(Settings(host="0.0.0.0"))
    check_exposure(Settings(host="::", api_keys=[CLIENT]))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(Settings(host=host))
    with pytest.raises(ValueError, match="without API keys"):
        create_app(Settings(host="192.0.2.1", allow_insecure=False))


# ---- JSON only, never from another site's page ---------------------------------------------
def test_state_changing_routes_take_json_only(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        assert http.post("/sessions/j/events", json={"item_id": "i1"}).status_code == 200
        # What a form elsewhere can post without a preflight: refused before it acts.
        for path in ("/sessions/j/end", "/admin/reload"):
            for content_type, body in (("application/x-www-form-urlencoded", "a=b"),
                                       ("text/plain", "{}"), ("multipart/form-data; "
                                                             "boundary=x", "--x--")):
                _error(http.post(path, content=body, headers={"content-type": content_type}),
                       415, "unsupported_media_type")
        assert http.get("/sessions/j").json()["status"] == "open"
        # A browser marks a cross-site request (even a body-less one): refused.
        _error(http.post("/sessions/j/end", headers={"sec-fetch-site": "cross-site"}), 403,
               "forbidden")
        assert http.get("/sessions/j").json()["status"] == "open"
        # JSON, or no body at all (curl -X POST), still works; so do same-origin pages.
        assert http.post("/sessions/j/end", json={}).status_code == 200
        assert http.post("/admin/reload", headers={"sec-fetch-site": "same-origin"}
                         ).status_code == 200
        assert http.post("/admin/reload").status_code == 200


# ---- Host allow-list -----------------------------------------------------------------------
def test_host_allow_list(settings: Settings) -> None:
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=10) as http:
        # Bound to loopback: the loopback names only (a rebinding DNS name is refused).
        error = _error(http.get("/models", headers={"host": "attacker.example"}), 400,
                       "invalid_host")
        assert "NEXTCLICK_ALLOWED_HOSTS" in error["message"]
        _error(http.post("/sessions/h/events", json={"item_id": "i1"},
                         headers={"host": "attacker.example:8000"}), 400, "invalid_host")
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert http.get("/models", headers={"host": host}).status_code == 200
        # Probes answer whatever the Host (orchestrators use the pod's address).
        assert http.get("/healthz", headers={"host": "10.0.0.7:8000"}).status_code == 200
        assert http.get("/readyz", headers={"host": "10.0.0.7:8000"}).status_code == 200
        assert 'status="400"' in http.get("/metrics").text  # refusals are counted
    named = settings.model_copy(update={"allowed_hosts": ["api.example.com", "*.example.org"]})
    with LiveServer(named) as live, httpx.Client(base_url=live.url, timeout=10) as http:
        assert http.get("/models", headers={"host": "api.example.com"}).status_code == 200
        assert http.get("/models", headers={"host": "a.example.org"}).status_code == 200
        _error(http.get("/models", headers={"host": "localhost"}), 400, "invalid_host")
    any_host = settings.model_copy(update={"allowed_hosts": ["*"]})
    with LiveServer(any_host) as live:
        assert httpx.get(f"{live.url}/models", headers={"host": "x.example"},
                         timeout=10).status_code == 200


# ---- rate limits ---------------------------------------------------------------------------
def test_rate_limit_is_shared_by_servers_and_answers_429(settings: Settings) -> None:
    """Two servers (processes or replicas) on one Redis share each caller's budget."""
    limited = settings.model_copy(update={"rate_limit": "6/minute", "api_keys": [CLIENT, ADMIN]})
    with LiveServer(limited) as one, LiveServer(limited) as two, \
            httpx.Client(timeout=10, headers={"X-API-Key": CLIENT}) as http:
        statuses = [http.get(f"{server.url}/models").status_code
                    for server in (one, two) * 3]
        assert statuses == [200] * 6
        refused = http.get(f"{two.url}/models")
        error = _error(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "retry after" in error["message"]
        _error(http.get(f"{one.url}/models"), 429, "rate_limited")
        # Another key has its own budget; an unknown key is counted by address, not by
        # key (inventing keys buys no budget), and is refused as usual.
        assert http.get(f"{one.url}/models", headers={"X-API-Key": ADMIN}).status_code == 200
        assert http.get(f"{one.url}/models", headers={"X-API-Key": "x1"}).status_code == 401
        assert http.get(f"{one.url}/healthz").status_code == 200  # probes are never limited
        for server in (one, two):  # counted per process: one refusal each
            assert "nextclick_rate_limited_total 1" in http.get(
                f"{server.url}/metrics", headers={"X-API-Key": ADMIN}).text


def test_rate_limiter_fails_open_when_its_redis_is_down(artifacts: Path,
                                                        tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    server.start()
    settings = Settings(redis_url=server.url, artifacts_dir=artifacts,
                        data_dir=tmp_path / "var", rate_limit="1000/second",
                        redis_socket_timeout=0.5)
    try:
        with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=10) as http:
            assert http.get("/models").status_code == 200
            server.kill()
            # /models needs no Redis: the limiter's outage must not turn it into a 500
            # (nor a 429, nor a 503).
            assert [http.get("/models").status_code for _ in range(3)] == [200] * 3
            assert "nextclick_rate_limit_errors_total 3" in http.get("/metrics").text
            server.restart()
            deadline = time.monotonic() + 10
            while http.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert http.get("/models").status_code == 200
    finally:
        server.stop()


# ---- in-flight bound -------------------------------------------------------------------------
def test_requests_beyond_max_in_flight_get_503(settings: Settings) -> None:
    with LiveServer(settings.model_copy(update={"max_in_flight": 2})) as live:
        # Two requests in flight: headers sent, body still awaited.
        stuck = []
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
            sock.sendall(b"POST /sessions/f/events HTTP/1.1\r\nHost: localhost\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 17\r\n\r\n")
            stuck.append(sock)
        with httpx.Client(base_url=live.url, timeout=10) as http:
            deadline = time.monotonic() + 10
            while (response := http.get("/models")).status_code == 200:
                assert time.monotonic() < deadline, "the two requests never got in flight"
                time.sleep(0.02)
            error = _error(response, 503, "overloaded")
            assert response.headers["retry-after"] == "1" and "retry" in error["message"]
            assert http.get("/healthz").status_code == 200  # probes are exempt
            for sock in stuck:  # the two finish: room again
                sock.sendall(b'{"item_id": "i1"}')
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
                sock.close()
            assert http.get("/models").status_code == 200
            assert "nextclick_requests_shed_total 1" in http.get("/metrics").text
