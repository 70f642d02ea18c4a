"""Numbers in reports: a summary entry per metric and its one formatter.

A **summary entry** is ``{"mean", "std", "n", "values"}`` (std: sample standard deviation, ddof = 1; 0 for a
single value). :func:`fmt` prints it as ``mean ± std (n=N)``; :func:`pct` as a percentage of a fraction;
:func:`count` as a whole number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["summarize", "fmt", "pct", "count", "is_entry"]


def summarize(values: dict[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """``{key: [v, ...]}`` → ``{key: {"mean", "std", "n", "values"}}`` (keys with no values are left out)."""
    out = {}
    for k, vs in values.items():
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
