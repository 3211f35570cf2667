"""NARM under three initialisations, same trainer, same data: the measurement behind the
README's note on NARM's initialisation (``models/narm.py``, ``reset_parameters``).

    authors  N(0, 2 / rows) for every matrix (item table std sqrt(2 / N)), orthogonal
             recurrent matrices, zero biases: the NARM authors' Theano code (the default)
    torch    torch's defaults: N(0, 1) item table, uniform Linear / GRU
    recbole  RecBole's NARM: Xavier-normal item table and Linear layers, torch's GRU

Each variant trains all ``--epochs`` (no early stop; the best validation epoch is kept) and
is scored on the test split (Recall@20 / MRR@20, full ranking, pessimistic ties).

Usage: OMP_NUM_THREADS=1 .venv/bin/python scripts/narm_init.py data/retailrocket [--epochs 30]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable

import torch
from torch import nn

from models.narm import Narm
from training.dataset import PreparedDataset
from training.evaluate import evaluate_model
from training.train import train


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = PreparedDataset.load(args.data)
    authors = Narm.reset_parameters
    for name in args.variants.split(","):
        Narm.reset_parameters = VARIANTS[name]  # type: ignore[method-assign]
        try:
            with tempfile.TemporaryDirectory() as run:
                model, info = train("narm", dataset, run, epochs=args.epochs, seed=args.seed,
                                    patience=args.epochs, progress=False)
        finally:
            Narm.reset_parameters = authors  # type: ignore[method-assign]
        metrics = evaluate_model(model, dataset, ks=(20,), progress=False)
        print(f"{name:>8}: Recall@20 {100 * metrics['recall@20']:.2f}  MRR@20 "
              f"{100 * metrics['mrr@20']:.2f}  (best epoch {info['best_epoch']} of "
              f"{info['epochs']}, training loss {info['losses'][0]:.2f} -> "
              f"{info['losses'][-1]:.2f})", flush=True)


if __name__ == "__main__":
    main()
