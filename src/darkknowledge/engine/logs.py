"""Per-epoch metrics where users of the field look for them: ``metrics.csv`` in the run folder (rewritten
whole from the history each epoch, so a resumed run's file is exactly an uninterrupted one's), and
TensorBoard event files in ``<run>/tensorboard/`` when the ``tensorboard`` package is installed
(``pip install darkknowledge[tensorboard]``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text

__all__ = ["write_metrics_csv", "TensorBoard", "flatten"]


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"val": {"accuracy": …}}`` → ``{"val/accuracy": …}`` (numbers only)."""
    out: dict[str, float] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    rows = [flatten(r) for r in history]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class TensorBoard:
    """Scalars per epoch into ``<run>/tensorboard/``; does nothing when tensorboard is not installed."""

    def __init__(self, out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer = None
            return
        self.writer = SummaryWriter(str(out / "tensorboard"))

    def epoch(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in flatten(row).items():
            if k != "epoch":
                self.writer.add_scalar(k, v, int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
