"""Fixtures shared by every test package: single-threaded torch for tiny tensors, a REAL
Redis (the embedded redis-server, or ``NEXTCLICK_REDIS_URL`` when set; flushed before each
test that asks for ``redis_url``) and a real Redis Cluster, real ONNX bundles exported from
small random-weight models, service settings and a live server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from service.embedded import EmbeddedRedis
from service.settings import Settings
from tests.helpers import ITEMS, N_ITEMS, N_USERS, POPULAR, catalog_entries
from tests.servers import LiveServer, RedisClusterServers


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Tiny tensors: torch's intra-op threads only add spinning on a busy 2-core CI
    machine (training tests ran 5x faster with one thread)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
    from training.export.writer import export_bundle

    root = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    hrnn = registry.build("hrnn-init", N_ITEMS, N_USERS, hidden_size=16, user_hidden_size=16)
    export_bundle(hrnn, ITEMS, root, version="v1", popular=POPULAR)
    gru = registry.build("gru4rec", N_ITEMS, N_USERS, hidden_size=16)
    export_bundle(gru, ITEMS, root, version="v1", popular=POPULAR)
    return root


@pytest.fixture(scope="session")
def catalog_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``artifacts``, and each bundle has a catalogue (titles and categories)."""
    import torch

    from models import registry
    from training.export.writer import export_bundle

    root = tmp_path_factory.mktemp("catalog-artifacts")
    torch.manual_seed(0)
    hrnn = registry.build("hrnn-init", N_ITEMS, N_USERS, hidden_size=16, user_hidden_size=16)
    export_bundle(hrnn, ITEMS, root, version="v1", popular=POPULAR, catalog=catalog_entries())
    gru = registry.build("gru4rec", N_ITEMS, N_USERS, hidden_size=16)
    export_bundle(gru, ITEMS, root, version="v1", popular=POPULAR, catalog=catalog_entries())
    return root


@pytest.fixture
def settings(redis_url: str, artifacts: Path, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, artifacts_dir=artifacts, data_dir=tmp_path / "var",
                    default_model="hrnn-init", inference_threads=2)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


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
