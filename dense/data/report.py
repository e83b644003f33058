"""Data problems: the error types of `dense.data` and the report of a data set scan.

The policy (README, "What happens with bad data"):

- a problem that makes metrics wrong is an error raised before work starts, naming every offending
  file or id (a capped list and the count): :class:`DataError`, built from a :class:`DataReport`;
- a problem in one training sample is skipped and counted while training (``dense.lit.callbacks``);
- everything else (colour modes, bit depth, boxes partly outside the image) is converted or
  clipped and counted in the report's notes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dense.errors import UserError

__all__ = ["DataError", "DataPathError", "DataReport", "ids_text"]

SHOWN = 10  # offending files / ids named in a message; the count is always given


class DataError(UserError, ValueError):
    """A data set that cannot be used as it is (the message names the files / ids and the problem)."""


class DataPathError(UserError, FileNotFoundError):
    """A data file or folder that is not there."""


def ids_text(ids: Sequence[Any], limit: int = SHOWN) -> str:
    """``[a, b, c ... (N in all)]``: the first `limit` items and the count."""
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:limit])
    more = f" ... ({len(ids)} in all)" if len(ids) > limit else ""
    return f"[{shown}{more}]"


@dataclass
class DataReport:
    """Problems found by a scan, by kind: ``errors`` stop the work, ``notes`` were converted,
    clipped or dropped and are only counted. Each kind keeps every offending item (file or id)."""

    source: str
    errors: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # sizes of what was scanned

    def error(self, problem: str, items: Iterable[Any] | Any) -> None:
        self._add(self.errors, problem, items)

    def note(self, problem: str, items: Iterable[Any] | Any) -> None:
        self._add(self.notes, problem, items)

    @staticmethod
    def _add(table: dict[str, list[str]], problem: str, items: Iterable[Any] | Any) -> None:
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            items = [items]
        items = [str(i) for i in items]
        if items:
            table.setdefault(problem, []).extend(items)

    def merge(self, other: DataReport) -> None:
        for problem, items in other.errors.items():
            self.error(f"{other.source}: {problem}", items)
        for problem, items in other.notes.items():
            self.note(f"{other.source}: {problem}", items)
        for key, n in other.counts.items():
            self.counts[f"{other.source}: {key}"] = n

    @property
    def ok(self) -> bool:
        return not self.errors

    def error_text(self) -> str:
        """Every kind of error on one line: ``N <problem> [first ... (N in all)]; ...``."""
        return "; ".join(f"{len(v)} {p} {ids_text(v)}" for p, v in self.errors.items())

    def raise_errors(self, error: type[Exception] = DataError) -> None:
        """Raise `error` naming every kind of problem, its count and its first items."""
        if self.errors:
            raise error(f"{self.source}: {self.error_text()}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "counts": dict(self.counts),
            "errors": {p: {"count": len(v), "first": v[:SHOWN]} for p, v in self.errors.items()},
            "notes": {p: {"count": len(v), "first": v[:SHOWN]} for p, v in self.notes.items()},
        }

    def format(self) -> str:
        """A readable report: what was scanned, then errors and notes with counts and first items."""
        lines = [f"{self.source}"]
        lines += [f"  {k}: {n}" for k, n in self.counts.items()]
        for title, table in (
            ("ERRORS (training / evaluation would not start)", self.errors),
            ("converted, clipped or dropped (counted)", self.notes),
        ):
            if table:
                lines.append(f"  {title}:")
                lines += [f"    {len(v):>6}  {p} {ids_text(v, 5)}" for p, v in table.items()]
        if not self.errors and not self.notes:
            lines.append("  no problems found")
        return "\n".join(lines)
