"""A report is a short template over a dict: :func:`render` is ``str.format`` whose fields may be summary
entries, printed by a format spec of their own.

``{S.key}`` is the summary entry of ``key`` (``S = SummaryView(summary)``; a missing key is ``None``) and its
spec is ``[digits][%]``: ``{S.baseline_wer:2%}`` → ``fmt(entry, 2, scale=100)`` = ``10.90 ± 0.52 (n=10)``,
``{S.gain_kept:2}`` → ``fmt(entry, 2)``; ``None`` prints ``–``. Every other field formats as in
``str.format``. A report is then ``render(TEMPLATE, S=SummaryView(summary), **fields)`` with the fields an
experiment computes from ``details`` — a list of such templates joined by blank lines for one with sections.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from .numbers import fmt, is_entry

__all__ = ["render", "SummaryView"]

_ENTRY_SPEC = re.compile(r"(\d*)(%?)")


class SummaryView:
    """Attribute access to a summary: ``S.key`` is ``summary.get(key)``."""

    def __init__(self, summary: Mapping[str, Any]):
        self._summary = summary

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self._summary.get(key)


class _Formatter(string.Formatter):
    def format_field(self, value: Any, spec: str) -> str:
        if value is None or is_entry(value):
            m = _ENTRY_SPEC.fullmatch(spec)
            if m is None:
                raise ValueError(f"a summary entry takes the format spec [digits][%], got {spec!r}")
            return fmt(value, int(m[1] or 2), 100.0 if m[2] else 1.0)
        return super().format_field(value, spec)


def render(template: str, **fields: Any) -> str:
    """``template.format(**fields)``, with summary entries (and ``None``) printed by :func:`~.numbers.fmt`."""
    return _Formatter().vformat(template, (), fields)
