"""The compose file and images: no Docker engine runs in CI, so parse and check them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_dependencies(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "trainer", "api"} <= set(services)
    api = services["api"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert api["environment"]["NEXTCLICK_REDIS_URL"].startswith("redis://redis:")
    assert "127.0.0.1:8000:8000" in api["ports"]
    assert services["api-gpu"]["profiles"] == ["gpu"]


def test_healthchecks(compose: dict) -> None:
    for name in ("redis", "api"):
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] == "CMD"
        assert check["retries"] >= 3


def test_volumes_shared_between_trainer_and_api(compose: dict) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    trainer = {v.split(":")[0] for v in services["trainer"]["volumes"]}
    api = {v.split(":")[0] for v in services["api"]["volumes"]}
    assert "artifacts" in trainer & api & declared
    assert any(v.endswith(":ro") for v in services["api"]["volumes"])
    assert any(v.startswith("redis-data:") for v in services["redis"]["volumes"])


def test_redis_config_has_aof() -> None:
    conf = (ROOT / "docker" / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M)
    assert re.search(r"^appendfsync (everysec|always)$", conf, re.M)


def test_dockerfiles_exist_and_run_the_makefile_commands(compose: dict) -> None:
    for service in ("trainer", "api", "api-gpu"):
        dockerfile = ROOT / compose["services"][service]["build"]["dockerfile"]
        assert dockerfile.exists(), dockerfile
    makefile = (ROOT / "Makefile").read_text()
    trainer = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert '"make", "artifacts"' in trainer and re.search(r"^artifacts:", makefile, re.M)
    assert "torch==2.13.0" in trainer
    api = (ROOT / "docker" / "api.Dockerfile").read_text()
    assert '"nextclick", "serve"' in api and "$(NEXTCLICK) serve" in makefile
    install_lines = [line for line in api.splitlines() if "pip install" in line]
    assert install_lines and not any("torch" in line or "[train" in line for line in install_lines)
    gpu = (ROOT / "docker" / "api-gpu.Dockerfile").read_text()
    assert "uninstall -y onnxruntime" in gpu
