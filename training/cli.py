"""``nextclick`` command line. Subcommands live in their own modules and are imported
lazily, so ``nextclick serve`` never imports torch."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module defining ``register(subparsers)``; each registered parser sets
# ``func`` (called with the parsed args, returns an exit code or None).
COMMANDS: dict[str, str] = {
    "synth": "training.synth",
    "prepare": "training.prepare",
    "train": "training.train",
    "evaluate": "training.evaluate",
    "export": "training.export",
    "serve": "service.cli",
    "bench": "training.bench",
    "benchmark": "training.benchmark",
    "readme-results": "training.readme_results",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nextclick", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module in COMMANDS.items():
        if wanted in COMMANDS and name != wanted:
            # Only import the module that runs; list the rest by name for --help.
            sub.add_parser(name, help=f"see: nextclick {name} --help")
            continue
        importlib.import_module(module).register(sub)
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
