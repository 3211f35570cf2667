"""The compose file and images: no Docker engine runs in CI, so parse and check them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


API_SERVICES = ("api", "api-gpu")
PASSWORD = re.compile(r"\$\{NEXTCLICK_REDIS_PASSWORD:\?[^}]+\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _dockerfile(compose: dict, service: str) -> str:
    return (ROOT / compose["services"][service]["build"]["dockerfile"]).read_text()


def test_services_and_dependencies(compose: dict) -> None:
    services = compose["services"]
    assert {"redis", "trainer", "api"} <= set(services)
    api = services["api"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert api["environment"]["NEXTCLICK_REDIS_URL"].startswith("redis://:")
    assert "127.0.0.1:8000:8000" in api["ports"]
    assert services["api-gpu"]["profiles"] == ["gpu"]


def test_healthchecks(compose: dict) -> None:
    for name in ("redis", *API_SERVICES):
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL")
        assert check["retries"] >= 3


def test_every_api_service_checks_readiness_the_same_way(compose: dict) -> None:
    """/readyz (Redis accepts writes, a model is loaded) in the compose file and in every
    API image: one definition of healthy."""
    for name in API_SERVICES:
        assert "/readyz" in " ".join(compose["services"][name]["healthcheck"]["test"])
        healthcheck = [line for line in _dockerfile(compose, name).splitlines()
                       if "urlopen" in line]
        assert healthcheck and all("/readyz" in line for line in healthcheck), name
        assert "/healthz" not in _dockerfile(compose, name)


def test_redis_has_a_password_and_the_api_uses_it(compose: dict) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert "--requirepass" in command
    assert PASSWORD.fullmatch(command[command.index("--requirepass") + 1])
    # The healthcheck authenticates without the password on its command line.
    assert PASSWORD.fullmatch(redis["environment"]["REDISCLI_AUTH"])
    assert "-a" not in " ".join(redis["healthcheck"]["test"]).split()
    assert "ports" not in redis  # reachable on the compose network only
    for name in API_SERVICES:
        url = compose["services"][name]["environment"]["NEXTCLICK_REDIS_URL"]
        match = re.fullmatch(r"redis://:(\$\{[^}]+\})@redis:6379/0", url)
        assert match and PASSWORD.fullmatch(match.group(1)), url
    # The password comes from the environment; no secret is written into the repository.
    assert "requirepass" not in (ROOT / "docker" / "redis.conf").read_text().replace(
        "--requirepass", "")


def test_api_services_say_which_auth_mode_they_use(compose: dict) -> None:
    for name in API_SERVICES:
        service = compose["services"][name]
        environment = service["environment"]
        keys = environment.get("NEXTCLICK_API_KEYS")
        insecure = environment.get("NEXTCLICK_ALLOW_INSECURE")
        assert (keys and "${" in keys) or insecure == "true", name
        if insecure == "true":  # the open demo: reached from this machine only
            assert all(port.startswith("127.0.0.1:") for port in service["ports"])
            assert set(environment["NEXTCLICK_ALLOWED_HOSTS"].split(",")) <= {
                "localhost", "127.0.0.1", "[::1]"}
    compose_text = (ROOT / "docker-compose.yml").read_text()
    assert "NEXTCLICK_API_KEYS" in compose_text  # the way out of the demo mode is named


def test_thread_settings_are_explicit(compose: dict) -> None:
    for name in API_SERVICES:
        environment = compose["services"][name]["environment"]
        dockerfile = _dockerfile(compose, name)
        for variable in ("OMP_NUM_THREADS", "NEXTCLICK_INTRA_OP_THREADS",
                         "NEXTCLICK_INFERENCE_THREADS"):
            assert int(environment[variable]) >= 1, (name, variable)
            assert re.search(rf"\b{variable}=\d+", dockerfile), (name, variable)


def test_volumes_shared_between_trainer_and_api(compose: dict) -> None:
    services = compose["services"]
    declared = set(compose["volumes"])
    trainer = {v.split(":")[0] for v in services["trainer"]["volumes"]}
    api = {v.split(":")[0] for v in services["api"]["volumes"]}
    assert "artifacts" in trainer & api & declared
    assert any(v.endswith(":ro") for v in services["api"]["volumes"])
    assert any(v.startswith("redis-data:") for v in services["redis"]["volumes"])


def test_redis_config_has_aof_and_a_memory_bound() -> None:
    conf = (ROOT / "docker" / "redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M)
    assert re.search(r"^appendfsync (everysec|always)$", conf, re.M)
    assert re.search(r"^maxmemory \d+(mb|gb)$", conf, re.M)
    assert re.search(r"^maxmemory-policy noeviction$", conf, re.M)


def test_dockerfiles_exist_and_run_the_makefile_commands(compose: dict) -> None:
    for service in ("trainer", "api", "api-gpu"):
        dockerfile = ROOT / compose["services"][service]["build"]["dockerfile"]
        assert dockerfile.exists(), dockerfile
    makefile = (ROOT / "Makefile").read_text()
    trainer = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert '"make", "artifacts"' in trainer and re.search(r"^artifacts:", makefile, re.M)
    # CPU torch, pinned, installed before the project (which would otherwise pull the
    # default index's CUDA build).
    torch_at = trainer.index("pip install torch==2.13.0 --index-url")
    assert "download.pytorch.org/whl/cpu" in trainer
    assert torch_at < trainer.index("pip install -e '.[cpu,train]'")
    api = (ROOT / "docker" / "api.Dockerfile").read_text()
    assert '"nextclick", "serve"' in api and "$(NEXTCLICK) serve" in makefile
    install_lines = [line for line in api.splitlines() if "pip install" in line]
    assert install_lines and not any("torch" in line or "[train" in line for line in install_lines)
    assert "pip install '.[cpu]'" in api  # ONNX Runtime comes with an extra
    gpu = (ROOT / "docker" / "api-gpu.Dockerfile").read_text()
    assert "pip install '.[gpu]'" in gpu and "[cpu" not in gpu


def test_every_image_copies_every_package_it_installs() -> None:
    """pip installs the packages found in the copied tree: one not copied is missing from
    the image, and `nextclick` fails there on its first import of it."""
    import tomllib

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in found}
    assert packages == {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    for dockerfile in sorted((ROOT / "docker").glob("*.Dockerfile")):
        copied = set(re.findall(r"^COPY (\S+) \./\1$", dockerfile.read_text(), re.M))
        assert packages <= copied, f"{dockerfile.name} does not copy {packages - copied}"
