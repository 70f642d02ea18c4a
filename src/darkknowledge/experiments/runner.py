"""Helpers shared by experiments: cached, resumable runs and summary bookkeeping."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import TrainConfig, same_config, validate
from ..data import Splits
from ..engine import train
from ..utils import atomic_write_bytes, atomic_write_json

__all__ = ["run_cached", "finished_record", "cached_eval", "Stage", "timed", "preserve_results"]


def finished_record(cfg: TrainConfig | dict[str, Any]) -> dict[str, Any] | None:
    """The finished run record of ``cfg`` in ``<out_dir>/run.json``, or ``None`` (absent, unreadable, other config)."""
    cfg = cfg if isinstance(cfg, TrainConfig) else validate(cfg)
    try:
        rec = json.loads((Path(cfg.out_dir) / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and same_config(rec.get("config"), cfg) else None


def run_cached(cfg: TrainConfig | dict[str, Any], splits: Splits | None = None, progress: bool = True,
               need_weights: bool = False, before_train: Callable[[], Any] | None = None,
               **kw: Any) -> dict[str, Any]:
    """Train ``cfg`` unless ``<out_dir>/run.json`` already holds a finished run of the same config.

    A run killed half-way resumes from its last checkpoint (``resume=True``). ``need_weights``: the
    caller will load ``best.safetensors``, so a finished record without it (a fresh clone holds the
    records, never the weights) is retrained from scratch in ``<out_dir>/.rebuild`` (resumable there),
    whose weights are moved in only when it has finished. Training is deterministic: a rebuild that
    reproduces the record keeps the original record; one that does not is reported and replaces it.
    ``before_train`` runs only when training is needed (e.g. to materialise a teacher's weights), never
    for a cached run.
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else validate(cfg)
    out_dir = Path(cfg.out_dir)
    rec = finished_record(cfg)
    if rec is not None and (not need_weights or (out_dir / "best.safetensors").exists()):
        return rec
    if before_train is not None:
        before_train()
    if rec is None:
        return train(cfg, resume=True, splits=splits, progress=progress, **kw)
    # A finished record without its weights: rebuild them in <out_dir>/.rebuild (resumable there if killed),
    # and move them in only once the rebuild has finished, so a half-trained best.safetensors never sits
    # beside a finished record.
    print(f"{out_dir}: finished record but no best.safetensors; retraining it from scratch", file=sys.stderr,
          flush=True)
    tmp = out_dir / ".rebuild"
    new = train(cfg.model_copy(update={"out_dir": str(tmp)}), resume=True, splits=splits, progress=progress, **kw)
    same = new.get("final") == rec.get("final") and new.get("epochs") == _without_timing(rec.get("epochs"), new)
    for f in ("best.safetensors", "last.safetensors"):
        if (tmp / f).exists():
            os.replace(tmp / f, out_dir / f)
    if not same:
        old_e = (rec.get("final") or {}).get("test", {}).get("errors")
        new_e = (new.get("final") or {}).get("test", {}).get("errors")
        print(f"{out_dir}: WARNING the retrained run differs from its old record (test errors {old_e} then, "
              f"{new_e} now); keeping the new record", file=sys.stderr, flush=True)
        new["config"]["out_dir"] = str(out_dir)
        atomic_write_json(out_dir / "run.json", new)
    shutil.rmtree(tmp, ignore_errors=True)
    # the same run, reproduced: the original record (its timings, commit and machine) stays, so that
    # evaluations cached against it stay valid
    return rec if same else new


def _without_timing(old_epochs: Any, new: dict[str, Any]) -> Any:
    """``old_epochs`` with each epoch's timing and logged-loss fields replaced by the new run's."""
    new_epochs = new.get("epochs")
    if not isinstance(old_epochs, list) or not isinstance(new_epochs, list) or len(old_epochs) != len(new_epochs):
        return old_epochs
    # timings always differ; train_loss is how the loss is *logged* (e.g. kd's soft term as T²·KL since 0.2,
    # T²·CE before: the same gradient), so the comparison is of what the model did: validation per epoch, final
    timing = ("samples_per_s", "wall_time_s", "cpu_time_s", "seconds", "train_loss")
    return [{**o, **{k: n[k] for k in timing if k in n}} if isinstance(o, dict) else o
            for o, n in zip(old_epochs, new_epochs)]


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
