"""The benchmark runner (``nextclick benchmark``): train, evaluate and compare models on one
dataset, one report.

For every model (``--models all`` = every registered model) with its paper defaults:
train (``training.fit.loop.train``), rank every test target over the full catalogue
(``training.evaluation.replay.rank_cases``, the dataset's protocol, K = 1..20), time per-click
inference, and write under ``OUT/``::

    runs/<model>/         checkpoint.pt, run.json, metrics.json, ranks.parquet, result.json
    results.json          everything below, machine-readable
    report.md, report.html  tables + plots, best model first
    plots/*.png           Recall@K / MRR@K for K = 1..20; by session length, position in
                          session and user-history length (at the largest K); catalogue
                          coverage and popularity; training time, model size, latency

``runs/<model>/result.json`` is written last, so it marks a finished run: a later call with
the same settings (dataset fingerprint, epochs, seed, tie policy, subset) reuses it and only
the missing models are trained (``--force`` retrains all).

``--epochs`` caps training: one number for every model, or per model
(``narm=3,hln=1,*=2``; ``*`` = the rest, models not named keep their paper default). Count
models (POP, S-POP, Item-KNN, SKNN) fit in one pass and ignore it. Models that learn from
user ids (HRNN, RUM, BPR-MF, FPMC) are skipped, with the reason in the report, on a dataset
without users.

Latency is eager-PyTorch step timing (``advance`` + ``score`` + top-20) at batch size 1 on
the benchmark's device and threads, over the first clicks of the test sessions: what one
click costs the model itself, without ONNX Runtime, Redis or HTTP (``nextclick bench``
measures the served path).

Significance: the best model and the runner-up by ``--metric`` are compared on the same
test targets (``training.evaluation.statistics``).
"""


from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from loadtest.stats import latency_summary
from training.evaluation.statistics import compare_pair, per_case

KS = tuple(range(1, 21))


RESULT = "result.json"


def parse_epochs(text: str | int | None) -> dict[str, int]:
    """``--epochs``: "3" (every model) or "narm=3,hln=1,*=2" -> {name or "*": epochs}."""
    if text is None or text == "":
        return {}
    if isinstance(text, int) or str(text).strip().isdigit():
        value = int(text)
        pairs = {"*": value}
    else:
        pairs = {}
        for part in str(text).split(","):
            name, sep, raw = part.partition("=")
            if not sep or not name.strip() or not raw.strip().isdigit():
                raise ValueError(f"--epochs: expected N or NAME=N[,NAME=N...], got {text!r}")
            pairs[name.strip()] = int(raw)
    if any(v < 1 for v in pairs.values()):
        raise ValueError(f"--epochs must be >= 1, got {text!r}")
    return pairs


def epochs_for(name: str, caps: dict[str, int]) -> int | None:
    return caps.get(name, caps.get("*"))


def repeat_shares(dataset: Any) -> dict[str, float]:
    """Share of the test targets that repeat an item of their own session prefix, and
    that repeat the last click: what decides whether S-POP-like models can win."""
    test = dataset.test
    if test.height == 0:
        return {"in_prefix": 0.0, "last_click": 0.0, "targets": 0}
    sessions, items, targets = (test[c].to_numpy() for c in ("session", "item", "target"))
    starts = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    ends = np.r_[starts[1:], len(sessions)]
    n = in_prefix = last = 0
    for a, b in zip(starts, ends, strict=True):
        seen: set[int] = set()
        for p in range(a, b):
            if targets[p]:
                n += 1
                in_prefix += int(items[p]) in seen
                last += p > a and items[p] == items[p - 1]
            seen.add(int(items[p]))
    return {"in_prefix": in_prefix / max(n, 1), "last_click": last / max(n, 1), "targets": n}


