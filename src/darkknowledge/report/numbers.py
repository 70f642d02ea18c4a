"""Numbers in reports: a summary entry per metric and its one formatter.

A **summary entry** is ``{"mean", "std", "n", "values"}`` (std: sample standard deviation, ddof = 1; 0 for a
single value), or a **table**: a list of rows (dicts of numbers and strings) kept as it is, for a summary key whose
value is structured (e.g. ``hinton-specialists``' ``capacity_sweep``).
:func:`fmt` prints it as ``mean ± std (n=N)``; :func:`pct` as a percentage of a fraction;
:func:`count` as a whole number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["summarize", "fmt", "pct", "count", "is_entry"]


def summarize(values: dict[str, Sequence[Any]]) -> dict[str, Any]:
    """``{key: [v, ...]}`` → ``{key: {"mean", "std", "n", "values"}}`` (keys with no values are left out); a list
    of dicts is a table and is kept as it is (a list mixing numbers and dicts is refused); an entry made by the
    caller (a dict with ``mean``, ``std`` and ``n``: e.g. a ratio of means with a bootstrap std) is kept too."""
    out: dict[str, Any] = {}
    for k, vs in values.items():
        if is_entry(vs):
            out[k] = dict(vs)
            continue
        rows = [isinstance(v, dict) for v in vs]
        if any(rows):
            if not all(rows):
                raise TypeError(f"summary key {k!r}: a list of numbers or a list of rows (dicts), not both")
            out[k] = [dict(v) for v in vs]
            continue
        vs = [float(v) for v in vs]
        n = len(vs)
        if n == 0:
            continue
        mean = sum(vs) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in vs) / (n - 1)) if n > 1 else 0.0
        out[k] = {"mean": mean, "std": std, "n": n, "values": vs}
    return out


def is_entry(obj: Any) -> bool:
    return isinstance(obj, dict) and "mean" in obj and "std" in obj and "n" in obj


def fmt(entry: dict[str, Any] | None, digits: int = 2, scale: float = 1.0, show_n: str = "always") -> str:
    """``mean ± std (n=N)`` for a summary entry — the one number formatter of the reports. ``show_n``:
    ``"always"``, or ``"multi"`` (only when n > 1). A missing entry or a NaN mean is ``–``."""
    if not entry:
        return "–"
    m, s, n = entry["mean"] * scale, entry["std"] * scale, entry["n"]
    if isinstance(m, float) and math.isnan(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}" + (f" (n={n})" if show_n == "always" or n > 1 else "")


def pct(entry: dict[str, Any] | None, digits: int = 2) -> str:
    """A summary entry of fractions as percentages: ``fmt(entry, digits, scale=100)``."""
    return fmt(entry, digits, scale=100.0)


def count(x: float | None) -> str:
    """A whole number with thousands separators (``12,326``); ``–`` for None."""
    return "–" if x is None else f"{int(round(x)):,}"
