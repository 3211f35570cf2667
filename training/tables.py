"""Markdown tables and number formats shared by every report the trainer writes (the run
report, the benchmark report, the results block of docs/results.md), so the same number
reads the same everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: Any) -> str:
    """A fraction as a percentage with two decimals; "-" when missing."""
    return f"{100 * value:.2f}" if isinstance(value, int | float) else "-"


def number(value: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals; "-" when missing."""
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def p_text(p: float) -> str:
    """A p-value as "= 0.0123" (three significant digits), or "< 1e-300"."""
    return "< 1e-300" if p < 1e-300 else f"= {p:.3g}"
