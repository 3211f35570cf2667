"""Evaluate a model or a trained run with its dataset's protocol: the next-item replay
(``replay``) or, for ``user-ratio`` datasets, per-user lists (``user_lists``); the run
version writes RUN/metrics.json, RUN/ranks.parquet and the run report (``nextclick
evaluate``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from models.base import SessionModel
from training.data.dataset import PreparedDataset
from training.evaluation.cases import Split
from training.evaluation.metrics import check_ks
from training.evaluation.replay import rank_cases, summarize
from training.evaluation.user_lists import USER_LIST_PROTOCOLS, evaluate_user_lists


def evaluate_model(model: SessionModel, dataset: PreparedDataset, split: Split = "test",
                   ks: Iterable[int] = (5, 10, 20), batch_size: int = 256,
                   max_sessions: int | None = None, breakdowns: bool = False,
                   tie_policy: str = "pessimistic", progress: bool = True,
                   ignore_history: bool = False) -> dict[str, Any]:
    """Full-ranking metrics of ``model`` on ``split`` of ``dataset`` (HRNN protocol).

    Returns fractions keyed ``recall@K``, ``mrr@K``, ``ndcg@K``, ``precision@K``,
    ``coverage@K``, ``popularity@K`` plus ``n`` (scored targets), ``n_sessions``,
    ``n_unknown_targets``, ``split``, ``tie_policy``, ``eval_seconds`` and, with
    ``breakdowns=True``, per-bucket rows by position in session, user-history length and
    session length under ``breakdowns``. Per-target ranks: ``rank_cases``.
    Datasets of a ``USER_LIST_PROTOCOLS`` protocol get ``evaluate_user_lists`` instead
    (``max_sessions`` then counts users; no breakdowns).
    The model's training mode is restored afterwards. ``ignore_history``: see
    ``rank_cases``.
    """
    cut_offs = check_ks(ks)
    if dataset.stats.get("protocol") in USER_LIST_PROTOCOLS:
        return evaluate_user_lists(model, dataset, split, cut_offs, batch_size, max_sessions,
                                   progress, ignore_history)
    ranked = rank_cases(model, dataset, split, cut_offs, batch_size, max_sessions,
                        tie_policy, progress, ignore_history)
    result = summarize(ranked, cut_offs, breakdowns)
    result["split"] = split
    result["tie_policy"] = tie_policy
    return result


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return device


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write via a temporary file so a crash never leaves a half-written metrics.json."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def evaluate_run(run_dir: Path, *, data: Path | None = None, split: Split = "test",
                 ks: tuple[int, ...] = (5, 10, 20), tie_policy: str = "pessimistic",
                 batch_size: int = 256, max_sessions: int | None = None,
                 device: str = "auto", plots: bool = True,
                 ignore_history: bool = False) -> tuple[dict[str, Any], list[Path]]:
    """Evaluate a ``nextclick train`` run on its dataset (or ``data``) and write the
    results into the run folder: metrics.json (metrics.no-history.json with
    ``ignore_history``), ranks.parquet and, with ``plots``, report.md and plots/*.png.
    Returns the metrics and the files written."""
    from training.evaluation.run_report import write_report
    from training.fit.checkpoint import load_run

    if not run_dir.is_dir():
        raise FileNotFoundError(f"--run {run_dir}: no such run folder")
    torch_device = resolve_device(device)
    model, info = load_run(run_dir, device=torch_device)
    data_path = data if data is not None else info.get("dataset")
    if not data_path:
        raise ValueError(f"{run_dir}: the run does not record its dataset; pass --data DIR")
    dataset = PreparedDataset.load(data_path)
    common = {
        "model": info.get("model", type(model).__name__), "run": str(run_dir),
        "ks": list(ks),
        "dataset": {"path": str(Path(data_path)), "fingerprint": dataset.fingerprint,
                    "protocol": dataset.stats.get("protocol"),
                    "n_items": dataset.n_items, "n_users": dataset.n_users},
        "device": str(torch_device), "ignore_history": ignore_history,
        "created": datetime.now(UTC).isoformat(timespec="seconds")}
    name = "metrics.no-history.json" if ignore_history else "metrics.json"
    if dataset.stats.get("protocol") in USER_LIST_PROTOCOLS:
        metrics = evaluate_user_lists(model, dataset, split, ks, batch_size, max_sessions,
                                      progress=True, ignore_history=ignore_history)
        if metrics["n_users"] == 0:
            raise ValueError(f"{data_path}: split {split!r} has no users with held-out items")
        metrics.update({**common, "max_users": max_sessions})
        _write_json(run_dir / name, metrics)
        return metrics, [run_dir / name]
    ranked = rank_cases(model, dataset, split, ks, batch_size, max_sessions, tie_policy,
                        progress=True, ignore_history=ignore_history)
    if ranked.rank.size == 0:
        raise ValueError(f"{data_path}: split {split!r} has no target events to score")
    metrics = summarize(ranked, ks, breakdowns=True)
    metrics.update({**common, "split": split, "tie_policy": tie_policy,
                    "max_sessions": max_sessions})
    trained_on = info.get("dataset_fingerprint") or info.get("fingerprint")
    if trained_on and dataset.fingerprint and trained_on != dataset.fingerprint:
        print(f"warning: the run was trained on dataset {trained_on}, evaluating on "
              f"{dataset.fingerprint}", file=sys.stderr)
    _write_json(run_dir / name, metrics)
    written = [run_dir / name]
    if ignore_history:
        return metrics, written
    ranked.to_frame().write_parquet(run_dir / "ranks.parquet")
    written.append(run_dir / "ranks.parquet")
    if plots:
        written.append(write_report(metrics, run_dir))
        written += sorted((run_dir / "plots").glob("*.png"))
    return metrics, written
