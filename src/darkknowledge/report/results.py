"""A results folder, written as a whole: ``results/<name>/`` holds ``summary.json`` (metric → summary entry,
:func:`~.numbers.summarize`), ``details.json``, ``provenance.json``, figures and ``report.md`` at the top,
and the run folders below (``runs/``: per run, written atomically and resumable by the engine).

:class:`Results` builds the top-level files in ``<out>/.staging/`` and then swaps them in: a run that fails
(an exception, Ctrl-C) before the swap leaves the folder as it was. The swap moves one file at a time
after the staging folder is marked ``COMPLETE``; a process killed during it is finished by the next
:class:`Results` on the folder (roll forward), so the folder never stays half old, half new. A top-level
file the new render does not produce (e.g. a figure that needs weights a fresh clone lacks) is kept.

**Provenance names the invocation that last changed the folder.** :meth:`Results.commit` renders the
report twice when needed: first with the folder's previous ``provenance.json``; if that reproduces every
top-level file byte for byte (all runs were cached and nothing the report shows moved), nothing is
written — a re-render on another commit leaves ``git status results/`` clean. Otherwise this invocation's
provenance is written and the report rendered with it.

    res = Results(out)
    res.write_json("summary.json", summarize(values))
    save_figure(fig, res.path("curve.png"))          # figures go to the staging folder
    res.commit(provenance("darkknowledge reproduce x", wall, seeds), lambda prov: render(TEMPLATE, ...))
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from .numbers import summarize

__all__ = ["Results", "load_summary", "preserve_results", "write_summary", "write_report"]

STAGING = ".staging"


class Results:
    """The top-level files of ``out``, staged in ``out/.staging`` and swapped in by :meth:`commit`."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.staging = self.out / STAGING
        if (self.staging / "COMPLETE").exists():  # a swap killed half-way: finish it
            self._swap()
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)

    def path(self, name: str) -> Path:
        """Where to write the top-level file ``name`` (in the staging folder)."""
        if "/" in name or name in ("", ".", "..", STAGING):
            raise ValueError(f"a results file is a plain top-level name, got {name!r}")
        return self.staging / name

    def exists(self, name: str) -> bool:
        """Whether ``name`` will be in the folder after the swap (staged now, or there already)."""
        return (self.staging / name).is_file() or (self.out / name).is_file()

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path(name), obj)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path(name), text)

    def previous_provenance(self) -> dict[str, Any] | None:
        try:
            prov = json.loads((self.out / "provenance.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return prov if isinstance(prov, dict) else None

    def _unchanged(self) -> bool:
        return all((self.out / p.name).is_file() and (self.out / p.name).read_bytes() == p.read_bytes()
                   for p in self.staging.iterdir())

    def commit(self, provenance: dict[str, Any], report: Callable[[dict[str, Any]], str]) -> bool:
        """Render ``report(provenance) -> markdown`` into ``report.md`` beside ``provenance.json`` and swap the
        staged files in; returns whether the folder changed (see the module docstring)."""
        old = self.previous_provenance()
        if old is not None:
            try:
                text = report(old)
            except (KeyError, TypeError, ValueError, AttributeError):  # an older provenance than the report needs
                text = None
            if text is not None:
                self.write_json("provenance.json", old)
                self.write_text("report.md", text)
                if self._unchanged():
                    self.discard()
                    return False
        self.write_json("provenance.json", provenance)
        self.write_text("report.md", report(provenance))
        (self.staging / "COMPLETE").write_bytes(b"")
        self._swap()
        return True

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _swap(self) -> None:
        for p in sorted(self.staging.iterdir()):
            if p.name != "COMPLETE":
                os.replace(p, self.out / p.name)
        shutil.rmtree(self.staging, ignore_errors=True)


def load_summary(results_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(results_dir) / "summary.json").read_text())


# --------------------------------------------------------------------------- legacy (to be removed)
# The experiments not yet on engine.stages write their top-level files directly; these helpers and
# ``preserve_results`` (backup/restore around the whole run) go once they are migrated onto Results.


def write_summary(results_dir: str | os.PathLike, values: dict[str, Sequence[float]]) -> dict[str, Any]:
    """Legacy (to be removed): ``summary.json`` written in place; new code uses :class:`Results`."""
    summary = summarize(values)
    atomic_write_json(Path(results_dir) / "summary.json", summary)
    return summary


def write_report(results_dir: str | os.PathLike, text: str) -> Path:
    """Legacy (to be removed): ``report.md`` written in place; new code uses :meth:`Results.commit`."""
    p = Path(results_dir) / "report.md"
    atomic_write_text(p, text)
    return p


class preserve_results:  # noqa: N801 (a context manager used like a function)
    """Legacy (to be removed once every experiment writes through :class:`Results`).

    ``with preserve_results(out): ...`` — if the body fails (an exception or Ctrl-C), the top-level files
    of ``out`` are put back as they were and files it added there are removed. A copy of those files sits in
    ``out/.previous/`` while the body runs, so a process killed outright (SIGKILL) is undone the same way by
    the next ``preserve_results`` on ``out``. Run folders below ``out`` are left alone."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.backup = self.out / ".previous"

    def __enter__(self) -> preserve_results:
        if (self.backup / "COMPLETE").exists():  # a run killed before it could finish or undo its writes
            self._restore({p.name: p.read_bytes() for p in self.backup.iterdir() if p.name != "COMPLETE"})
        shutil.rmtree(self.backup, ignore_errors=True)
        self.existed = self.out.is_dir()
        self.saved = {p.name: p.read_bytes() for p in self.out.iterdir() if p.is_file()} if self.existed else {}
        if self.existed:
            self.backup.mkdir()
            for name, data in self.saved.items():
                (self.backup / name).write_bytes(data)
            (self.backup / "COMPLETE").write_bytes(b"")  # the copy is whole: only now may it be restored
        return self

    def _restore(self, saved: dict[str, bytes]) -> None:
        for p in self.out.iterdir():
            if p.is_file() and p.name not in saved:
                p.unlink()
        for name, data in saved.items():
            if not (self.out / name).is_file() or (self.out / name).read_bytes() != data:
                atomic_write_bytes(self.out / name, data)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self.out.is_dir():
            self._restore(self.saved)
            if not self.existed and not any(self.out.iterdir()):
                self.out.rmdir()
        shutil.rmtree(self.backup, ignore_errors=True)
