"""Peer implementations for ``nextclick benchmark --peers recbole``: RecBole's NARM and
GRU4Rec trained and evaluated on exactly our split.

RecBole 1.2.1 needs numpy < 2, pandas < 3 and setuptools < 81, so it lives in its own
virtual environment (``var/peers/recbole``, made on first use) and runs as a subprocess;
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` lets it reload its own checkpoints under torch >= 2.6.

The split goes over in RecBole's atomic "benchmark file" format for sequential models:
``<name>.train.inter``, ``.valid.inter`` and ``.test.inter`` with one row per prediction,
``session_id:token  item_id_list:token_seq  item_id:token`` (the clicks before the target,
and the target). Train rows are every prefix of our training sessions (minus ``valid``),
valid rows every prefix of the valid sessions, test rows our test targets with the known
clicks before them; targets with no known click before them are left out (RecBole cannot
take an empty history). RecBole's own metrics (full ranking, Recall@K and MRR@K) are
parsed from ``run_recbole``'s return value.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

RECBOLE_VERSION = "1.2.1"
RECBOLE_MODELS = ("NARM", "GRU4Rec")
REQUIREMENTS = [f"recbole=={RECBOLE_VERSION}", "numpy<2", "pandas<3", "setuptools<81"]

BATCH_SIZE = 512  # NARM's paper value; RecBole's default 2048 gives tiny data few updates

_DRIVER = '''
import json, os, sys, time
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
import torch, numpy, pandas, recbole
from recbole.quick_start import run_recbole
model, name, data_path, epochs, out = sys.argv[1:6]
torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))
config = {
    "data_path": data_path, "USER_ID_FIELD": "session_id", "ITEM_ID_FIELD": "item_id",
    "load_col": {"inter": ["session_id", "item_id_list", "item_id"]},
    "benchmark_filename": ["train", "valid", "test"], "alias_of_item_id": ["item_id_list"],
    "topk": [5, 10, 20], "metrics": ["Recall", "MRR"], "valid_metric": "MRR@20",
    "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "mode": "full"},
    "train_neg_sample_args": None, "loss_type": "CE", "epochs": int(epochs),
    "train_batch_size": %d, "eval_batch_size": 4096, "stopping_step": int(epochs),
    "MAX_ITEM_LIST_LENGTH": 50, "seed": 0, "reproducibility": True, "use_gpu": False,
    "show_progress": False, "checkpoint_dir": out, "log_wandb": False,
}
began = time.time()
result = run_recbole(model=model, dataset=name, config_dict=config)
result["seconds"] = time.time() - began
result["versions"] = {"recbole": recbole.__version__, "torch": torch.__version__,
                      "numpy": numpy.__version__, "pandas": pandas.__version__}
with open(os.path.join(out, "recbole_result.json"), "w") as handle:
    json.dump(result, handle, default=float)
'''


_EPOCH_TIME = re.compile(r"training \[time: ([0-9.]+)s")


def training_seconds(log: str) -> float | None:
    """Sum of RecBole's per-epoch training times (its log's ``epoch N training [time: Xs``
    lines: the optimiser passes only, without its validation), None if none are found."""
    times = [float(value) for value in _EPOCH_TIME.findall(log)]
    return sum(times) if times else None


def venv_python(root: Path) -> Path:
    return root / "bin" / "python"


def ensure_venv(root: Path, progress: bool = True) -> Path:
    """RecBole's own environment (created once): torch as pinned by the project, RecBole
    and its version caps. Returns its python."""
    python = venv_python(root)
    if python.exists() and subprocess.run(
            [str(python), "-c", "import recbole"], capture_output=True).returncode == 0:
        return python
    if progress:
        print(f"creating RecBole environment in {root} (a few minutes)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    return python


def _prefix_rows(items: list[int], targets: list[bool] | None) -> list[tuple[str, int]]:
    """(space-separated history, target) for each target click with a known history."""
    rows = []
    history: list[int] = []
    for position, item in enumerate(items):
        wanted = position > 0 if targets is None else targets[position]
        if wanted and item != 0 and history:
            rows.append((" ".join(str(i) for i in history[-50:]), item))
        if item != 0:
            history.append(item)
    return rows


def export_atomic(dataset: Any, folder: Path, name: str) -> dict[str, int]:
    """Write ``folder/name/name.{train,valid,test}.inter``; returns rows per file."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    train = dataset.train
    parts = {"train": (train.filter(~pl.col("valid")), None),
             "valid": (train.filter(pl.col("valid")), None),
             "test": (dataset.test, "target")}
    counts: dict[str, int] = {}
    for part, (frame, flag) in parts.items():
        columns = [pl.col("item")] + ([pl.col(flag)] if flag else [])
        grouped = frame.group_by("session", maintain_order=True).agg(columns)
        lines = ["session_id:token\titem_id_list:token_seq\titem_id:token"]
        for row in grouped.iter_rows(named=True):
            for history, item in _prefix_rows(row["item"], row[flag] if flag else None):
                lines.append(f"{row['session']}\t{history}\t{item}")
        (target / f"{name}.{part}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[part] = len(lines) - 1
    return counts


def run_recbole_model(python: Path, model: str, data_root: Path, name: str, epochs: int,
                      out: Path, threads: int = 1) -> dict[str, Any]:
    """Train + test one RecBole model in its environment; returns its parsed result."""
    out.mkdir(parents=True, exist_ok=True)
    driver = out / "driver.py"
    driver.write_text(_DRIVER % BATCH_SIZE, encoding="utf-8")
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PEER_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads)}
    began = time.perf_counter()
    process = subprocess.run([str(python), str(driver), model, name, str(data_root),
                              str(epochs), str(out)], env=env, capture_output=True, text=True,
                             cwd=out)
    (out / "recbole.log").write_text(process.stdout + process.stderr, encoding="utf-8")
    if process.returncode != 0:
        tail = (process.stderr or process.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"RecBole {model} failed (see {out / 'recbole.log'}): "
                           + " | ".join(tail))
    result: dict[str, Any] = json.loads((out / "recbole_result.json").read_text())
    train_seconds = training_seconds(process.stdout + process.stderr)
    test = {key.lower(): float(value) for key, value in (result.get("test_result") or {}).items()}
    return {"model": f"recbole-{model}", "metrics": test, "epochs": epochs,
            "seconds": time.perf_counter() - began, "train_seconds": train_seconds,
            "versions": result.get("versions", {}),
            "best_valid": {k.lower(): float(v) for k, v in
                           (result.get("best_valid_result") or {}).items()}}


