"""``nextclick train``: train a model (with its paper's settings unless told otherwise) on a
prepared dataset, keeping the epoch that scores best on the validation sessions."""

from __future__ import annotations

import argparse
from typing import Any

from cli.helptext import HelpFormatter, describe

EPILOG = """examples:
  nextclick train --model hrnn-init --data data/synth --out runs/hrnn-init
  nextclick train --model narm --data data/yoochoose --out runs/narm --epochs 10
  nextclick train --model gru4rec --data data/shop --out runs/gru --set hidden_size=200 --refit

Training stops when the validation metric has not improved for --patience epochs (or at
--epochs); the run keeps the best epoch. Models that learn from user ids (HRNN, RUM,
BPR-MF, FPMC) need a dataset with users."""


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser(
        "train", help=help_text, description=describe(__doc__),
        formatter_class=HelpFormatter, epilog=EPILOG)
    parser.add_argument("--model", required=True, metavar="NAME",
                        help="model name, e.g. gru4rec, hrnn-init, narm (the README lists all)")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset folder written by `nextclick prepare`")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder to write")
    parser.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="most epochs to train (default: the model's paper setting)")
    parser.add_argument("--patience", type=int, default=3, metavar="N",
                        help="stop after this many epochs without a validation gain "
                             "(default 3)")
    parser.add_argument("--metric", default="recall@20", metavar="METRIC",
                        help="validation metric that picks the best epoch: recall@K, mrr@K "
                             "or ndcg@K (default recall@20)")
    parser.add_argument("--refit", action="store_true",
                        help="once validation has picked the number of epochs, train again "
                             "for that many on all training sessions")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="batch size (default: the model's)")
    parser.add_argument("--lr", type=float, default=None, metavar="RATE",
                        help="learning rate (default: the model's)")
    parser.add_argument("--loss", default=None, metavar="LOSS",
                        help="ranking loss of the recurrent models: top1, bpr-max or ce "
                             "(default: the model's)")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="any other model setting, e.g. --set hidden_size=200 "
                             "(repeatable)")
    parser.add_argument("--paper-recipe", action="store_true",
                        help="train with the paper's recipe where the model's defaults "
                             "deviate from it (learning rate, batch size, schedule: the "
                             "model file lists them); --set and the options above still win")
    parser.add_argument("--max-valid-sessions", type=int, default=10_000, metavar="N",
                        help="validation sessions scored per epoch (default 10000)")
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default 1, the fastest for these small "
                             "models; a warning says when other work keeps the cores busy)")
    parser.add_argument("--no-shuffle", action="store_true",
                        help="keep sessions in dataset order")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models import registry
    from training.data.dataset import PreparedDataset
    from training.fit.loop import check_trainable, train
    from training.fit.overrides import model_overrides
    from training.fit.threads import apply_threads

    dataset = PreparedDataset.load(args.data)
    model_class = registry.get(args.model)
    check_trainable(model_class, dataset)
    overrides = model_overrides(model_class, args.set or [], {
        "batch_size": args.batch_size, "learning_rate": args.lr, "loss": args.loss})
    if args.paper_recipe:
        overrides = {**registry.paper_recipe(args.model), **overrides}
    apply_threads(args.threads, warn=not args.quiet)  # after the input checks: errors first
    _, info = train(args.model, dataset, args.out, epochs=args.epochs, seed=args.seed,
                    overrides=overrides, patience=args.patience, device=args.device,
                    metric=args.metric, max_valid_sessions=args.max_valid_sessions,
                    shuffle=not args.no_shuffle, progress=not args.quiet, refit=args.refit)
    best = info.get("best_validation") or {}
    summary = f"{args.model}: best epoch {info['best_epoch']} of {info['epochs']}"
    if args.metric in best:
        summary += f", valid {args.metric} {best[args.metric]:.4f}"
    elif info.get("fit_on"):
        summary = f"{args.model}: fitted on {info['fit_on']} (counts: no epochs to select)"
    print(f"{summary}; run saved to {args.out}")
    return 0
