"""Helpers shared by experiments: cached, resumable runs and summary bookkeeping."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import TrainConfig, same_config, validate
from ..data import Splits
from ..training import train

__all__ = ["run_cached", "Stage", "timed"]


def run_cached(cfg: TrainConfig | dict[str, Any], splits: Splits | None = None, progress: bool = True,
               **kw: Any) -> dict[str, Any]:
    """Train ``cfg`` unless ``<out_dir>/run.json`` already holds a finished run of the same config.

    A run killed half-way resumes from its last checkpoint (``resume=True``).
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else validate(cfg)
    rec_path = Path(cfg.out_dir) / "run.json"
    if rec_path.exists():
        try:
            rec = json.loads(rec_path.read_text())
            if same_config(rec.get("config"), cfg):
                return rec
        except (OSError, json.JSONDecodeError):
            pass
    return train(cfg, resume=True, splits=splits, progress=progress, **kw)


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
