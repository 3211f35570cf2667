"""Write a serving bundle: export the graphs, gate them by parity, add the item vocabulary,
the popularity list, the item catalogue when the dataset has one, and the manifest
(``bundle``), all in a hidden staging folder that is renamed into place only after the
check passes, so a failed or interrupted export never leaves a half-written bundle the
engine could pick up.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from bundle import (
    CATALOG_FILE,
    ITEMS_FILE,
    POPULAR_FILE,
    VERSION_PATTERN,
    BundleError,
    CatalogEntry,
    Manifest,
    sha256_file,
    write_catalog,
    write_items,
    write_popular,
)
from models import registry
from models.base import SessionModel
from models.popularity import popularity_order
from training.export.graphs import EXPORTER, OPSET, ExportError, export_graphs
from training.export.parity import check_parity

POPULAR_LIMIT = 1000


# ---- bundle ---------------------------------------------------------------------------------
def _default_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _library_versions() -> dict[str, str]:
    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "python": platform.python_version()}


def export_bundle(model: SessionModel, items: list[str], out_root: Path, *,
                  version: str | None = None, popular: list[tuple[str, int]] | None = None,
                  metrics: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
                  exporter: str = EXPORTER,
                  catalog: Sequence[CatalogEntry] | None = None) -> Path:
    """Export ``model`` to ``out_root/<model.name>/<version>/`` and return that path.

    ``items[i - 1]`` is the raw id of item index ``i``; ``popular`` is (raw id, count),
    most popular first (at most ``POPULAR_LIMIT`` kept); ``data`` is ``{"path",
    "fingerprint", "stats"}`` of the training dataset; ``catalog`` (optional) titles the
    items for display (``catalog.json``; entries for ids outside ``items`` are dropped).
    Raises ``ExportError`` on a parity failure, a vocabulary that does not match the model,
    or an existing explicit version; nothing is left behind on failure."""
    if len(items) != model.n_items:
        raise ExportError(f"{model.name}: vocabulary has {len(items)} items but the model "
                          f"was built for n_items={model.n_items}")
    if version is not None and not VERSION_PATTERN.match(version):
        raise ExportError(f"version {version!r}: use letters, digits, '.', '_' or '-' "
                          f"(not starting with '.' or '-', at most 100 characters)")
    model_root = Path(out_root) / model.name
    model_root.mkdir(parents=True, exist_ok=True)
    if version is not None and (model_root / version).exists():
        raise ExportError(f"{model_root / version} already exists; choose another --version")

    was_training = model.training
    model.eval()
    # Hidden (dot) folder next to the target: the engine ignores it, and the final rename
    # stays on one filesystem, so it is atomic.
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=model_root))
    try:
        graphs = export_graphs(model, staging, exporter=exporter)
        model.eval()  # belt and braces: exporters restore modes on their own terms
        parity = check_parity(model, staging, graphs)
        try:
            write_items(staging / ITEMS_FILE, items)
        except BundleError as exc:
            raise ExportError(str(exc)) from None
        write_popular(staging / POPULAR_FILE, (popular or [])[:POPULAR_LIMIT])
        if catalog:
            known = set(items)
            try:
                write_catalog(staging / CATALOG_FILE,
                              (entry for entry in catalog if entry.item_id in known))
            except BundleError as exc:
                raise ExportError(str(exc)) from None
        files = {path.name: sha256_file(path) for path in sorted(staging.iterdir())}
        version_name = version or _default_version()
        target = _claim_target(model_root, version_name, explicit=version is not None)
        Manifest(
            model=model.name, version=target.name, n_items=model.n_items,
            session_state=model.session_spec(), user_state=model.user_spec(),
            graphs=graphs, files=files,
            extra={"created": datetime.now(UTC).isoformat(timespec="seconds"),
                   "config": model.config.to_dict(), "opset": OPSET, "exporter": exporter,
                   "data": data or {}, "metrics": metrics or {}, "parity": parity,
                   "libraries": _library_versions(),
                   **({"serving": {"score_rows": model.score_rows}}
                      if model.score_rows else {})}).write(staging)
        try:
            os.rename(staging, target)
        except OSError as exc:
            raise ExportError(f"cannot move the bundle into {target}: {exc}") from exc
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        model.train(was_training)


def _claim_target(model_root: Path, version: str, *, explicit: bool) -> Path:
    """The final bundle path: ``version`` itself, or with ``-02``, ``-03``... appended when
    an automatic (timestamp) version is already taken (two exports in one second)."""
    target = model_root / version
    if not target.exists():
        return target
    if explicit:
        raise ExportError(f"{target} already exists; choose another --version")
    for suffix in range(2, 1000):
        candidate = model_root / f"{version}-{suffix:02d}"
        if not candidate.exists():
            return candidate
    raise ExportError(f"too many bundles named {version}-* under {model_root}")


def export_random_bundle(model_name: str, n_items: int, out_root: Path, *, n_users: int = 1,
                         version: str | None = None, seed: int = 0,
                         **config: Any) -> Path:
    """Export an untrained ``model_name`` with random weights and synthetic item ids
    (``item-1`` ...): a realistically sized bundle for latency benchmarks and load tests
    without training data. Non-neural models are fitted on random sessions."""
    torch.manual_seed(seed)
    model = registry.build(model_name, n_items, n_users, **config)
    if model.batching == "counts":
        generator = torch.Generator().manual_seed(seed)
        model.fit_counts([torch.randint(1, n_items + 1, (8,), generator=generator).tolist()
                          for _ in range(max(100, n_items // 10))])
    items = [f"item-{index}" for index in range(1, n_items + 1)]
    popular = [(items[index], n_items - index) for index in range(min(POPULAR_LIMIT, n_items))]
    return export_bundle(model, items, out_root, version=version, popular=popular,
                         data={"path": None, "fingerprint": "random", "stats": {}},
                         metrics={"note": "random weights, not trained"})


def popular_items(train_items: Sequence[int], items: list[str],
                  limit: int = POPULAR_LIMIT) -> list[tuple[str, int]]:
    """(raw id, click count) of the ``limit`` most clicked training items, in
    ``models.popularity`` order (most clicked first, ties by item index)."""
    clicks = torch.as_tensor(np.asarray(train_items, dtype=np.int64))
    counts = torch.bincount(clicks, minlength=len(items) + 1)
    counts[0] = 0
    return [(items[index - 1], int(counts[index]))
            for index in popularity_order(counts.to(torch.float64))[:limit].tolist()
            if counts[index] > 0]


def export_run(run_dir: Path, out_root: Path, *, version: str | None = None,
               exporter: str = EXPORTER) -> Path:
    """Export a ``nextclick train`` run (its model, its dataset's vocabulary and
    popularity, its metrics.json when evaluated) to ``out_root``; returns the bundle."""
    from training.data.dataset import PreparedDataset
    from training.fit.checkpoint import load_run

    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    model, info = load_run(run_dir)
    dataset_path = info.get("dataset")
    if not dataset_path:
        raise ExportError(f"{run_dir}: run info names no dataset (field 'dataset')")
    dataset = PreparedDataset.load(dataset_path)
    popular = popular_items(dataset.train["item"].to_list(), dataset.items)
    metrics: dict[str, Any] = {}
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExportError(f"{metrics_path}: not valid JSON (line {exc.lineno}: "
                              f"{exc.msg})") from exc
    data = {"path": str(dataset_path), "fingerprint": dataset.fingerprint,
            "stats": dataset.stats}
    return export_bundle(model, dataset.items, out_root, version=version, popular=popular,
                         metrics=metrics, data=data, exporter=exporter,
                         catalog=dataset_catalog(Path(dataset_path)))


def dataset_catalog(folder: Path) -> list[CatalogEntry] | None:
    """The prepared dataset's ``catalog.csv`` as bundle catalogue entries, or None."""
    from training.data.catalog import load_catalog

    frame = load_catalog(folder)
    if frame is None:
        return None
    return [CatalogEntry(item_id, title, category or None)
            for item_id, title, category in frame.select("item_id", "title", "category")
            .iter_rows()]
