"""Markdown tables, and "paper vs ours" tables declared as data.

A paper-vs-ours table is a list of rows ``(label, Vs(...), Vs(...), ...)``; each :class:`Vs` is two cells,
the paper's number and ours (a summary entry looked up by key and printed by :func:`~.numbers.fmt`)::

    paper_table(["system", "paper acc", "ours acc (%)"],
                [("baseline", Vs("baseline_acc", paper=0.589, scale=100, unit="%"))], summary)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .numbers import fmt

__all__ = ["markdown_table", "Vs", "paper_table"]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Vs:
    """Two cells: the paper's number and ours. ``key``: the summary key of ours (``None``: ``–``);
    ``paper``: a number (printed with ``paper_digits`` after ``scale``, then ``unit``), a string (as is) or
    ``None`` (``–``); ours is ``fmt(summary[key], digits, scale)``."""

    key: str | None
    paper: float | str | None = None
    scale: float = 1.0
    digits: int = 2
    paper_digits: int = 1
    unit: str = ""

    def paper_cell(self) -> str:
        if self.paper is None:
            return "–"
        if isinstance(self.paper, str):
            return self.paper
        return f"{self.paper * self.scale:.{self.paper_digits}f}{self.unit}"

    def ours_cell(self, summary: Mapping[str, Any]) -> str:
        return fmt(summary.get(self.key) if self.key else None, self.digits, self.scale)


def paper_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], summary: Mapping[str, Any]) -> str:
    """A markdown table of rows ``(label, Vs | str, ...)``: each :class:`Vs` fills two columns (paper, ours),
    any other cell one (printed as is)."""
    out = []
    for label, *cells in rows:
        line = [label]
        for c in cells:
            line += [c.paper_cell(), c.ours_cell(summary)] if isinstance(c, Vs) else [c]
        out.append(line)
    return markdown_table(headers, out)
