"""Bundle layout written by ``training.export``: manifest, files, hashes, popularity list,
versions, and the ``nextclick export`` CLI on a saved run."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import onnx
import pytest

from cli.main import main as cli_main
from models import registry
from tests.helpers import make_tiny_dataset
from tests.models.test_onnx_parity import TinyUserGRU, tiny_items, tiny_model
from training.export import writer as export_module
from training.export.graphs import ExportError
from training.export.writer import export_bundle, popular_items

MANIFEST_KEYS = {"format_version", "model", "version", "created", "n_items", "config", "state",
                 "graphs", "opset", "data", "metrics", "parity", "libraries", "files"}


def test_manifest_and_files(tmp_path: Path) -> None:
    model = tiny_model()
    model.train()  # export must switch to eval itself and restore the mode afterwards
    popular = [("item-3", 40), ("item-1", 7)]
    data = {"path": "/data/x", "fingerprint": "abc", "stats": {"sessions": 3}}
    bundle = export_bundle(model, tiny_items(30), tmp_path, popular=popular,
                           metrics={"recall@20": 0.5}, data=data)
    assert model.training
    assert bundle.parent == tmp_path / TinyUserGRU.name
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest) >= MANIFEST_KEYS
    assert manifest["format_version"] == 1 and manifest["model"] == TinyUserGRU.name
    assert manifest["version"] == bundle.name
    assert re.fullmatch(r"\d{8}T\d{6}Z", bundle.name)
    datetime.fromisoformat(manifest["created"])
    assert manifest["n_items"] == 30 and manifest["config"] == {"hidden": 8}
    assert manifest["state"] == {"session": [s.to_json() for s in model.session_spec()],
                                 "user": [s.to_json() for s in model.user_spec()]}
    assert manifest["data"] == data and manifest["metrics"] == {"recall@20": 0.5}
    assert set(manifest["libraries"]) == {"torch", "onnx", "onnxruntime", "python"}
    assert manifest["opset"] >= 17

    graphs = manifest["graphs"]
    assert graphs["advance"]["inputs"] == ["item", "h", "clicks"]
    assert graphs["advance"]["outputs"] == ["next_h", "next_clicks"]
    assert graphs["start"] == {"file": "start.onnx", "inputs": ["c"],
                               "outputs": ["next_h", "next_clicks"]}
    assert graphs["score"]["inputs"] == ["h", "k"]  # clicks is unused by score: dropped
    assert graphs["score"]["outputs"] == ["scores", "items"]
    assert graphs["end"]["outputs"] == ["next_c"]
    for role, spec in graphs.items():
        graph = onnx.load(str(bundle / spec["file"]))
        assert graph.opset_import[0].version == manifest["opset"], role
        batch_dims = [i.type.tensor_type.shape.dim[0] for i in graph.graph.input if i.name != "k"]
        assert all(d.dim_param and not d.dim_value for d in batch_dims), f"{role}: static batch"

    assert set(manifest["files"]) == {"start.onnx", "advance.onnx", "score.onnx", "end.onnx",
                                      "items.txt", "popular.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == digest, name
    assert (bundle / "items.txt").read_text().splitlines() == tiny_items(30)
    assert json.loads((bundle / "popular.json").read_text()) == [["item-3", 40], ["item-1", 7]]
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]  # no staging left


def test_versions_are_unique(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "_default_version", lambda: "20250102T030405Z")
    model, items = tiny_model(), tiny_items(30)
    first = export_bundle(model, items, tmp_path)
    second = export_bundle(model, items, tmp_path)
    assert (first.name, second.name) == ("20250102T030405Z", "20250102T030405Z-02")
    assert json.loads((second / "manifest.json").read_text())["version"] == second.name
    assert second.name > first.name  # the engine picks the lexicographic max as latest
    with pytest.raises(ExportError, match="already exists"):
        export_bundle(model, items, tmp_path, version="20250102T030405Z")
    with pytest.raises(ExportError, match=r"version '\.hidden'"):
        export_bundle(model, items, tmp_path, version=".hidden")


def test_vocabulary_must_match_the_model(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"vocabulary has 29 items but .* n_items=30"):
        export_bundle(tiny_model(), tiny_items(29), tmp_path)
    with pytest.raises(ExportError, match="line 2"):
        export_bundle(tiny_model(), ["a", "b\nc", *tiny_items(28)], tmp_path)
    assert list((tmp_path / TinyUserGRU.name).iterdir()) == []


def test_popular_items_order_and_limit() -> None:
    items = ["a", "b", "c", "d", "e"]
    clicks = [2, 4, 4, 2, 5, 4, 2]  # b:3, d:3, a:0, c:0, e:1
    assert popular_items(clicks, items) == [("b", 3), ("d", 3), ("e", 1)]
    assert popular_items(clicks, items, limit=1) == [("b", 3)]


def test_cli_exports_a_saved_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.data.dataset import PreparedDataset
    from training.fit.checkpoint import save_run

    dataset = make_tiny_dataset()
    dataset.save(tmp_path / "data")
    dataset = PreparedDataset.load(tmp_path / "data")
    model = registry.build("hrnn-init", dataset.n_items, dataset.n_users, hidden_size=8,
                           user_hidden_size=8)
    run = save_run(tmp_path / "run", model, dataset, {"epochs": 0})
    (run / "metrics.json").write_text(json.dumps({"test": {"recall@20": 0.25}}))

    code = cli_main(["export", "--run", str(run), "--out", str(tmp_path / "artifacts"),
                     "--version", "v1"])
    assert code == 0
    bundle = tmp_path / "artifacts" / "hrnn-init" / "v1"
    printed = capsys.readouterr().out
    assert str(bundle) in printed and "parity: max abs diff" in printed
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["metrics"] == {"test": {"recall@20": 0.25}}
    assert manifest["data"]["fingerprint"] == dataset.fingerprint
    assert manifest["config"]["hidden_size"] == 8
    assert set(manifest["graphs"]) == {"start", "advance", "score", "end"}
    expected_popular = popular_items(dataset.train["item"].to_list(), dataset.items)
    assert json.loads((bundle / "popular.json").read_text()) == \
        [[raw, count] for raw, count in expected_popular]
    assert (bundle / "items.txt").read_text().splitlines() == dataset.items

    # the same explicit version again: a one-line error, exit code 2, nothing overwritten
    assert cli_main(["export", "--run", str(run), "--out", str(tmp_path / "artifacts"),
                     "--version", "v1"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err

    from training.fit.checkpoint import save_run

    dataset = make_tiny_dataset()
    dataset.save(tmp_path / "data")
    model = registry.build("pop", dataset.n_items, dataset.n_users)
    run = save_run(tmp_path / "run", model, dataset)
    (run / "metrics.json").write_text("{not json")
    assert cli_main(["export", "--run", str(run), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "line 1" in err
