"""Settings: every one is documented, and ``nextclick serve`` hands all of them to its
worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.server import settings_env
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
#: Set by `nextclick serve` for its own workers, not by people.
INTERNAL = {"embedded_redis"}


def test_every_setting_is_in_the_operations_table() -> None:
    table = (ROOT / "docs" / "operations.md").read_text().split("## Settings")[1]
    table = table.split("\n## ")[0]
    missing = [name for name in Settings.model_fields
               if name not in INTERNAL and f"`NEXTCLICK_{name.upper()}`" not in table]
    assert not missing, f"settings missing from docs/operations.md: {missing}"


def test_workers_rebuild_the_same_settings(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    settings = Settings(
        redis_url="redis://:secret@127.0.0.1:6390/0", embedded_redis=True,
        api_keys=["k1", "k2"], admin_api_keys=["a1"], allowed_hosts=["api.example.com"],
        rate_limit="5/second", host="0.0.0.0", allow_insecure=True, max_in_flight=7,
        providers=["CPUExecutionProvider"], artifacts_dir=tmp_path / "a",
        data_dir=tmp_path / "v", default_model="gru4rec", request_read_timeout=3.5)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings
