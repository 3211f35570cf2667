"""``catalog.json``, the optional item catalogue of a bundle: it round-trips, and a
malformed one is a BundleError naming the file and the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundle import CATALOG_FILE, BundleError, CatalogEntry, read_catalog, write_catalog


def test_round_trip_keeps_order_titles_and_missing_categories(tmp_path: Path) -> None:
    entries = [CatalogEntry("i2", "Jazz album #1", "Jazz album"),
               CatalogEntry("i1", "Caf\u00e9 au lait \u2615", None)]
    path = tmp_path / CATALOG_FILE
    assert write_catalog(path, entries) == 2
    loaded = read_catalog(path)
    assert list(loaded) == ["i2", "i1"] and list(loaded.values()) == entries
    assert "\u2615" in path.read_text(encoding="utf-8")  # readable UTF-8, not \\u escapes
    assert read_catalog(tmp_path / "absent.json") == {}


@pytest.mark.parametrize(("raw", "message"), [
    ("[]", "expected"),
    ('{"items": [{"item_id": "a"}]}', r"items\[0\]\.title must be a non-empty string"),
    ('{"items": [{"item_id": "", "title": "t"}]}', r"items\[0\]\.item_id"),
    ('{"items": [{"item_id": "a", "title": "t", "category": 3}]}', r"items\[0\]\.category"),
    ('{"items": [{"item_id": "a", "title": "t"}, {"item_id": "a", "title": "u"}]}',
     "appears twice"),
    ("{not json", "unreadable"),
])
def test_malformed_catalogues_are_named(tmp_path: Path, raw: str, message: str) -> None:
    path = tmp_path / CATALOG_FILE
    path.write_text(raw, encoding="utf-8")
    with pytest.raises(BundleError, match=message) as info:
        read_catalog(path)
    assert str(path) in str(info.value)


def test_writer_refuses_duplicates_and_empty_titles(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="appears twice"):
        write_catalog(tmp_path / "c.json", [CatalogEntry("a", "x"), CatalogEntry("a", "y")])
    with pytest.raises(BundleError, match="title"):
        write_catalog(tmp_path / "c.json", [CatalogEntry("a", " ")])
    long = write_catalog(tmp_path / "c.json", [CatalogEntry("a", "x" * 500)])
    assert long == 1
    assert len(json.loads((tmp_path / "c.json").read_text())["items"][0]["title"]) == 200
