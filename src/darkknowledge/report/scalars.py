"""Plain numbers in reports (not summary entries, which :func:`~.numbers.fmt` prints): a value with fixed
decimals or a dash, and a duration."""

from __future__ import annotations

from typing import Any

__all__ = ["num", "duration"]


def num(v: Any, digits: int = 0, suffix: str = "") -> str:
    """``v`` with ``digits`` decimals and ``suffix`` (``num(3.14159, 2, "%")`` → ``3.14%``); ``None`` → ``–``;
    a string passes through unchanged."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}f}{suffix}"


def duration(seconds: float) -> str:
    """``"12.5 min"`` from a minute on, ``"42 s"`` below."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
