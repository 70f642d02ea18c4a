"""A user's own data, checked and brought to the layout of the built-in data before anything trains.

Every format (IDX, NPZ, NPY, image folders, CSV, parquet, Hugging Face ``datasets``) goes through the
same three steps, so the same numbers give the same tensors whatever file they came in:

* **layout** (:func:`image_layout`): images carry a channel axis like the built-in ``mnist`` —
  ``[N, H, W]`` becomes ``[N, 1, H, W]``; ``[N, H, W, C]`` with ``C`` in 1 or 3 (channels last, as numpy
  image arrays are) becomes ``[N, C, H, W]``; ``[N, F]`` stays a table of features. One value per example
  (``[N]``) is refused.
* **scaling** (:func:`scale_inputs`), one documented rule: inputs of an *integer* type (``uint8`` arrays,
  IDX files, image files, and CSV / parquet columns of whole numbers alike) whose values all lie in
  0..255 are 8-bit pixels and are divided by 255; floating-point inputs are used as they are, with a
  warning when they reach beyond ±100 (networks train best on inputs of order one: standardise them).
  The rule looks at train and test together, so both splits are scaled alike.
* **labels** (:func:`class_labels`): class ids must be 0..C-1, contiguous, and every class must occur in
  the training file. Labels that are names (strings), or integers that are not 0-based and contiguous
  (1..10, or 0, 1, 3), are mapped to 0..C-1 in sorted order with a one-line warning naming the file, and
  the names are kept in ``run.json``; a class that occurs only in the test file, and fractional labels,
  are errors naming the files.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

__all__ = ["DatasetFormatError", "image_layout", "scale_inputs", "class_labels", "PIXEL_MAX", "LARGE_INPUT"]

log = logging.getLogger("darkknowledge.data")

#: integer inputs within 0..PIXEL_MAX are 8-bit pixels (divided by PIXEL_MAX)
PIXEL_MAX = 255
#: floating-point inputs beyond ±LARGE_INPUT get a warning (not scaled)
LARGE_INPUT = 100.0


class DatasetFormatError(ValueError):
    """A user's data files are missing, unreadable or inconsistent."""


def image_layout(x: np.ndarray, where: str) -> np.ndarray:
    """``x`` in the built-in layout: ``[N, F]`` features, or images ``[N, C, H, W]`` (see the module doc)."""
    if x.ndim < 2:
        raise DatasetFormatError(f"{where}: inputs of shape {tuple(x.shape)} hold one value per example; expected "
                                 "[N, features] or images [N, H, W] / [N, C, H, W]")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        return np.moveaxis(x, -1, 1)
    if x.ndim > 4:
        raise DatasetFormatError(f"{where}: inputs of shape {tuple(x.shape)}; expected [N, features], [N, H, W] or "
                                 "[N, C, H, W]")
    return x


def scale_inputs(xs: dict[str, np.ndarray], where: dict[str, str]) -> dict[str, Tensor]:
    """The splits' inputs as float32 tensors, scaled by the module's rule (one decision for all splits)."""
    for s, x in xs.items():
        if x.size == 0:
            raise DatasetFormatError(f"{where[s]}: inputs of shape {tuple(x.shape)} hold no values")
        if x.dtype.kind not in "iubf":
            raise DatasetFormatError(f"{where[s]}: inputs must be numbers, got dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DatasetFormatError(f"{where[s]}: inputs include NaN or inf (e.g. at example "
                                     f"{int(np.argwhere(~np.isfinite(x))[0][0])})")
    ints = all(np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_ for x in xs.values())
    lo = min(float(x.min()) for x in xs.values())
    hi = max(float(x.max()) for x in xs.values())
    files = ", ".join(where[s] for s in xs)
    pixels = ints and lo >= 0 and hi <= PIXEL_MAX
    if pixels and any(x.dtype != np.uint8 for x in xs.values()) and hi > 1:
        log.warning("%s: integer inputs in %g..%g are taken as 8-bit pixels and divided by %d (the pixel rule; "
                    "store them as floats to keep them as they are)", files, lo, hi, PIXEL_MAX)
    elif not ints and max(abs(lo), abs(hi)) > LARGE_INPUT:
        log.warning("%s: inputs range over [%g, %g] and are used as they are (only integer inputs in 0..255 are "
                    "scaled); networks train best on inputs of order one — standardise them", files, lo, hi)
    elif ints and not pixels:
        log.warning("%s: integer inputs range over [%g, %g] and are used as they are (only 0..255 is scaled); "
                    "standardise them", files, lo, hi)
    out = {}
    for s, x in xs.items():
        t = torch.from_numpy(np.ascontiguousarray(x).astype(np.float32, copy=False))
        out[s] = t / PIXEL_MAX if pixels and hi > 1 else t
    return out


def class_labels(ys: dict[str, np.ndarray], where: dict[str, str]
                 ) -> tuple[dict[str, Tensor], list[str] | None]:
    """Labels as int64 class ids 0..C-1 and the class names (``None`` when the labels were 0..C-1 already);
    the checks of the module doc, each naming the file."""
    ys = {s: np.asarray(y).reshape(-1) for s, y in ys.items()}
    for s, y in ys.items():
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise DatasetFormatError(f"{where[s]}: labels include NaN or inf")
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise DatasetFormatError(f"{where[s]}: labels must be class ids or names, not fractional numbers")
        if y.dtype.kind == "O":
            ys[s] = y.astype(str)
    train = ys["train"]
    seen = set(np.unique(train).tolist())
    for s, y in ys.items():
        extra = sorted(set(np.unique(y).tolist()) - seen)
        if extra:
            raise DatasetFormatError(f"{where[s]}: labels {extra[:5]} never occur in the training file "
                                     f"{where['train']} (every class needs training examples)")
    classes = np.unique(train)
    numeric = classes.dtype.kind in "iub" or classes.dtype.kind == "f"
    if numeric and np.array_equal(classes, np.arange(len(classes))):
        return {s: torch.from_numpy(y.astype(np.int64)) for s, y in ys.items()}, None
    if numeric:
        gaps = sorted(set(range(int(classes.min()), int(classes.max()) + 1)) - set(classes.astype(np.int64).tolist()))
        why = (f"do not start at 0 ({_span(classes)})" if not gaps and classes.min() != 0 else
               f"have gaps (no {gaps[:5]})" if gaps else f"are not 0..C-1 ({_span(classes)})")
        log.warning("%s: class ids %s; mapped to 0..%d in sorted order (the original ids are kept as class "
                    "names in run.json)", where["train"], why, len(classes) - 1)
    lookup = {v: i for i, v in enumerate(classes.tolist())}
    names = [str(int(v)) if numeric else str(v) for v in classes.tolist()]
    return {s: torch.tensor([lookup[v] for v in y.tolist()], dtype=torch.long) for s, y in ys.items()}, names


def _span(classes: np.ndarray) -> str:
    return f"{classes.min():g}..{classes.max():g}"
