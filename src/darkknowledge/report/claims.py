"""A claim checked over seeds, in words: paired per-seed differences of two systems."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["paired_claim"]


def paired_claim(a: str, b: str, va: Sequence[float], vb: Sequence[float], unit: str = "points") -> str:
    """"a beats b on average: k/n seeds won, mean difference d ± s" over the paired differences ``va − vb``
    (s: their sample standard deviation). A mean within one standard error of zero (``|d| ≤ s/√n``) is
    called indistinguishable; a mean ≤ 0 "does NOT beat"."""
    d = np.asarray(va) - np.asarray(vb)
    wins = int((d > 0).sum())
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    verdict = "beats" if d.mean() > 0 else "does NOT beat"
    if d.size > 1 and abs(d.mean()) <= sd / np.sqrt(d.size):  # within one standard error of zero
        verdict = "is indistinguishable from (within one standard error)"
    return (f"{a} {verdict} {b} on average: {wins}/{d.size} seeds won, mean difference "
            f"{d.mean():+.2f} ± {sd:.2f} {unit}")