def run_peers(dataset: Any, out: Path, venv: Path, epochs: int | dict[str, int],
              force: bool = False, progress: bool = True, threads: int = 1) -> dict[str, Any]:
    """RecBole NARM and GRU4Rec on ``dataset``'s split, cached in ``out/peers``. ``epochs``:
    one number, or {RecBole model name or "*": epochs}; ``threads``: torch threads, the
    benchmark's own (throughput is compared at equal threads)."""
    caps = {"*": epochs} if isinstance(epochs, int) else epochs
    unknown = sorted(set(caps) - {"*", *RECBOLE_MODELS})
    if unknown:
        raise ValueError(f"--peer-epochs: unknown RecBole model(s) {', '.join(unknown)}; "
                         f"use {', '.join(RECBOLE_MODELS)}")
    python = ensure_venv(venv.resolve(), progress)
    root = (out / "peers").resolve()
    counts = export_atomic(dataset, root / "atomic", "nextclick")
    results: dict[str, Any] = {"rows": counts}
    for model in RECBOLE_MODELS:
        model_epochs = caps.get(model, caps.get("*", 10))
        folder = root / f"recbole-{model}"
        cache = folder / "result.json"
        key = {"dataset": dataset.fingerprint, "epochs": model_epochs, "batch_size": BATCH_SIZE,
               "early_stopping": False, **({"threads": threads} if threads != 1 else {})}
        if not force and cache.exists():
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:
                results[model] = cached
                continue
        if progress:
            print(f"RecBole {model}: training {model_epochs} epochs", file=sys.stderr)
        result = run_recbole_model(python, model, root / "atomic", "nextclick", model_epochs,
                                   folder, threads)
        result["key"] = key
        cache.write_text(json.dumps(result, indent=2) + "\n")
        results[model] = result
    return results
