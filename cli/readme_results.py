"""``nextclick readme-results``: rewrite the generated results block of docs/results.md
(between ``<!-- benchmark-results: reports/... -->`` and ``<!-- /benchmark-results -->``)
from the listed reports' results.json; ``--check`` only compares."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser(
        "readme-results", help=help_text, description=describe(__doc__),
        formatter_class=HelpFormatter,
        epilog="example:\n  nextclick readme-results --check   # exit 1 when the block is stale")
    parser.add_argument("--file", "--readme", dest="file", default="docs/results.md",
                        metavar="FILE",
                        help="the page holding the block (default docs/results.md)")
    parser.add_argument("--check", action="store_true",
                        help="only compare; exit 1 when the block is stale")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.benchmark.results_block import update

    path = Path(args.file)
    current, fresh = update(path)
    if current == fresh:
        print(f"{path}: results block is up to date")
        return 0
    if args.check:
        print(f"{path}: results block differs from the reports; run "
              "`nextclick readme-results`", file=sys.stderr)
        return 1
    path.write_text(fresh, encoding="utf-8")
    print(f"{path}: results block regenerated")
    return 0
