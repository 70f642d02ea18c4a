"""Sets of runs on the job pool (:mod:`.jobs`): an ensemble of seeds, and a grid sweep.

* :func:`train_ensemble` — ``members`` runs of one config differing only in seed (Hinton et al. 2015 §4:
  ten acoustic models differing only in initialisation); writes ``ensemble.json``, a manifest that
  ``distill`` accepts as its teacher (``--teacher DIR/ensemble.json``), with each member's sha256.
* :func:`sweep` — the Cartesian product of ``key=v1,v2,...`` overrides; one run per cell; a table of
  validation and test results (``sweep.json``), the best cell chosen on validation; a distillation sweep
  also has labels-only baseline rows.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

from ..config import ConfigError, TrainConfig, apply_overrides, parse_overrides
from ..teachers import write_manifest
from ..utils import atomic_write_json
from .identity import file_sha256
from .jobs import Job, run_jobs

__all__ = ["train_ensemble", "sweep", "parse_grid", "split_values", "MAX_RUNS"]

#: the most runs one ensemble or sweep may make (a typo like ``--members 1000000000`` is refused up front)
MAX_RUNS = 1000


def train_ensemble(cfg: TrainConfig, members: int, out: str | Path, executor: str = "local", workers: int = 1,
                   progress: bool = True, overwrite: bool = False, **executor_args: Any) -> dict[str, Any]:
    """Train ``members`` (at most :data:`MAX_RUNS`) copies of ``cfg`` with seeds ``cfg.seed + i`` into
    ``out/member<i>`` and write ``out/ensemble.json``; returns the manifest. Finished members of the same inputs
    are reused (a member whose ``best.safetensors`` was altered since is refused), crashed ones resumed; members
    of other inputs are refused, or retrained with ``overwrite``."""
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= MAX_RUNS:
        raise ValueError(f"--members must be an integer in 1..{MAX_RUNS}, got {members!r}")
    out = _folder(out)
    jobs = [Job(cfg.model_copy(update={"seed": cfg.seed + i, "out_dir": str(out / f"member{i}")}).model_dump())
            for i in range(members)]
    records = run_jobs(jobs, executor, workers, progress, overwrite=overwrite, **executor_args)
    rows = [{"path": str(Path(j.out_dir) / "best.safetensors"), "seed": j.config["seed"],
             "sha256": file_sha256(Path(j.out_dir) / "best.safetensors"), "test": r["final"]["test"],
             "val": r["final"]["val"]} for j, r in zip(jobs, records)]
    combine = cfg.distill.combine if cfg.distill is not None else "arithmetic"
    return write_manifest(out / "ensemble.json", rows, combine, config=cfg.model_dump(),
                          ensemble=ensemble_metrics(cfg, [r["path"] for r in rows], combine))


def ensemble_metrics(cfg: TrainConfig, paths: list[str], combine: str) -> dict[str, Any]:
    """The ensemble's own validation and test metrics — its members' predictions combined as a teacher
    combines them (``combine`` at T = 1, :class:`~darkknowledge.teachers.Ensemble`) — for the row beside
    the members'."""
    from ..data import load_splits
    from ..metrics import classification_metrics, predict_logits
    from ..models import load_model
    from ..teachers import Ensemble

    splits = load_splits(cfg.data)
    ens = Ensemble([load_model(p) for p in paths], combine)
    return {part: classification_metrics(predict_logits(ens, d.x), d.y) if len(d) else None
            for part, d in (("val", splits.val), ("test", splits.test))}


