"""``nextclick export``: export a trained run to a serving bundle,
OUT/<model>/<version>/ (start/advance/score/end.onnx, items.txt, popular.json,
manifest.json). Nothing is written unless ONNX Runtime reproduces PyTorch within 1e-4."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any, help_text: str) -> None:
    parser = subparsers.add_parser(
        "export", help=help_text, description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  nextclick export --run runs/hrnn-init --out artifacts --version v1")
    parser.add_argument("--run", required=True, type=Path, help="run folder written by train")
    parser.add_argument("--out", type=Path, default=Path("artifacts"),
                        help="artifacts folder (default artifacts/)")
    parser.add_argument("--version", default=None,
                        help="bundle version (default: the UTC time, YYYYMMDDTHHMMSSZ)")
    parser.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript",
                        help="torch.onnx exporter (default torchscript; dynamo mis-exports "
                             "nn.GRU in torch 2.13)")
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
