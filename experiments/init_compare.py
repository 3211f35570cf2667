"""NARM or HMN under different initialisations, same trainer, same data: the measurement
behind the note on initialisation in docs/results.md (``models/narm.py`` ``reset_parameters``,
``models/window.py`` ``init_item_table_``).

NARM variants:
    authors  N(0, 2 / rows) for every matrix (item table std sqrt(2 / N)), orthogonal
             recurrent matrices, zero biases: the NARM authors' Theano code (the default)
    torch    torch's defaults: N(0, 1) item table, uniform Linear / GRU
    recbole  RecBole's NARM: Xavier-normal item table and Linear layers, torch's GRU
HMN variants:
    xavier   Xavier-normal item table (the default)
    torch    torch's N(0, 1) item table

Each variant trains all ``--epochs`` (no early stop; the best validation epoch is kept) and
is scored on the test split (Recall@20 / MRR@20, full ranking, pessimistic ties).

Usage: OMP_NUM_THREADS=1 .venv/bin/python experiments/init_compare.py data/retailrocket
           [--model narm|hmn] [--epochs 30]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable

import torch
from torch import nn

import models.hmn
from models.narm import Narm
from training.data.dataset import PreparedDataset
from training.evaluation.evaluate import evaluate_model
from training.fit.loop import train


def _torch_defaults(model: Narm) -> None:
    with torch.no_grad():
        nn.init.normal_(model.embedding.weight)
        model.embedding.weight[0].zero_()
        for layer in (model.a1, model.a2, model.v, model.bilinear):
            layer.reset_parameters()
        model.gru.gru.reset_parameters()


def _recbole(model: Narm) -> None:
    with torch.no_grad():
        nn.init.xavier_normal_(model.embedding.weight)
        model.embedding.weight[0].zero_()
        for layer in (model.a1, model.a2, model.v, model.bilinear):
            nn.init.xavier_normal_(layer.weight)
        model.gru.gru.reset_parameters()


VARIANTS: dict[str, Callable[[Narm], None]] = {
    "authors": Narm.reset_parameters, "torch": _torch_defaults, "recbole": _recbole}
HMN_VARIANTS: dict[str, Callable[[nn.Embedding], None]] = {
    "xavier": models.hmn.init_item_table_, "torch": lambda table: None}


def _use(model: str, variant: str) -> None:
    """Install ``variant``'s initialisation for ``model`` (module-level switch)."""
    if model == "narm":
        Narm.reset_parameters = VARIANTS[variant]  # type: ignore[method-assign]
    else:
        models.hmn.init_item_table_ = HMN_VARIANTS[variant]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=("narm", "hmn"), default="narm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = PreparedDataset.load(args.data)
    variants = VARIANTS if args.model == "narm" else HMN_VARIANTS
    for name in variants:
        _use(args.model, name)
        with tempfile.TemporaryDirectory() as run:
            model, info = train(args.model, dataset, run, epochs=args.epochs, seed=args.seed,
                                patience=args.epochs, progress=False)
        metrics = evaluate_model(model, dataset, ks=(20,), progress=False)
        print(f"{name:>8}: Recall@20 {100 * metrics['recall@20']:.2f}  MRR@20 "
              f"{100 * metrics['mrr@20']:.2f}  (best epoch {info['best_epoch']} of "
              f"{info['epochs']}, training loss {info['losses'][0]:.2f} -> "
              f"{info['losses'][-1]:.2f})", flush=True)


if __name__ == "__main__":
    main()
