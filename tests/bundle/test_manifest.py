"""The bundle contract on its own: a manifest round-trips through JSON, every malformed part
is a BundleError naming the field, and the file helpers check what they read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bundle import (
    BundleError,
    GraphSpec,
    Manifest,
    StateSpec,
    next_name,
    read_items,
    read_popular,
    sha256_file,
    verify_files,
    write_items,
    write_popular,
)


def _manifest() -> Manifest:
    session = [StateSpec("hidden", (4,), "float32", "session")]
    user = [StateSpec("user_hidden", (3,), "float32", "user")]
    graphs = {role: GraphSpec(f"{role}.onnx", ["a"], [next_name("a")])
              for role in ("start", "advance", "score", "end")}
    return Manifest(model="m", version="v1", n_items=5, session_state=session,
                    user_state=user, graphs=graphs, files={"items.txt": "00"},
                    extra={"created": "now", "metrics": {"recall@20": 0.5}})


def test_manifest_round_trips_through_json(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest.write(tmp_path)
    loaded = Manifest.read(tmp_path)
    assert loaded == manifest
    assert loaded.key == "m@v1"
    assert loaded.session_state[0].nbytes == 16 and loaded.user_state[0].nbytes == 12


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw.pop("graphs"), "missing fields"),
    (lambda raw: raw.update(format_version=99), "format_version 99"),
    (lambda raw: raw.update(n_items=0), "n_items"),
    (lambda raw: raw["state"]["session"][0].update(dtype="float16"), "dtype"),
    (lambda raw: raw["state"]["session"][0].update(shape=[0]), "shape"),
    (lambda raw: raw["graphs"].pop("score"), "'score' graph"),
    (lambda raw: raw["graphs"].pop("end"), "start/end"),
    (lambda raw: raw["graphs"].update(extra={"file": "x"}), "unknown graphs"),
    (lambda raw: raw.update(files=["x"]), "files"),
])
def test_every_malformed_part_is_named(change: Any, message: str) -> None:
    raw = json.loads(json.dumps(_manifest().to_json()))
    change(raw)
    with pytest.raises(BundleError, match=message):
        Manifest.from_json(raw, "manifest.json")


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"model": \n')
    with pytest.raises(BundleError, match="invalid JSON at line"):
        Manifest.read(tmp_path)
    with pytest.raises(BundleError, match="missing"):
        Manifest.read(tmp_path / "absent")


def test_files_are_verified_by_hash(tmp_path: Path) -> None:
    write_items(tmp_path / "items.txt", ["a", "b"])
    files = {"items.txt": sha256_file(tmp_path / "items.txt")}
    verify_files(tmp_path, files, "m")
    (tmp_path / "items.txt").write_text("a\nc\n")
    with pytest.raises(BundleError, match="sha256 does not match"):
        verify_files(tmp_path, files, "m")
    with pytest.raises(BundleError, match="missing"):
        verify_files(tmp_path, {"gone.onnx": "00"}, "m")


def test_items_and_popular_files(tmp_path: Path) -> None:
    write_items(tmp_path / "items.txt", ["x1", "x2", "x3"])
    assert read_items(tmp_path / "items.txt", 3) == ["", "x1", "x2", "x3"]
    with pytest.raises(BundleError, match="3 items but the manifest says n_items=4"):
        read_items(tmp_path / "items.txt", 4)
    with pytest.raises(BundleError, match="line break"):
        write_items(tmp_path / "bad.txt", ["a\nb"])
    write_popular(tmp_path / "popular.json", [("x2", 7), ("x1", 3)])
    assert read_popular(tmp_path / "popular.json") == [("x2", 7.0), ("x1", 3.0)]
    assert read_popular(tmp_path / "absent.json") == []
    (tmp_path / "popular.json").write_text('{"x": 1}')
    with pytest.raises(BundleError, match="JSON list"):
        read_popular(tmp_path / "popular.json")


def test_versions_are_ordered_by_creation_not_by_name(tmp_path: Path) -> None:
    from bundle import versions_newest_first

    for name, created in (("v1", "2026-01-02T00:00:00+00:00"),
                          ("20250101T000000Z", "2025-01-01T00:00:00+00:00"),
                          ("20261201T000000Z", "2026-12-01T00:00:00+00:00")):
        manifest = _manifest()
        manifest.version = name
        manifest.extra["created"] = created
        (tmp_path / name).mkdir()
        manifest.write(tmp_path / name)
    (tmp_path / ".staging").mkdir()  # a bundle being written is never a version
    order = [p.name for p in versions_newest_first(tmp_path)]
    assert order == ["20261201T000000Z", "v1", "20250101T000000Z"]
