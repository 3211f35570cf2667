"""``nextclick evaluate``: replay the test sessions of a trained run through the model,
rank every target over the whole catalogue, and write RUN/metrics.json, RUN/ranks.parquet,
RUN/report.md and RUN/plots/*.png (per-user list metrics on user-ratio datasets)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe


def _ks(text: str) -> tuple[int, ...]:
    from training.evaluation.metrics import check_ks

    try:
        return check_ks(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--ks expects positive integers separated by commas, e.g. 5,10,20 (got {text!r})"
        ) from exc


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers: Any, help_text: str) -> None:
    from training.evaluation.metrics import TIE_POLICIES

    parser = subparsers.add_parser(
        "evaluate", help=help_text, description=describe(__doc__),
        formatter_class=HelpFormatter,
        epilog="example:\n  nextclick evaluate --run runs/hrnn-init --ks 5,10,20")
    parser.add_argument("--run", required=True, type=Path, metavar="DIR",
                        help="run folder written by `nextclick train`")
    parser.add_argument("--split", choices=("test", "valid"), default="test", metavar="SPLIT",
                        help="sessions to score: test or valid (default test)")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="dataset folder (default: the one the run was trained on)")
    parser.add_argument("--ks", type=_ks, default=(5, 10, 20), metavar="K,...",
                        help="list lengths to report (default 5,10,20)")
    parser.add_argument("--tie-policy", choices=TIE_POLICIES, default="pessimistic",
                        metavar="POLICY",
                        help=f"where a target ranks among items with its score: "
                             f"{', '.join(TIE_POLICIES)} (default pessimistic: below them)")
    parser.add_argument("--batch-size", type=_positive_int, default=256, metavar="N",
                        help="sessions scored side by side (default 256)")
    parser.add_argument("--max-sessions", type=_positive_int, default=None, metavar="N",
                        help="score a fixed random subset of this many sessions (default: "
                             "all)")
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="cpu, cuda or cuda:N (default auto: cuda when available)")
    parser.add_argument("--no-plots", action="store_true", help="skip report.md and plots")
    parser.add_argument("--ignore-history", action="store_true",
                        help="start every session without the user's history, to see what "
                             "history adds; writes RUN/metrics.no-history.json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.evaluation.evaluate import evaluate_run
    from training.evaluation.run_report import format_table
    from training.evaluation.user_lists import USER_LIST_PROTOCOLS

    metrics, written = evaluate_run(
        args.run, data=args.data, split=args.split, ks=args.ks, tie_policy=args.tie_policy,
        batch_size=args.batch_size, max_sessions=args.max_sessions, device=args.device,
        plots=not args.no_plots, ignore_history=args.ignore_history)
    if metrics["dataset"]["protocol"] in USER_LIST_PROTOCOLS:
        for k in args.ks:
            print("  ".join(f"{metric}@{k} {metrics[f'{metric}@{k}']:.4f}"
                            for metric in ("precision", "recall", "f1", "hr", "ndcg")))
        print(f"users {metrics['n_users']}; wrote {written[0]}")
        return 0
    print(format_table(metrics))
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
