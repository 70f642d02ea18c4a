"""LEGACY (to be removed once hinton-mnist, hinton-specialists and the subclass experiments are on
:mod:`darkknowledge.engine.stages`): re-exports of the helpers they import from here.

New homes: :func:`~darkknowledge.engine.jobs.run_cached`, :func:`~darkknowledge.engine.jobs.finished_record`,
:func:`~darkknowledge.engine.jobs.cached_eval` (engine/jobs.py), :class:`~darkknowledge.report.preserve_results`
(report/results.py); ``Stage``/``timed`` are replaced by the stage runner (engine/stages.py times stages).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..engine.jobs import cached_eval, finished_record, run_cached
from ..report import preserve_results

__all__ = ["run_cached", "finished_record", "cached_eval", "Stage", "timed", "preserve_results"]


class Stage:
    """LEGACY: times a named stage and records its wall time into ``times``."""

    def __init__(self, name: str, times: dict[str, float], log: Callable[[str], None] = print):
        self.name, self.times, self.log = name, times, log

    def __enter__(self) -> Stage:
        self.t0 = time.perf_counter()
        self.log(f"== stage {self.name}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.times[self.name] = self.times.get(self.name, 0.0) + time.perf_counter() - self.t0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """LEGACY: ``(fn(), seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
