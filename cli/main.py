"""``nextclick``: session-based recommendations from click logs to a live service."""

from __future__ import annotations

import argparse
import importlib
import sys

from cli.helptext import HelpFormatter, describe

# subcommand -> (module defining ``register(subparsers)``, one-line help). Only the module
# of the command being run is imported, so ``nextclick serve`` never loads torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("cli.synth", "write a synthetic click log (and item catalogue) for demos"),
    "prepare": ("cli.prepare", "turn a raw click log into a prepared dataset folder"),
    "train": ("cli.train", "train a model on a prepared dataset"),
    "evaluate": ("cli.evaluate", "full-ranking evaluation of a trained run"),
    "export": ("cli.export", "export a trained run as an ONNX serving bundle"),
    "serve": ("cli.serve", "run the recommendation API, its demo page and its docs"),
    "events": ("cli.events", "export the service's event log as training data"),
    "replay": ("cli.replay", "replay a click log against a running service, online metrics"),
    "retrain": ("cli.retrain", "retrain a model on served clicks; install it if it is better"),
    "bench": ("cli.bench", "load-test the serving path (engine, HTTP, Redis)"),
    "benchmark": ("cli.benchmark", "train and compare models on one dataset, with a report"),
    "readme-results": ("cli.readme_results",
                       "regenerate the results block of docs/results.md from reports/"),
}

EPILOG = """examples:
  nextclick synth --out data/synth.csv --seed 7
  nextclick prepare --format csv --input data/synth.csv --protocol last-session --out data/synth
  nextclick train --model hrnn-init --data data/synth --out runs/hrnn-init
  nextclick evaluate --run runs/hrnn-init
  nextclick export --run runs/hrnn-init --out artifacts
  nextclick serve --artifacts artifacts     # then open http://127.0.0.1:8000/

Run `nextclick COMMAND --help` for the options of a command."""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nextclick", description=describe(__doc__),
                                     epilog=EPILOG, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        if wanted in COMMANDS and name != wanted:
            sub.add_parser(name, help=help_text)
            continue
        importlib.import_module(module).register(sub, help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as exc:
        print(f"nextclick {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