def _latency(model: Any, dataset: Any, clicks: int) -> dict[str, float]:
    """Per-click advance + score + top-20 at batch 1 (eager torch), in milliseconds."""
    import torch

    if clicks < 1 or dataset.test.height == 0:
        return {}
    sessions = (dataset.test.group_by("session", maintain_order=True)
                .agg(pl.col("item"))["item"].to_list())
    device = model._device()
    times: list[float] = []
    with torch.no_grad():
        for items in sessions:
            state = model.start_session(model.init_user_state(1), 1)
            for item in items:
                began = time.perf_counter()
                state = model.advance(torch.tensor([int(item)], device=device), state)
                torch.topk(model.score(state), min(20, model.n_items), dim=1)
                times.append(time.perf_counter() - began)
                if len(times) >= clicks:
                    break
            if len(times) >= clicks:
                break
    samples = [1000.0 * t for t in (times[1:] if len(times) > 1 else times)]  # 1st: warm-up
    summary = latency_summary(samples)
    return {"clicks": summary["n"], "median_ms": summary["p50_ms"],
            "p95_ms": summary["p95_ms"], "mean_ms": summary["mean_ms"]}


def fit_samples(dataset: Any) -> int:
    """Training examples per epoch of the validation-selected fit: every click after the
    first of every non-held-out training session (one prefix -> next click each)."""
    fit = dataset.train.filter(~pl.col("valid"))
    return int(fit.height - fit["session"].n_unique())


