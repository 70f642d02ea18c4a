"""Results conventions: ``results/<name>/summary.json`` and ``report.md``.

``summary.json`` maps each metric name to ``{"mean", "std", "n", "values"}`` (std: sample standard
deviation, ddof = 1; 0 for a single value). Run records sit beside it; ``report.md`` is for people.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .utils import atomic_write_json, atomic_write_text, git_commit, machine_facts

__all__ = ["summarize", "write_summary", "load_summary", "markdown_table", "fmt", "write_report", "provenance"]


def summarize(values: dict[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
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


def write_summary(results_dir: str | os.PathLike, values: dict[str, Sequence[float]]) -> dict[str, Any]:
    summary = summarize(values)
    atomic_write_json(Path(results_dir) / "summary.json", summary)
    return summary


def load_summary(results_dir: str | os.PathLike) -> dict[str, Any]:
    import json

    return json.loads((Path(results_dir) / "summary.json").read_text())


def fmt(entry: dict[str, Any] | None, digits: int = 2, scale: float = 1.0, show_n: str = "always") -> str:
    """``mean ± std (n=N)`` for a summary entry — the one number formatter of the reports. ``show_n``:
    ``"always"``, or ``"multi"`` (only when n > 1). A missing entry or a NaN mean is ``–``."""
    if not entry:
        return "–"
    m, s, n = entry["mean"] * scale, entry["std"] * scale, entry["n"]
    if isinstance(m, float) and math.isnan(m):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}" + (f" (n={n})" if show_n == "always" or n > 1 else "")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def provenance(command: str, wall_time_s: float | None = None, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    facts = machine_facts()
    return {"command": command, "git_commit": git_commit(), "seeds": list(seeds) if seeds is not None else None,
            "wall_time_s": wall_time_s, "machine": facts, "python": platform.python_version()}


def write_report(results_dir: str | os.PathLike, text: str) -> Path:
    p = Path(results_dir) / "report.md"
    atomic_write_text(p, text)
    return p
