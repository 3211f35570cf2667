"""A training run folder: ``checkpoint.pt`` (weights + everything needed to rebuild the
model) and ``run.json`` (human-readable record of the run).

``load_run`` is what evaluation and export use, so it rebuilds the model from the
checkpoint alone (registry name, config, vocabulary sizes) and never needs the dataset.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path
from typing import Any

import torch

from models import registry
from models.base import SessionModel
from training.data.dataset import PreparedDataset

CHECKPOINT = "checkpoint.pt"
RUN_INFO = "run.json"
FORMAT_VERSION = 1


def library_versions() -> dict[str, str]:
    import numpy
    import polars

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "polars": polars.__version__}


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_run(run_dir: str | Path, model: SessionModel, dataset: PreparedDataset,
             info: dict[str, Any] | None = None) -> Path:
    """Write ``checkpoint.pt`` and ``run.json`` into ``run_dir`` (created if needed).

    ``info`` (epochs, losses, metrics, ...) goes into run.json; the identity fields
    (model, config, n_items, n_users, dataset, fingerprint) are always filled in here."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    identity = {
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": model.config.to_dict(),
        "n_items": model.n_items,
        "n_users": model.n_users,
        "dataset": str(dataset.path.resolve()) if dataset.path is not None else None,
        "fingerprint": dataset.fingerprint,
    }
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    # write to a temporary name first so a crash never leaves a truncated checkpoint
    tmp = root / (CHECKPOINT + ".tmp")
    torch.save({**identity, "state_dict": state}, tmp)
    tmp.replace(root / CHECKPOINT)
    record = {**(info or {}), **identity, "versions": library_versions()}
    (root / RUN_INFO).write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    return root


def load_run(run_dir: str | Path, device: str | torch.device = "cpu"
             ) -> tuple[SessionModel, dict[str, Any]]:
    """The trained model (eval mode, on ``device``) and the run's info: run.json's
    contents (if present) updated with the checkpoint's model, config, n_items, n_users,
    dataset and fingerprint."""
    root = Path(run_dir)
    path = root / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{root}: no {CHECKPOINT}; is this a `nextclick train` run folder?")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file / foreign pickle: say which file
        raise ValueError(f"{path}: cannot read checkpoint ({exc})") from exc
    missing = [key for key in ("model", "config", "n_items", "n_users", "state_dict")
               if key not in payload]
    if missing:
        raise ValueError(f"{path}: not a nextclick checkpoint (missing {missing})")
    cls = registry.get(payload["model"])
    known = {field.name for field in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(payload["config"]) - known)
    if unknown:
        raise ValueError(f"{path}: config fields {unknown} unknown to model "
                         f"{payload['model']!r} (checkpoint from another version?)")
    model = registry.build(payload["model"], int(payload["n_items"]), int(payload["n_users"]),
                           **payload["config"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    info: dict[str, Any] = {}
    if (root / RUN_INFO).exists():
        info = json.loads((root / RUN_INFO).read_text())
    info.update({key: payload.get(key) for key in
                 ("model", "config", "n_items", "n_users", "dataset", "fingerprint")})
    return model, info
