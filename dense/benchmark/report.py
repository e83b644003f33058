"""Printing the benchmark tables (rich)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table

# A fixed width when piped, so that a saved log keeps whole rows.
console = Console(width=None if sys.stdout.isatty() else 150)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A table of right-justified cells."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def delta(ours: float, paper: float | None) -> str:
    """Relative gap to a paper's figure, blank where the paper gives none."""
    return "" if paper is None else f"{(ours / paper - 1) * 100:+.1f}%"


def versus(ours: float, paper: float | None, digits: int) -> tuple[str, str, str]:
    """Cells of a figure beside a paper's: ours to `digits` decimals, the paper's as printed, the gap."""
    return f"{ours:.{digits}f}", "" if paper is None else f"{paper}", delta(ours, paper)
