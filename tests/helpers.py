"""Tiny in-memory fixtures shared by the test packages (no files from ../shared/data)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import polars as pl

from bundle import CatalogEntry
from training.data.dataset import TEST_SCHEMA, TRAIN_SCHEMA, PreparedDataset


def make_tiny_dataset(n_users: int = 12, n_items: int = 30, sessions_per_user: int = 4,
                      seed: int = 0) -> PreparedDataset:
    """Users with a favourite block of items; each user's last session is the test set,
    the one before it is marked ``valid``. Sessions walk item i -> i+1 inside the block,
    so both the session and the user carry signal."""
    rng = random.Random(seed)
    train_rows: list[tuple[int, int, int, float, bool]] = []
    test_rows: list[tuple[int, int, int, float, bool]] = []
    session = 0
    block = max(3, n_items // 5)
    for user in range(1, n_users + 1):
        start_item = 1 + (user * block) % (n_items - block)
        clock = 1_600_000_000.0 + user * 1e6
        for index in range(sessions_per_user):
            length = rng.randint(2, 6)
            first = start_item + rng.randrange(block)
            items = [1 + (first - 1 + j) % n_items for j in range(length)]
            for position, item in enumerate(items):
                clock += 30.0
                if index == sessions_per_user - 1:
                    test_rows.append((user, session, item, clock, position > 0))
                else:
                    train_rows.append((user, session, item, clock,
                                       index == sessions_per_user - 2))
            clock += 7200.0
            session += 1
    cols = ["user", "session", "item", "timestamp"]
    train = pl.DataFrame(train_rows, schema=[*cols, "valid"], orient="row").cast(TRAIN_SCHEMA)  # type: ignore[arg-type]
    test = pl.DataFrame(test_rows, schema=[*cols, "target"], orient="row").cast(TEST_SCHEMA)  # type: ignore[arg-type]
    return PreparedDataset(
        train=train, test=test,
        items=[f"i{index}" for index in range(1, n_items + 1)],
        users=[f"u{index}" for index in range(1, n_users + 1)],
        stats={"protocol": "last-session", "format": "tiny"})


#: The catalogue of the small random-weight bundles the service tests serve.
N_ITEMS = 40
N_USERS = 10
ITEMS = [f"i{index}" for index in range(1, N_ITEMS + 1)]
POPULAR = [(item, 1000 - index) for index, item in enumerate(ITEMS)]


def catalog_entries() -> list[CatalogEntry]:
    """Titles for ``ITEMS`` in the synthetic data's style: four categories of ten items."""
    themes = ("Jazz album", "Trail running shoe", "Sci-fi novel", "Espresso machine")
    return [CatalogEntry(item, f"{themes[index % 4]} #{index // 4 + 1}", themes[index % 4])
            for index, item in enumerate(ITEMS)]


def load_experiment(name: str) -> ModuleType:
    """Import ``experiments/<name>.py`` (a script folder, not a package) as a module."""
    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
