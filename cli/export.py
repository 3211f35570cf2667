"""``nextclick export``: export a trained run to a serving bundle, OUT/<model>/<version>/:
the ONNX graphs, the item list, the most popular items, the item catalogue when the
dataset has one, and a manifest. Nothing is written unless ONNX Runtime reproduces PyTorch
within 1e-4."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cli.helptext import HelpFormatter, describe


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser(
        "export", help=help_text, description=describe(__doc__),
        formatter_class=HelpFormatter,
        epilog="example:\n  nextclick export --run runs/hrnn-init --out artifacts --version v1")
    parser.add_argument("--run", required=True, type=Path, metavar="DIR",
                        help="run folder written by `nextclick train`")
    parser.add_argument("--out", type=Path, default=Path("artifacts"), metavar="DIR",
                        help="artifacts folder that `nextclick serve` reads (default "
                             "artifacts)")
    parser.add_argument("--version", default=None, metavar="NAME",
                        help="bundle version (default: the UTC time, YYYYMMDDTHHMMSSZ); the "
                             "service serves the latest")
    parser.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                        metavar="NAME",
                        help="torch.onnx exporter: torchscript or dynamo (default "
                             "torchscript; dynamo mis-exports GRUs in torch 2.13)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bundle import MANIFEST_FILE
    from training.export.writer import export_run

    bundle = export_run(args.run, args.out, version=args.version, exporter=args.exporter)
    parity = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))["parity"]
    print(bundle)
    print(f"parity: max abs diff {parity['max_abs_diff']:.3g} (tolerance "
          f"{parity['tolerance']:g}) over {parity['clicks']} clicks at batch sizes "
          f"{parity['batch_sizes']}; per graph: "
          + ", ".join(f"{g}={d:.3g}" for g, d in parity["per_graph"].items()))
    return 0
