"""The one matplotlib setup of the reports: the Agg backend (no display), one style, figures saved
atomically (a figure file is whole or absent).

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ...
    save_figure(fig, out / "curve.png", dpi=120)   # also closes the figure
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ..utils import atomic_write_bytes

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: ``import darkknowledge`` stays light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` (format from the suffix) through a buffer and an atomic rename, and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
