"""The files of a bundle besides the graphs: SHA-256 hashes (recorded in the manifest,
checked on load), the item vocabulary ``items.txt`` and the popularity list
``popular.json``."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from bundle.manifest import MANIFEST_FILE, BundleError


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: Path, files: dict[str, str], where: str) -> None:
    """Every file listed in the manifest exists and has its recorded hash."""
    for name, expected in files.items():
        path = Path(folder) / name
        if not path.is_file():
            raise BundleError(f"{path}: missing (listed in {where})")
        if sha256_file(path) != expected:
            raise BundleError(f"{path}: sha256 does not match {where} (file corrupted or "
                              f"replaced)")


def write_items(path: Path, items: list[str]) -> None:
    """``items[i - 1]`` is the raw id of item index i: one id per line."""
    for line, raw in enumerate(items, start=1):
        if not raw or "\n" in raw or "\r" in raw:
            raise BundleError(f"item vocabulary line {line}: id {raw!r} is empty or "
                              f"contains a line break")
    Path(path).write_text("".join(f"{raw}\n" for raw in items), encoding="utf-8")


def read_items(path: Path, n_items: int) -> list[str]:
    """The raw ids with a padding entry at index 0: ``result[i]`` is item index i."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: unreadable: {exc}") from exc
    if len(lines) != n_items:
        raise BundleError(f"{path}: {len(lines)} items but the manifest says "
                          f"n_items={n_items}")
    return ["", *lines]


def write_popular(path: Path, rows: list[tuple[str, int]]) -> None:
    """(raw id, training clicks), most popular first."""
    data = [[str(raw), int(count)] for raw, count in rows]
    Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")


def read_popular(path: Path) -> list[tuple[str, float]]:
    """(raw id, count) rows of ``popular.json``, most popular first; [] when absent."""
    if not Path(path).exists():
        return []
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
        return [(str(raw), float(count)) for raw, count in rows]
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"{path}: expected a JSON list of [item_id, count]: {exc}") from exc


def versions_newest_first(model_dir: Path) -> list[Path]:
    """The version folders of one model (those with a manifest; hidden ones are bundles
    being written), newest first: by the manifest's ``created`` time, then by name. The
    engine serves the first that loads; a retrained version is "newest" whatever its name."""
    folders = [p for p in Path(model_dir).iterdir()
               if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()]

    def created(folder: Path) -> str:
        manifest = folder / MANIFEST_FILE
        try:
            value = json.loads(manifest.read_text(encoding="utf-8"))
            if isinstance(value, dict) and value.get("created"):
                return str(datetime.fromisoformat(str(value["created"])).astimezone(UTC)
                           .isoformat(timespec="seconds"))
        except (OSError, ValueError):
            pass
        # unreadable (loading it will say why) or undated: when the manifest was written
        return datetime.fromtimestamp(manifest.stat().st_mtime, UTC).isoformat(
            timespec="seconds")

    return sorted(folders, key=lambda folder: (created(folder), folder.name), reverse=True)
