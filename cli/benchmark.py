"""``nextclick benchmark``: train (or reuse cached runs of) each model with its paper
defaults on one prepared dataset, evaluate all of them with the dataset's protocol, and
write OUT/report.md, report.html, results.json and plots/*.png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """examples:
  nextclick benchmark --data data/yoochoose --models all --out reports/yoochoose --threads 1
  nextclick benchmark --data data/tmall --models narm,gru4rec --epochs narm=8,*=2 --out reports/t

Finished runs are cached under OUT/runs/<model>/ and reused by a later call with the same
settings; --force retrains them."""


def register(subparsers: Any, help_text: str) -> None:
    from training.evaluation.metrics import TIE_POLICIES

    parser = subparsers.add_parser(
        "benchmark", help=help_text, description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--models", default="all",
                        help="'all' or a comma-separated list of model names (default all)")
    parser.add_argument("--out", required=True, help="report folder, e.g. reports/tmall")
    parser.add_argument("--epochs", default=None,
                        help="epoch cap: N for every model, or per model 'narm=3,hln=1,*=2'")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--refit", action="store_true",
                        help="retrain each model on all training sessions for the epochs "
                             "validation picked")
    parser.add_argument("--max-valid-sessions", type=int, default=None,
                        help="validation sessions scored per epoch (default 10000)")
    parser.add_argument("--max-sessions", type=int, default=None,
                        help="score a fixed random subset of the test sessions")
    parser.add_argument("--tie-policy", choices=TIE_POLICIES, default="pessimistic",
                        help="how equal scores rank (default pessimistic)")
    parser.add_argument("--metric", default="mrr@20",
                        help="ranking and significance metric, recall@K or mrr@K with K <= 20")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--latency-clicks", type=int, default=200,
                        help="clicks timed per model, 0 to skip (default 200)")
    parser.add_argument("--bootstrap", type=int, default=2000,
                        help="bootstrap resamples of the significance test (default 2000)")
    parser.add_argument("--force", action="store_true", help="retrain cached runs too")
    parser.add_argument("--peers", choices=("none", "recbole"), default="none",
                        help="also train RecBole's models on the same split")
    parser.add_argument("--peer-epochs", default="10",
                        help="RecBole epochs: N, or per model 'NARM=30,GRU4Rec=100'")
    parser.add_argument("--peer-venv", default="var/peers/recbole",
                        help="RecBole's own virtual environment (made when missing)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models import registry
    from training.benchmark.runner import benchmark

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.models.strip() == "all":
        models = registry.available()
    else:
        models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not models:
        raise ValueError("--models: give 'all' or a comma-separated list of model names")
    summary = benchmark(Path(args.data), models, Path(args.out), epochs=args.epochs,
                        seed=args.seed, max_sessions=args.max_sessions,
                        tie_policy=args.tie_policy, metric=args.metric, device=args.device,
                        force=args.force, latency_clicks=args.latency_clicks,
                        resamples=args.bootstrap, progress=not args.quiet,
                        command="nextclick " + " ".join(sys.argv[1:]),
                        peers=args.peers == "recbole", peer_epochs=args.peer_epochs,
                        peer_venv=Path(args.peer_venv),
                        max_valid_sessions=args.max_valid_sessions, refit=args.refit)
    metric = summary["settings"]["metric"]
    for name in summary["ranking"]:
        entry = summary["models"][name]
        print(f"{name:>14}  {metric} {100 * entry['metrics'][metric]:6.2f}%"
              f"{'  (cached)' if entry.get('cached') else ''}")
    for name, error in summary["failures"].items():
        print(f"{name:>14}  FAILED: {error}")
    for name, reason in summary["skipped"].items():
        print(f"{name:>14}  skipped: {reason}")
    print(f"wrote {Path(args.out) / 'report.html'}, report.md, results.json, plots/")
    return 1 if summary["failures"] and not summary["ranking"] else 0
