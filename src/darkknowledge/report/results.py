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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..utils import atomic_write_json, atomic_write_text

__all__ = ["Results", "ResultsFolderError", "claim", "load_summary"]

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


class ResultsFolderError(ValueError):
    """A command would write into a results folder another command made."""


def claim(out: str | os.PathLike, command: str) -> None:
    """Refuse (before anything is written) a folder whose ``provenance.json`` names a command other than
    ``command`` (with any options) — e.g. ``darkknowledge demo --out results/demo``, where ``reproduce demo``
    keeps the committed reference runs, or ``reproduce demo-digits --out results/demo``."""
    try:
        prov = json.loads((Path(out) / "provenance.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    made_by = prov.get("command") if isinstance(prov, dict) else None
    if isinstance(made_by, str) and made_by != command and not made_by.startswith(command + " "):
        raise ResultsFolderError(f"{out} holds the results of `{made_by}`; `{command}` does not write over them — "
                                 "choose another folder")


def load_summary(results_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(results_dir) / "summary.json").read_text())