def run_model(name: str, dataset: Any, out: Path, key: dict[str, Any], *,
              device: str, force: bool, latency_clicks: int, progress: bool,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train + evaluate one model into ``out/runs/<name>`` or reuse a finished run."""
    from training.evaluation.replay import rank_cases, summarize
    from training.fit.checkpoint import CHECKPOINT
    from training.fit.loop import train

    run_dir = out / "runs" / name
    result_path = run_dir / RESULT
    if not force and result_path.exists():
        cached: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
        if cached.get("key") == {**key, "model": name} and (run_dir / "ranks.parquet").exists():
            cached["cached"] = True
            return cached
    result_path.unlink(missing_ok=True)
    began = time.perf_counter()
    model, info = train(name, dataset, run_dir, epochs=key["epochs"], seed=key["seed"],
                        overrides=overrides, device=device, progress=progress,
                        max_valid_sessions=key.get("max_valid_sessions", 10_000),
                        refit=bool(key.get("refit")))
    train_wall = time.perf_counter() - began
    ranked = rank_cases(model, dataset, "test", KS, max_sessions=key["max_sessions"],
                        tie_policy=key["tie_policy"], progress=progress)
    metrics = summarize(ranked, KS, breakdowns=True)
    ranked.to_frame().write_parquet(run_dir / "ranks.parquet")
    (run_dir / "metrics.json").write_text(json.dumps(
        {**metrics, "model": name, "split": "test", "tie_policy": key["tie_policy"],
         "dataset": {"fingerprint": dataset.fingerprint}}, indent=2) + "\n", encoding="utf-8")
    tensors = [*model.parameters(), *model.buffers()]
    result: dict[str, Any] = {
        "key": {**key, "model": name},
        "model": name,
        "config": model.config.to_dict(),
        "metrics": metrics,
        "train": {"epochs": info.get("epochs"), "best_epoch": info.get("best_epoch"),
                  "fit_seconds": float(sum(info.get("epoch_seconds") or [])),
                  "wall_seconds": train_wall},
        "size": {"checkpoint_bytes": (run_dir / CHECKPOINT).stat().st_size,
                 "parameters": int(sum(p.numel() for p in model.parameters())),
                 "tensor_elements": int(sum(t.numel() for t in tensors))},
        "latency": _latency(model, dataset, latency_clicks),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    result["cached"] = False
    return result


def benchmark(data: Path, models: list[str], out: Path, *,
              epochs: int | str | dict[str, int] | None = None,
              seed: int = 0, max_sessions: int | None = None, tie_policy: str = "pessimistic",
              metric: str = "mrr@20", device: str = "cpu", force: bool = False,
              latency_clicks: int = 200, resamples: int = 2000, progress: bool = True,
              command: str = "", peers: bool = False,
              peer_epochs: int | str | dict[str, int] = 10,
              peer_venv: Path = Path("var/peers/recbole"), peer_threads: int = 1,
              max_valid_sessions: int | None = None, refit: bool = False,
              paper_recipe: bool = False) -> dict[str, Any]:
    """Run every model (cached runs reused), write results.json, report.md/.html and
    plots into ``out``; return the results dict."""
    from tqdm.auto import tqdm

    from models import registry
    from training.benchmark.report import write_reports
    from training.data.dataset import PreparedDataset

    per_case(np.zeros(0), metric)  # validates --metric early
    if int(metric.partition("@")[2]) not in KS:
        raise ValueError(f"--metric cut-off must be within 1..20, got {metric!r}")
    caps = epochs if isinstance(epochs, dict) else parse_epochs(epochs)
    for name in models:
        registry.get(name)  # unknown names fail before any training
    unknown_caps = sorted(set(caps) - {"*"} - set(models))
    if unknown_caps:
        raise ValueError(f"--epochs names models not being run: {', '.join(unknown_caps)}")
    dataset = PreparedDataset.load(data)
    if dataset.test.height == 0:
        raise ValueError(f"{data}: no test split to evaluate on")
    out.mkdir(parents=True, exist_ok=True)
    key = {"dataset": dataset.fingerprint, "seed": seed,
           "max_sessions": max_sessions, "tie_policy": tie_policy, "ks": list(KS)}
    if max_valid_sessions is not None:  # part of the key only when set (older caches)
        key["max_valid_sessions"] = max_valid_sessions
    if refit:
        key["refit"] = True
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    skipped: dict[str, str] = {}
    if dataset.n_users == 0:
        for name in models:
            if registry.get(name).needs_users():
                skipped[name] = "learns from user ids; this dataset has none"
    bar = tqdm([n for n in models if n not in skipped], desc="benchmark", unit="model",
               disable=not progress, file=sys.stderr)
    for name in bar:
        bar.set_postfix(model=name)
        overrides = registry.paper_recipe(name) if paper_recipe else {}
        # the full config is part of the key: a changed default retrains, never reuses
        model_key = {**key, "epochs": epochs_for(name, caps),
                     "config": registry.get(name).config_class(**overrides).to_dict()}
        if registry.get(name).batching == "counts":  # one pass, no epochs to pick from
            model_key["epochs"] = None
            model_key.pop("max_valid_sessions", None)
        try:
            results[name] = run_model(name, dataset, out, model_key, device=device, force=force,
                                      latency_clicks=latency_clicks, progress=progress,
                                      overrides=overrides)
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
            print(f"benchmark: {name} failed: {failures[name]}", file=sys.stderr)
    bar.close()
    ranking = sorted(results, key=lambda n: -results[n]["metrics"][metric])
    significance: dict[str, Any] | None = None
    if len(ranking) >= 2:
        best, second = ranking[0], ranking[1]
        frames = [pl.read_parquet(out / "runs" / n / "ranks.parquet") for n in (best, second)]
        top = max(KS)
        significance = {"best": best, "runner_up": second, "by": metric,
                        **compare_pair(frames[0], frames[1],
                                       sorted({metric, f"recall@{top}", f"mrr@{top}"}),
                                       resamples)}
    peer_results: dict[str, Any] | None = None
    if peers:
        from training.benchmark.peers import run_peers

        try:
            peer_caps = (peer_epochs if isinstance(peer_epochs, dict)
                         else parse_epochs(peer_epochs))
            peer_results = run_peers(dataset, out, peer_venv, peer_caps, force, progress,
                                     threads=peer_threads)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            failures["recbole"] = f"{type(exc).__name__}: {exc}"
            print(f"benchmark: RecBole peers failed: {failures['recbole']}", file=sys.stderr)
    summary = {
        "dataset": {"path": str(data), "fingerprint": dataset.fingerprint,
                    "protocol": dataset.stats.get("protocol"), "n_items": dataset.n_items,
                    "n_users": dataset.n_users, "repeats": repeat_shares(dataset),
                    "valid_sessions": int(dataset.train.filter(pl.col("valid"))["session"]
                                          .n_unique()),
                    "fit_samples": fit_samples(dataset)},
        "settings": {**key, "epochs": caps or None, "metric": metric, "device": device,
                     **({"paper_recipe": True} if paper_recipe else {}),
                     "latency": "eager torch, batch 1: advance + score + top-20"},
        "command": command,
        "ranking": ranking,
        "models": results,
        "failures": failures,
        "skipped": skipped,
        "significance": significance,
        "peers": peer_results,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_reports(summary, out)
    return summary