def _folder(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder — choose a folder")
    return out


def split_values(raw: str) -> list[str]:
    """``"1,2,[3,4],{a: 1, b: 2}"`` → ``["1", "2", "[3,4]", "{a: 1, b: 2}"]``: commas outside brackets and
    quotes separate values."""
    parts, depth, quote, cur = [], 0, "", ""
    for ch in raw:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    if depth != 0 or quote:
        raise ConfigError(f"unbalanced brackets or quotes in {raw!r}")
    return [p.strip() for p in parts]


def parse_grid(overrides: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Split ``key=value`` overrides into fixed ones and grid axes (a value list with a top-level comma). Two
    values of an axis that parse equal (``0.1,0.10``), a key given twice and a grid of more than
    :data:`MAX_RUNS` cells are errors."""
    fixed, axes, keys = [], [], set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        if key in keys:
            raise ConfigError(f"{key} is given twice — give it once (key=v1,v2,... for several values)")
        keys.add(key)
        values = split_values(raw)
        if len(values) > 1:
            if any(v == "" for v in values):
                raise ConfigError(f"{key}: empty value in {raw!r}")
            parsed: dict[str, str] = {}
            for v in values:
                p = json.dumps(parse_overrides([f"x={v}"])["x"], sort_keys=True, default=str)
                if p in parsed:
                    raise ConfigError(f"{key}: {parsed[p]} and {v} are the same value — give each value once")
                parsed[p] = v
            axes.append((key, values))
        else:
            fixed.append(item)
    cells = math.prod(len(v) for _, v in axes)
    if cells > MAX_RUNS:
        raise ConfigError(f"the grid has {cells} cells ({' x '.join(str(len(v)) for _, v in axes)}); at most "
                          f"{MAX_RUNS} — sweep fewer values")
    return fixed, axes


def _slug(key: str, value: str) -> str:
    short = key.split(".")[-1]
    return f"{short}{re.sub(r'[^A-Za-z0-9.]+', '-', value).strip('-')}"


#: keys of a distillation's settings: a labels-only baseline run leaves them out
_TEACHING = ("distill", "method", "method_args")


def _typed(raw: str) -> Any:
    """A grid value as the config reads it (``"4"`` → 4, ``"[300,300]"`` → [300, 300])."""
    return parse_overrides([f"v={raw}"])["v"]


def _baseline_jobs(base: TrainConfig, axes: list[tuple[str, list[str]]], out: Path
                   ) -> tuple[list[dict[str, Any]], list[Job]]:
    """One labels-only run (no teacher, method ``labels``) per combination of the axes that do not set the
    distillation (``distill.*``, ``method*``): the row a distillation sweep is compared with."""
    plain = [(k, vs) for k, vs in axes if k.split(".")[0] not in _TEACHING]
    dump = {**base.model_dump(), "distill": None, "method": None, "method_args": {}}
    cells, jobs = [], []
    for combo in itertools.product(*[[(k, v) for v in vs] for k, vs in plain]):
        name = "_".join(["labels-only", *(_slug(k, v) for k, v in combo)])
        c = apply_overrides(dump, [f"{k}={v}" for k, v in combo] + [f"out_dir={out / name}"])
        cells.append({"cell": name, "values": {k: _typed(v) for k, v in combo}, "baseline": "labels only"})
        jobs.append(Job(c.model_copy(update={"name": f"{base.name}_{name}"}).model_dump()))
    return cells, jobs


def _row(cell: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """A sweep table row: the cell and its run's validation and test results."""
    f = r["final"]
    return {**cell, "out_dir": r["config"]["out_dir"], "selected_epoch": f["selected_epoch"],
            "val_accuracy": (f.get("val") or {}).get("accuracy"), "val_nll": (f.get("val") or {}).get("nll"),
            "test_accuracy": f["test"]["accuracy"], "test_errors": f["test"].get("errors"),
            "wall_time_s": r.get("wall_time_s")}


def sweep(cfg: TrainConfig, overrides: list[str], out: str | Path, executor: str = "local", workers: int = 1,
          progress: bool = True, baseline: bool = True, overwrite: bool = False,
          **executor_args: Any) -> dict[str, Any]:
    """One run per cell of the grid in ``overrides`` (e.g. ``["distill.temperature=1,2,4",
    "model.args.hidden=[300,300],[800,800]"]``) into ``out/<cell>``; writes ``out/sweep.json`` and returns it.
    Every cell's config is validated before anything runs; finished cells of the same inputs are reused, cells
    whose inputs changed (data, teacher files, config) refused — or retrained with ``overwrite``. A distillation
    sweep also trains, with ``baseline``, the labels-only runs of :func:`_baseline_jobs` (``sweep.json``'s
    ``baseline`` rows); grid values are recorded typed, as the config reads them."""
    fixed, axes = parse_grid(overrides)
    if not axes:
        raise ConfigError("a sweep needs at least one key with several values, e.g. distill.temperature=1,2,4")
    base = apply_overrides(cfg, fixed)
    out = _folder(out)
    cells, jobs = [], []
    for combo in itertools.product(*[[(k, v) for v in vs] for k, vs in axes]):
        name = "_".join(_slug(k, v) for k, v in combo)
        c = apply_overrides(base, [f"{k}={v}" for k, v in combo] + [f"out_dir={out / name}"])
        c = c.model_copy(update={"name": f"{base.name}_{name}"})
        cells.append({"cell": name, "values": {k: _typed(v) for k, v in combo}})
        jobs.append(Job(c.model_dump()))
    base_cells, base_jobs = _baseline_jobs(base, axes, out) if baseline and base.distill is not None else ([], [])
    records = run_jobs(jobs + base_jobs, executor, workers, progress, overwrite=overwrite, **executor_args)
    rows = [_row(cell, r) for cell, r in zip(cells, records)]
    scored = [r for r in rows if r["val_accuracy"] is not None]
    best = max(scored, key=lambda r: r["val_accuracy"])["cell"] if scored else None
    result = {"config": base.model_dump(), "axes": [{"key": k, "values": [_typed(x) for x in v]} for k, v in axes],
              "cells": rows, "best_on_validation": best,
              "baseline": [_row(c, r) for c, r in zip(base_cells, records[len(jobs):])]}
    atomic_write_json(out / "sweep.json", result)
    return result
