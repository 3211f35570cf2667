"""``nextclick benchmark``: train (or reuse cached runs of) each model with its paper
defaults on one prepared dataset, evaluate all of them with the dataset's protocol, and
write OUT/report.md, report.html, results.json and plots/*.png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe

EPILOG = """examples:
  nextclick benchmark --data data/yoochoose --models all --out reports/yoochoose
  nextclick benchmark --data data/tmall --models narm,gru4rec --epochs narm=8,*=2 --out reports/t

Finished runs are cached under OUT/runs/<model>/ and reused by a later call with the same
settings; --force retrains them."""


def register(subparsers: Any, help_text: str) -> None:
    from training.evaluation.metrics import TIE_POLICIES

    parser = subparsers.add_parser(
        "benchmark", help=help_text, description=describe(__doc__), epilog=EPILOG,
        formatter_class=HelpFormatter)
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset folder written by `nextclick prepare`")
    parser.add_argument("--models", default="all", metavar="NAME,...",
                        help="'all' or a comma-separated list of model names (default all)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="report folder, e.g. reports/tmall")
    parser.add_argument("--epochs", default=None, metavar="CAP",
                        help="most epochs: N for every model, or per model "
                             "'narm=3,hln=1,*=2' (default: each model's paper setting)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed (default 0)")
    parser.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True,
                        help="once validation has picked a model's epochs, train it again "
                             "for that many on all training sessions (default; count models "
                             "always fit on all of them); --no-refit keeps the validation "
                             "sessions out, as the papers' protocols do")
    parser.add_argument("--paper-recipe", action="store_true",
                        help="train every model with its paper's recipe where its defaults "
                             "deviate (each model file lists the deviations)")
    parser.add_argument("--max-valid-sessions", type=int, default=None, metavar="N",
                        help="validation sessions scored per epoch (default 10000)")
    parser.add_argument("--max-sessions", type=int, default=None, metavar="N",
                        help="score a fixed random subset of this many test sessions "
                             "(default: all)")
    parser.add_argument("--tie-policy", choices=TIE_POLICIES, default="pessimistic",
                        metavar="POLICY",
                        help=f"where a target ranks among items with its score: "
                             f"{', '.join(TIE_POLICIES)} (default pessimistic: below them)")
    parser.add_argument("--metric", default="mrr@20", metavar="METRIC",
                        help="metric that ranks the models and is tested for significance: "
                             "recall@K or mrr@K with K <= 20 (default mrr@20)")
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default 1, the fastest for these small "
                             "models; a warning says when other work keeps the cores busy)")
    parser.add_argument("--latency-clicks", type=int, default=200, metavar="N",
                        help="clicks timed per model, 0 to skip (default 200)")
    parser.add_argument("--bootstrap", type=int, default=2000, metavar="N",
                        help="bootstrap resamples of the significance test (default 2000)")
    parser.add_argument("--force", action="store_true", help="retrain cached runs too")
    parser.add_argument("--peers", choices=("none", "recbole"), default="none",
                        metavar="WHICH",
                        help="recbole: also train RecBole's models on the same split "
                             "(default none)")
    parser.add_argument("--peer-epochs", default="10", metavar="CAP",
                        help="RecBole epochs: N, or per model 'NARM=30,GRU4Rec=100' "
                             "(default 10)")
    parser.add_argument("--peer-venv", default="var/peers/recbole", metavar="DIR",
                        help="RecBole's own virtual environment, made when missing "
                             "(default var/peers/recbole)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from models import registry
    from training.benchmark.runner import benchmark
    from training.fit.threads import apply_threads

    plan = apply_threads(args.threads, warn=not args.quiet)
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
                        peer_venv=Path(args.peer_venv), peer_threads=plan.threads,
                        max_valid_sessions=args.max_valid_sessions, refit=args.refit,
                        paper_recipe=args.paper_recipe)
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
