"""The embedded redis-server as a real dependency: a generated password kept in a 0600
file and reused, loopback only, one owner per data folder, supervised restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.embedded import EmbeddedRedis, EmbeddedRedisError, _pid_alive, read_status


def test_password_is_generated_once_kept_private_and_required(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    with EmbeddedRedis(folder, appendonly=False, require_password=True) as server:
        password = (folder / "password").read_text().strip()
        assert len(password) >= 32 and (folder / "password").stat().st_mode & 0o777 == 0o600
        assert f":{password}@127.0.0.1:" in server.url
        assert password not in server.display_url and ":***@" in server.display_url
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0)).ping()
        assert redis.Redis.from_url(server.url).ping()
    with EmbeddedRedis(folder, appendonly=False, require_password=True) as again:
        assert (folder / "password").read_text().strip() == password  # reused
        assert redis.Redis.from_url(again.url).ping()


def test_only_loopback(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="loopback"):
        EmbeddedRedis(tmp_path, host="0.0.0.0")


def test_a_second_owner_of_the_folder_is_refused_and_the_first_left_alone(
        tmp_path: Path) -> None:
    import os

    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as first:
        assert first.process is not None
        second = EmbeddedRedis(tmp_path / "redis", appendonly=False)
        with pytest.raises(EmbeddedRedisError,
                           match=rf"another nextclick serve \(pid {os.getpid()}\) is using"):
            second.start()
        assert _pid_alive(first.process.pid)  # not stopped as a "left-over" server
        assert redis.Redis.from_url(first.url).ping()
    # Once the first let go, the folder is free again.
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as third:
        assert redis.Redis.from_url(third.url).ping()


def test_supervised_server_is_restarted_on_its_port_with_its_data(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    with EmbeddedRedis(folder, appendfsync="always", maxmemory="32mb",
                       supervise=True) as server:
        assert server.process is not None
        db = redis.Redis.from_url(server.url)
        db.set("kept", "yes")
        assert db.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        port, dead = server.port, server.process.pid
        server.kill()
        deadline = time.monotonic() + 20
        while not ((status := read_status(folder)) and status.restarts == 1
                   and status.running):
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.05)
        assert status.redis_pid != dead and status.port == port == server.port
        assert db.get("kept") == b"yes"  # same port, same AOF
        db.close()
    status = read_status(folder)
    assert status is not None and not status.up and not status.running
