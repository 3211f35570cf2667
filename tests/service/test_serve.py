"""The real ``nextclick serve`` (two workers, embedded Redis) at its edges: request heads
that are too large, clients that never finish a request (slowloris), a second server on
the same data, and the embedded Redis as a protected, bounded dependency."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cli.main import main as nextclick
from tests.servers import ServeProcess

READ_TIMEOUT = 2.0
MAX_HEAD = 16 * 1024


@pytest.fixture(scope="module")
def served(artifacts: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServeProcess]:
    data = tmp_path_factory.mktemp("served") / "var"
    env = {"NEXTCLICK_REQUEST_READ_TIMEOUT": str(READ_TIMEOUT),
           "NEXTCLICK_MAX_HEADER_BYTES": str(MAX_HEAD), "NEXTCLICK_REDIS_MAXMEMORY": "64mb"}
    with ServeProcess(artifacts, data, env=env, args=("--workers", "2")) as serve:
        yield serve


def _closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Read until the server closes; (seconds it took, what it sent)."""
    sock.settimeout(seconds)
    started, received = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return time.monotonic() - started, received


def test_oversized_request_heads_are_refused(served: ServeProcess) -> None:
    # Just over the bound: a 431 in the error shape.
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /models HTTP/1.1\r\nHost: localhost\r\nX-Big: "
                     + b"a" * (MAX_HEAD + 1024) + b"\r\n\r\n")
        _, reply = _closed_within(sock, 10)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:100]
    assert b'"code":"request_header_too_large"' in reply
    # 8 MB: cut off long before it is read (before: read whole and answered 200).
    sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    sender = threading.Thread(target=lambda: _send_quietly(
        sock, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: "
        + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n"), daemon=True)
    sender.start()
    took, reply = _closed_within(sock, 30)
    sender.join(30)
    sock.close()
    assert b"200 OK" not in reply and took < 10
    assert httpx.get(f"{served.url}/models", timeout=10).status_code == 200


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closed the connection mid-send
        sock.sendall(data)


def test_slow_clients_are_closed_while_others_are_served(served: ServeProcess) -> None:
    """Slowloris: 40 connections that send their headers a byte at a time. Each is closed
    within the read timeout (with a 408), and a normal client is served meanwhile."""
    slow = []
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        sock.sendall(b"GET /models HTTP/1.1\r\nHost: localhost\r\n")
        sock.setblocking(False)
        slow.append(sock)
    opened = time.monotonic()
    closed: dict[int, float] = {}
    replies: dict[int, bytes] = {}
    normal = []
    trickle = b"X-Slow: " + b"a" * 1000
    position = 0
    with httpx.Client(base_url=served.url, timeout=10) as http:
        while len(closed) < len(slow) and time.monotonic() - opened < READ_TIMEOUT + 20:
            for index, sock in enumerate(slow):
                if index in closed:
                    continue
                try:
                    sock.send(trickle[position % len(trickle):][:1])
                    reply = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    reply = b""
                closed[index] = time.monotonic() - opened
                replies[index] = reply
            position += 1
            normal.append(http.get("/models").status_code)
            time.sleep(0.2)
    for sock in slow:
        sock.close()
    assert len(closed) == len(slow), f"{len(slow) - len(closed)} slow connections still open"
    assert max(closed.values()) < READ_TIMEOUT + 10  # generous: a busy 2-core machine
    assert min(closed.values()) >= READ_TIMEOUT - 0.5  # the bound, not something sooner
    assert sum(reply.startswith(b"HTTP/1.1 408 ") for reply in replies.values()) >= 30
    assert normal and set(normal) == {200}


def test_a_second_serve_on_the_same_data_refuses_to_start(
        served: ServeProcess, artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    redis_pid = served.redis_pid()
    assert served.process is not None
    code = nextclick(["serve", "--artifacts", str(artifacts), "--data-dir",
                      str(served.data_dir), "--port", "0"])
    assert code == 2
    message = capsys.readouterr().err
    assert f"another nextclick serve (pid {served.process.pid}) is using" in message
    # The first one's Redis was left alone (it used to be stopped as "left over").
    assert served.redis_pid() == redis_pid
    assert httpx.get(f"{served.url}/readyz", timeout=10).status_code == 200


def test_embedded_redis_is_protected_and_bounded(served: ServeProcess) -> None:
    password_file = served.redis_dir / "password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert served.redis_dir.stat().st_mode & 0o777 == 0o700
    port = served.redis_port()
    anonymous = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    db = served.redis_client()
    try:
        assert db.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
        assert db.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert db.config_get("bind")["bind"] == "127.0.0.1"
    finally:
        db.close()
    # Both workers reach it (they got the URL with the password), and neither the
    # password nor the URL shows up in what the server printed or in the process list.
    with httpx.Client(base_url=served.url, timeout=10) as http:
        for index in range(6):
            assert http.post(f"/sessions/w{index}/events",
                             json={"item_id": "i1"}).status_code == 200
    password = password_file.read_text().strip()
    command_lines = [path.read_bytes() for path in Path("/proc").glob("[0-9]*/cmdline")
                     if path.exists()]
    assert not any(password.encode() in line for line in command_lines)
