"""The training loop: fit a registered model on a prepared dataset (``nextclick train``).

The loop is generic over ``SessionModel``: the model names its batching kind and computes
its own loss (``SessionModel.training_step``; the loop carries recurrent models' per-row
state between the chunks of an epoch); hyperparameters come from the model's config
(paper defaults) with CLI / ``--set`` overrides. Training-related config fields the loop
reads when a model declares them: ``batch_size``, ``learning_rate``, ``optimizer``
("adagrad" | "adam" | "sgd"), ``momentum``, ``weight_decay``, ``epochs``,
``lr_decay_epochs`` / ``lr_decay`` (multiply the learning rate by ``lr_decay`` every
``lr_decay_epochs`` epochs; 0 = never), ``bptt`` (steps per update for the parallel
batchings), ``max_length`` (prefix batching), ``grad_clip``, ``min_epochs``; missing
fields fall back to ``TRAINER_DEFAULTS``.

Early stopping watches a validation metric (default Recall@20) computed by
``training.evaluation.evaluate.evaluate_model`` on the ``valid`` sessions; the best
epoch's weights are what ``RUN/checkpoint.pt`` holds. It never stops before
``min_epochs`` epochs: a model that starts slowly (NARM from its authors' tiny
initialisation) can show flat validation for a few epochs before it learns, and the
authors' own loop did not count bad epochs at all (30 epochs, patience 100; NARM and HMN
set ``min_epochs`` = 30).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from models import registry
from models.base import SessionModel
from training.data.dataset import PreparedDataset
from training.fit.batching import make_batches, training_sessions
from training.fit.checkpoint import save_run
from training.fit.optimizers import build_optimizer

TRAINER_DEFAULTS: dict[str, Any] = {
    "batch_size": 512, "learning_rate": 1e-3, "optimizer": "adam", "momentum": 0.0,
    "weight_decay": 0.0, "epochs": 10, "bptt": 1, "max_length": None, "grad_clip": 0.0,
    "lr_decay_epochs": 0, "lr_decay": 1.0, "min_epochs": 0,
}


def setting(model: SessionModel, name: str) -> Any:
    """A training setting from the model's config, or the trainer's default."""
    return getattr(model.config, name, TRAINER_DEFAULTS[name])


def build_model(model: str | type[SessionModel], n_items: int, n_users: int,
                overrides: dict[str, Any]) -> SessionModel:
    """A registered model by name, or an instance of a model class (experiments train
    variants that are not registered), with config overrides."""
    if isinstance(model, str):
        return registry.build(model, n_items, n_users, **overrides)
    return model(n_items, n_users, model.config_class(**overrides))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _evaluator() -> Callable[..., dict[str, Any]] | None:
    try:
        from training.evaluation.evaluate import evaluate_model
    except ImportError as exc:
        warnings.warn(f"training.evaluation unavailable ({exc}); no validation / early stopping",
                      stacklevel=2)
        return None
    return evaluate_model


def validate(model: SessionModel, dataset: PreparedDataset, metric: str,
             max_sessions: int | None) -> dict[str, float] | None:
    """Validation metrics on the ``valid`` sessions, or None when there are none."""
    if dataset.train.filter(dataset.train["valid"]).height == 0:
        return None
    evaluate = _evaluator()
    if evaluate is None:
        return None
    k = int(metric.split("@")[1])
    metrics = evaluate(model, dataset, split="valid", ks=(k,), max_sessions=max_sessions)
    if metric not in metrics:
        raise ValueError(f"validation metric {metric!r} not among {sorted(metrics)}")
    return {key: float(value) for key, value in metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def check_trainable(model: str | type[SessionModel], dataset: PreparedDataset) -> None:
    """Raise ``ValueError`` (one line) when ``model`` cannot learn from ``dataset``: a model
    that learns from user ids on a dataset without users."""
    model_class = registry.get(model) if isinstance(model, str) else model
    if model_class.needs_users() and dataset.n_users == 0:
        where = f"{dataset.path}" if dataset.path else "the dataset"
        raise ValueError(f"{model_class.name} learns from user ids, but {where} has no users "
                         "(its click log had no user column); train a session model "
                         "instead, e.g. gru4rec or narm")


def train(model_name: str | type[SessionModel], dataset: PreparedDataset,
          run_dir: str | Path, *,
          epochs: int | None = None, seed: int = 0, overrides: dict[str, Any] | None = None,
          patience: int = 3, device: str = "cpu", metric: str = "recall@20",
          max_valid_sessions: int | None = 10_000, shuffle: bool = True,
          progress: bool = True, refit: bool = False) -> tuple[SessionModel, dict[str, Any]]:
    """Train, checkpoint the best epoch into ``run_dir``; return the best model (eval
    mode) and the run info written to run.json.

    ``refit``: once validation has picked the best epoch, train a fresh model (same seed)
    for that many epochs on *all* training sessions, the validation ones included, and
    checkpoint that one. The validation split is the latest part of the training data,
    the part closest to the test period, so on drifting data a model that never sees it
    loses accuracy (tmall-benchmark: POP 1.97 -> 1.11 Recall@20 without it).

    Raises ``ValueError`` (one line) for a model that learns from user ids on a dataset
    without users."""
    check_trainable(model_name, dataset)
    model, info = _train(model_name, dataset, run_dir, epochs=epochs, seed=seed,
                         overrides=overrides, patience=patience, device=device, metric=metric,
                         max_valid_sessions=max_valid_sessions, shuffle=shuffle,
                         progress=progress)
    if not refit or not info.get("best_epoch") or not dataset.train["valid"].any() \
            or model.batching == "counts":  # counts already fit on every session
        return model, info
    everything = dataclasses.replace(
        dataset, train=dataset.train.with_columns(pl.lit(False).alias("valid")))
    if progress:
        print(f"{model.name}: refit on all training sessions for {info['best_epoch']} "
              "epoch(s)", file=sys.stderr)
    refitted, refit_info = _train(model_name, everything, run_dir, epochs=info["best_epoch"],
                                  seed=seed, overrides=overrides, patience=patience,
                                  device=device, metric=metric, max_valid_sessions=None,
                                  shuffle=shuffle, progress=progress)
    info["refit"] = {key: refit_info[key] for key in ("epochs", "epoch_seconds", "losses")}
    info["finished"] = refit_info["finished"]
    save_run(run_dir, refitted, dataset, info)
    return refitted, info


def _train(model_name: str | type[SessionModel], dataset: PreparedDataset,
           run_dir: str | Path, *,
           epochs: int | None, seed: int, overrides: dict[str, Any] | None, patience: int,
           device: str, metric: str, max_valid_sessions: int | None, shuffle: bool,
           progress: bool) -> tuple[SessionModel, dict[str, Any]]:
    if metric.split("@")[0] not in ("recall", "mrr", "ndcg") or "@" not in metric:
        raise ValueError(f"--metric must look like recall@20 or mrr@20, got {metric!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    seed_everything(seed)
    model = build_model(model_name, dataset.n_items, dataset.n_users, overrides or {})
    model.to(device)
    n_epochs = int(epochs if epochs is not None else setting(model, "epochs"))
    info: dict[str, Any] = {"seed": seed, "device": device, "batching": model.batching,
                            "metric": metric, "epochs": 0, "best_epoch": None,
                            "epoch_seconds": [], "losses": [], "validation": [],
                            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    if model.batching == "counts":
        # Counting has no epochs to select, so holding sessions out of it is pure loss
        # (Item-KNN 12.21 vs 15.18 Recall@20 on a drifting public split): it fits on every
        # training session, the validation ones included, and is not validated.
        table = training_sessions(dataset, include_valid=True)
        started = time.perf_counter()
        model.fit_counts([table.items[a:b].tolist()
                          for a, b in zip(table.offsets[:-1], table.offsets[1:], strict=True)])
        info["epoch_seconds"].append(time.perf_counter() - started)
        info["epochs"] = info["best_epoch"] = 1
        info["fit_on"] = "all training sessions"
        info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        save_run(run_dir, model, dataset, info)
        return model.eval(), info

    optimizer = build_optimizer(
        [param for param in model.parameters() if param.requires_grad],
        str(setting(model, "optimizer")), lr=float(setting(model, "learning_rate")),
        momentum=float(setting(model, "momentum")),
        weight_decay=float(setting(model, "weight_decay")), model=model.name)
    batch_size = int(setting(model, "batch_size"))
    best_score, best_state, stale = -math.inf, None, 0
    for epoch in range(1, n_epochs + 1):
        batches = make_batches(model.batching, dataset, batch_size,
                               steps=int(setting(model, "bptt")),
                               max_length=setting(model, "max_length"),
                               shuffle=shuffle, seed=seed * 1000 + epoch)
        model.train()
        started = time.perf_counter()
        total, count = 0.0, 0
        carry = None  # recurrent models' per-row state between the chunks of this epoch
        bar = tqdm(batches, total=len(batches), desc=f"{model.name} epoch {epoch}/{n_epochs}",
                   disable=not progress, leave=False, file=sys.stderr)
        for index, batch in enumerate(bar):
            loss, carry = model.training_step(batch.to(device), carry)
            if not loss.requires_grad:  # chunk without usable targets
                continue
            if not torch.isfinite(loss):
                raise ValueError(f"{model.name}: loss is {loss.item()} at epoch {epoch}, batch "
                                 f"{index}; lower the learning rate (--lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            clip = float(setting(model, "grad_clip"))
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            total += float(loss.detach())
            count += 1
            if index % 20 == 0:
                bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        seconds = time.perf_counter() - started
        mean_loss = total / max(count, 1)
        scores = validate(model, dataset, metric, max_valid_sessions)
        decay_every = int(setting(model, "lr_decay_epochs"))
        if decay_every > 0 and epoch % decay_every == 0:
            for group in optimizer.param_groups:
                group["lr"] *= float(setting(model, "lr_decay"))
        info["epochs"] = epoch
        info["epoch_seconds"].append(seconds)
        info["losses"].append(mean_loss)
        info["validation"].append(scores)
        line = f"{model.name} epoch {epoch}: loss {mean_loss:.4f}, {seconds:.1f}s"
        if scores is not None:
            line += f", valid {metric} {scores[metric]:.4f}"
        if progress:
            print(line, file=sys.stderr)
        score = scores[metric] if scores is not None else float(epoch)  # no validation: last
        if score > best_score:
            best_score, stale = score, 0
            best_state = copy.deepcopy(model.state_dict())
            info["best_epoch"] = epoch
            info["best_validation"] = scores
            save_run(run_dir, model, dataset, info)
        else:
            stale += 1
            if stale >= patience and epoch >= int(setting(model, "min_epochs")):
                if progress:
                    print(f"early stopping: no {metric} gain for {patience} epochs",
                          file=sys.stderr)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save_run(run_dir, model, dataset, info)
    return model.eval(), info
