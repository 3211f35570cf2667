"""``catalog.json``: the optional item catalogue of a bundle — a title and a category per
item id, for people looking at recommendations (the demo page, ``GET /catalog``). The
models never read it, and a bundle without it serves the same recommendations.

Format (UTF-8 JSON)::

    {"items": [{"item_id": "i0042", "title": "Jazz album #12", "category": "Jazz album"},
               ...]}

``category`` may be null; item ids are unique. Like every bundle file it is listed with its
hash in the manifest's ``files``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundle.manifest import BundleError

CATALOG_FILE = "catalog.json"
#: longest title / category kept (a catalogue is for display, not a product database)
MAX_TEXT = 200


@dataclass(frozen=True)
class CatalogEntry:
    """What a person sees of one item."""

    item_id: str
    title: str
    category: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "title": self.title, "category": self.category}


def _text(value: Any, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BundleError(f"{where} must be a non-empty string")
    return value.strip()[:MAX_TEXT]


def write_catalog(path: Path, entries: Iterable[CatalogEntry]) -> int:
    """Write ``entries`` (unique item ids) as ``catalog.json``; returns how many."""
    seen: set[str] = set()
    rows = []
    for position, entry in enumerate(entries):
        where = f"catalog entry {position}"
        item_id = _text(entry.item_id, f"{where}: item_id")
        title = _text(entry.title, f"{where} ({entry.item_id!r}): title")
        category = _text(entry.category, f"{where} ({entry.item_id!r}): category",
                         optional=True)
        assert item_id is not None and title is not None
        if item_id in seen:
            raise BundleError(f"{where}: item id {item_id!r} appears twice")
        seen.add(item_id)
        rows.append({"item_id": item_id, "title": title, "category": category})
    Path(path).write_text(json.dumps({"items": rows}, ensure_ascii=False) + "\n",
                          encoding="utf-8")
    return len(rows)


def read_catalog(path: Path) -> dict[str, CatalogEntry]:
    """Item id -> entry, in file order; {} when the bundle has no catalogue."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        raise BundleError(f"{path}: expected {{\"items\": [...]}}")
    out: dict[str, CatalogEntry] = {}
    for position, row in enumerate(raw["items"]):
        where = f"{path}: items[{position}]"
        if not isinstance(row, dict):
            raise BundleError(f"{where} must be an object")
        item_id = _text(row.get("item_id"), f"{where}.item_id")
        title = _text(row.get("title"), f"{where}.title")
        category = _text(row.get("category"), f"{where}.category", optional=True)
        assert item_id is not None and title is not None
        if item_id in out:
            raise BundleError(f"{where}: item id {item_id!r} appears twice")
        out[item_id] = CatalogEntry(item_id, title, category)
    return out
