"""Helpers shared by experiments: cached, resumable runs and summary bookkeeping."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine.jobs import finished_record, run_cached
from ..utils import atomic_write_bytes, atomic_write_json

__all__ = ["run_cached", "finished_record", "cached_eval", "Stage", "timed", "preserve_results"]


def cached_eval(out_dir: str | Path, key: str, compute: Callable[[], dict[str, Any]],
                version: int = 1) -> dict[str, Any]:
    """``compute()`` (a JSON-able evaluation of the run in ``out_dir``), cached in ``<out_dir>/eval.json``.

    The cache entry is tied to the sha256 of the run's ``run.json``, so a retrained run is re-evaluated,
    and to ``version``, which a caller bumps when the evaluation itself changes; a committed cache lets a
    fresh clone re-render reports without the (uncommitted) weights.
    """
    out_dir = Path(out_dir)
    digest = hashlib.sha256((out_dir / "run.json").read_bytes()).hexdigest()
    path = out_dir / "eval.json"
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, json.JSONDecodeError):
        cache = {}
    entry = cache.get(key)
    if (isinstance(entry, dict) and entry.get("run_sha256") == digest and entry.get("version", 1) == version
            and "value" in entry):
        return entry["value"]
    value = compute()  # may retrain the run (to get its weights back), so hash run.json afresh
    digest = hashlib.sha256((out_dir / "run.json").read_bytes()).hexdigest()
    cache[key] = {"run_sha256": digest, "version": version, "value": value}
    atomic_write_json(path, cache)
    return value


class Stage:
    """Times a named stage and records its wall time into ``times``."""

    def __init__(self, name: str, times: dict[str, float], log: Callable[[str], None] = print):
        self.name, self.times, self.log = name, times, log

    def __enter__(self) -> Stage:
        self.t0 = time.perf_counter()
        self.log(f"== stage {self.name}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.times[self.name] = self.times.get(self.name, 0.0) + time.perf_counter() - self.t0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


class preserve_results:  # noqa: N801 (a context manager used like a function)
    """``with preserve_results(out): ...`` — if the body fails (an exception or Ctrl-C), the top-level files
    of ``out`` (summary, report, provenance, figures) are put back as they were and files it added there
    are removed, so a failing reproduction never leaves a half-rewritten results folder. A copy of those
    files sits in ``out/.previous/`` while the body runs, so a process killed outright (SIGKILL) is undone
    the same way by the next ``preserve_results`` on ``out``. Run folders below ``out`` are left alone: they
    are per-run, written atomically, and resumable."""

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
