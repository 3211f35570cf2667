"""How ``--help`` looks: every subcommand's parser uses ``HelpFormatter`` and
``describe(__doc__)``, so help reads as plain text for users (no reStructuredText marks)
and never breaks a word such as ``redis-server`` across lines."""

from __future__ import annotations

import argparse
import re
import textwrap


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; option help wrapped at spaces only."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)

    def _split_lines(self, text: str, width: int) -> list[str]:
        text = " ".join(text.split())
        return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def describe(doc: str | None, width: int = 88) -> str:
    """A module docstring as a command description: without its leading
    "``nextclick NAME``: ", with reStructuredText's double backticks made single, and
    each paragraph re-wrapped."""
    text = (doc or "").strip()
    text = re.sub(r"^``nextclick(?: [a-z-]+)?``:\s*", "", text)
    text = text.replace("``", "`")
    text = text[:1].upper() + text[1:]
    paragraphs = [" ".join(part.split()) for part in re.split(r"\n\s*\n", text)]
    return "\n\n".join(textwrap.fill(part, width, break_on_hyphens=False,
                                     break_long_words=False) for part in paragraphs if part)
