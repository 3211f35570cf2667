"""``nextclick train``: fit a registered model (paper defaults) on a prepared dataset and
checkpoint the best validation epoch."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser(
        "train", help=help_text, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  nextclick train --model narm --data data/yoochoose --out runs/narm "
               "--epochs 10 --threads 1")
    parser.add_argument("--model", required=True, help="model name, e.g. gru4rec, hrnn-init, narm")
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--epochs", type=int, default=None,
                        help="most epochs to train (default: the model's paper setting)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the batch size")
    parser.add_argument("--lr", type=float, default=None, help="override the learning rate")
    parser.add_argument("--loss", default=None, help="top1, bpr-max or ce (recurrent models)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override any config field, e.g. --set hidden_size=200 (repeatable)")
    parser.add_argument("--patience", type=int, default=3,
                        help="stop after this many epochs without validation gain (default 3)")
    parser.add_argument("--metric", default="recall@20",
                        help="validation metric for early stopping (default recall@20)")
    parser.add_argument("--max-valid-sessions", type=int, default=10_000,
                        help="validation sessions scored per epoch (default 10000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (small models train fastest with 1-2)")
    parser.add_argument("--no-shuffle", action="store_true",
                        help="keep sessions in dataset order")
    parser.add_argument("--refit", action="store_true",
                        help="after validation picks the epochs, retrain on all training "
                             "sessions")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from models import registry
    from training.data.dataset import PreparedDataset
    from training.fit.loop import train
    from training.fit.overrides import model_overrides

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    dataset = PreparedDataset.load(args.data)
    model_class = registry.get(args.model)
    overrides = model_overrides(model_class, args.set or [], {
        "batch_size": args.batch_size, "learning_rate": args.lr, "loss": args.loss})
    _, info = train(args.model, dataset, args.out, epochs=args.epochs, seed=args.seed,
                    overrides=overrides, patience=args.patience, device=args.device,
                    metric=args.metric, max_valid_sessions=args.max_valid_sessions,
                    shuffle=not args.no_shuffle, progress=not args.quiet, refit=args.refit)
    best = info.get("best_validation") or {}
    summary = f"{args.model}: best epoch {info['best_epoch']} of {info['epochs']}"
    if args.metric in best:
        summary += f", valid {args.metric} {best[args.metric]:.4f}"
    print(f"{summary}; run saved to {args.out}")
    return 0
