"""Reports: numbers, tables, figures, templates, provenance, and results folders written as a whole.

An experiment emits ``summary`` (metric → values; :func:`summarize` makes the entries) and ``details``
(anything JSON-able) and a short template; this package turns them into ``results/<name>/``:

* :mod:`.numbers`    — :func:`fmt` (``mean ± std (n=N)``), :func:`pct`, :func:`count`, :func:`summarize`;
* :mod:`.tables`     — :func:`markdown_table`; :class:`Vs` and :func:`paper_table`: "paper vs ours" rows as data;
* :mod:`.template`   — :func:`render` (``str.format`` printing summary entries: ``{S.key:2%}``), :class:`SummaryView`;
* :mod:`.figures`    — :func:`pyplot` (Agg, one style) and :func:`save_figure` (atomic);
* :mod:`.provenance` — :func:`provenance` (command, commit, seeds, wall time, machine);
* :mod:`.results`    — :class:`Results`: top-level files staged, then swapped in; provenance carried over
  when a re-render changes nothing;
* :mod:`.sections`   — report prose as package-data templates cut into named sections; :mod:`.scalars`,
  :mod:`.claims` — small number and sentence formatters shared by the reports.

This package imports nothing of the engine or the experiments (the stage runner, :mod:`darkknowledge.engine.
stages`, calls it).
"""

from .figures import pyplot, save_figure
from .numbers import count, fmt, is_entry, pct, summarize
from .provenance import provenance
from .results import Results, load_summary
from .tables import Vs, markdown_table, paper_table
from .template import SummaryView, render

__all__ = ["summarize", "fmt", "pct", "count", "is_entry", "markdown_table", "Vs", "paper_table", "render",
           "SummaryView", "pyplot", "save_figure", "provenance", "Results", "load_summary"]
