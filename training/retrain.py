"""The closed loop's last step: from served clicks back to a better model.

``retrain`` prepares the exported event log (``nextclick events export``; optionally with a
base click log, clicks found in both counted once) with the ``time`` protocol, so the most
recent days are the holdout (or ``last-session``: each user's latest session, the HRNN
papers' protocol); trains a candidate of one model; exports it to a staging folder
(parity-gated as every export); scores the candidate and the version being served on the
same holdout through the serving engine (``training.evaluation.bundles``); and moves the
candidate into the artifacts folder only when it is at least as good on the chosen metric,
over a holdout of at least ``min_holdout`` targets (fewer cannot tell two models apart). A
running service then loads it with ``POST /admin/reload`` (``reload_service``); users'
state carries over, because a new version rebuilds each user's state from the user's
session history on first use.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl


@dataclass
class GateResult:
    model: str
    metric: str
    candidate: dict[str, Any]
    current: dict[str, Any] | None
    promoted: bool
    reason: str  # why the candidate was or was not installed
    bundle: Path | None  # the candidate's bundle in the artifacts folder, when promoted
    dataset: Path


def latest_bundle(artifacts: Path, model: str) -> Path | None:
    """The version the engine serves for ``model``: the newest loadable version folder."""
    from bundle import versions_newest_first

    folder = artifacts / model
    versions = versions_newest_first(folder) if folder.is_dir() else []
    return versions[0] if versions else None


def retrain(events: Path, model: str, artifacts: Path, work: Path, *,
            base: Path | None = None, base_format: str = "csv", protocol: str = "time",
            holdout_days: float = 1.0, min_holdout: int = 100, metric: str = "recall@20",
            epochs: int | None = None, seed: int = 0, progress: bool = True) -> GateResult:
    """Prepare, train, export, gate (see the module docstring)."""
    from bundle import BundleError
    from service.engine import ModelBundle
    from training.data.pipeline import PrepareOptions, prepare_dataset
    from training.data.readers import EVENT_SCHEMA, ReaderOptions, read_events
    from training.evaluation.bundles import evaluate_bundle
    from training.export.writer import export_bundle, popular_items
    from training.fit.loop import train

    name, _, k_text = metric.partition("@")
    if name not in ("recall", "mrr") or not k_text.isdigit() or not 1 <= int(k_text) <= 100:
        raise ValueError(f"--metric must be recall@K or mrr@K (K <= 100), got {metric!r}")
    frames = [read_events(events, "events")]
    if base is not None:
        frames.insert(0, read_events(base, base_format, ReaderOptions()))
    if protocol not in ("time", "last-session"):
        raise ValueError(f"--protocol must be time or last-session, got {protocol!r}")
    combined = pl.concat([frame.select(list(EVENT_SCHEMA)) for frame in frames])
    overlap = 0
    if base is not None:
        # A base log that reaches into the logged period holds the same clicks again: one
        # click is one (user, or session when anonymous; item; type; time), kept once.
        before = combined.height
        combined = combined.with_columns(
            pl.coalesce("user_id", "session_id").alias("_who")).unique(
            ["_who", "item_id", "event_type", "timestamp"], keep="first",
            maintain_order=True).drop("_who")
        overlap = before - combined.height
    dataset_dir = work / "dataset"
    dataset = prepare_dataset(combined, PrepareOptions(protocol=protocol, test_days=holdout_days),
                              fmt="events", sources=[str(events)] + ([str(base)] if base else []))
    dataset.save(dataset_dir)
    targets = int(dataset.stats["counts"]["test"]["targets"])
    if progress:
        held = _holdout_text(protocol, holdout_days)
        print(f"retrain: {dataset.stats['counts']['fit']['events']:,} training events"
              + (f" ({overlap:,} clicks in both the base and the log counted once)"
                 if overlap else "")
              + f", holdout {targets:,} targets ({held})", flush=True)
    candidate_model, info = train(model, dataset, work / "run", epochs=epochs, seed=seed,
                                  progress=progress, refit=True)
    staging = export_bundle(candidate_model, dataset.items, work / "staging",
                            popular=popular_items(dataset.train["item"].to_list(),
                                                  dataset.items),
                            metrics={"retrain": {"best_epoch": info.get("best_epoch")}},
                            data={"path": str(dataset_dir), "fingerprint": dataset.fingerprint,
                                  "stats": dataset.stats})
    ks = sorted({5, 10, 20, int(k_text)})
    candidate = evaluate_bundle(ModelBundle(staging), dataset, ks)
    served = latest_bundle(artifacts, model)
    current: dict[str, Any] | None = None
    if served is not None:
        try:
            current = evaluate_bundle(ModelBundle(served), dataset, ks)
        except BundleError as exc:  # an unloadable served version cannot defend its place
            current = {"error": str(exc)}
    if current is None or "error" in current:
        promoted, reason = True, "no loadable version is served"
    elif targets < min_holdout:
        promoted, reason = False, (f"the holdout has {targets:,} targets, fewer than "
                                   f"{min_holdout:,}: too few to compare two models (hold "
                                   "out more days, or lower --min-holdout)")
    elif candidate[metric] >= float(current[metric]):
        promoted, reason = True, f"the candidate's {metric} is at least the served version's"
    else:
        promoted, reason = False, f"the candidate's {metric} is below the served version's"
    target: Path | None = None
    if promoted:
        _record_holdout_metrics(staging, candidate, protocol, holdout_days)
        target = _install(staging, artifacts / model / staging.name)
    record = {"model": model, "metric": metric, "candidate": candidate, "current": current,
              "promoted": promoted, "reason": reason, "holdout_targets": targets,
              "bundle": str(target) if target else None,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (work / "gate.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return GateResult(model, metric, candidate, current, promoted, reason, target, dataset_dir)


def _holdout_text(protocol: str, holdout_days: float) -> str:
    return (f"the last {holdout_days:g} day(s)" if protocol == "time"
            else "each user's last session")


def _record_holdout_metrics(bundle: Path, scores: dict[str, Any], protocol: str,
                            holdout_days: float) -> None:
    """Put the gate's scores in the bundle's manifest, where ``GET /models`` reads a
    version's headline accuracy (the manifest is not in its own file hashes)."""
    from bundle import Manifest

    manifest = Manifest.read(bundle)
    held = _holdout_text(protocol, holdout_days)
    manifest.extra["metrics"] = {**{name: value for name, value in scores.items()
                                    if "@" in name},
                                 "n": scores["targets"], "holdout": f"retrain gate: {held}",
                                 **manifest.extra.get("metrics", {})}
    manifest.write(bundle)


def _install(staging: Path, target: Path) -> Path:
    """Copy a bundle into the artifacts folder under a hidden name (the engine skips dot
    folders), then rename it into place: a reload never sees half a bundle."""
    if target.exists():
        raise ValueError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = target.parent / f".incoming-{target.name}"
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.copytree(staging, incoming)
    os.rename(incoming, target)
    return target


def reload_service(url: str, api_key: str | None = None, timeout: float = 60.0
                   ) -> dict[str, Any]:
    """``POST /admin/reload`` on a running service (an admin key when it has keys)."""
    request = urllib.request.Request(
        url.rstrip("/") + "/admin/reload", data=b"{}", method="POST",
        headers={"Content-Type": "application/json", **({"X-API-Key": api_key} if api_key
                                                          else {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise ValueError(f"{url}: reload answered {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        raise ValueError(f"{url}: cannot reach the service ({exc.reason})") from None
