"""A user's own dataset from files named in a config — no Python needed (``data.format``).

=========  ==========================================================================================
format     ``data.files`` keys (paths; ``test`` is required, validation is carved from ``train``)
=========  ==========================================================================================
idx        ``train_images``, ``train_labels``, ``test_images``, ``test_labels`` (gzipped or not)
npz        ``train``, ``test``: ``.npz`` archives holding arrays ``x`` and ``y`` (names: ``data.arrays``)
npy        ``train_x``, ``train_y``, ``test_x``, ``test_y``
images     ``train``, ``test``: folders with one subfolder per class (any image size; resized to
           ``data.image_size``, greyscale when ``data.channels`` is 1)
csv        ``train``, ``test``: tables with a label column (``data.label_column``) and numeric features
parquet    as csv (needs ``pandas`` with ``pyarrow``)
=========  ==========================================================================================

Integer-valued images (uint8) are scaled to [0, 1]. Labels that are not integers 0..C-1 (strings,
or gaps) are mapped to 0..C-1 in sorted order and the class names are kept. ``data.sha256`` may give
the sha256 of any file (checked when given, never demanded of a user's files).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .common import ChecksumError, DatasetNotFoundError, sha256_file

__all__ = ["FORMATS", "REQUIRED", "load_files", "DatasetFormatError"]

REQUIRED = {"idx": ("train_images", "train_labels", "test_images", "test_labels"), "npz": ("train", "test"),
            "npy": ("train_x", "train_y", "test_x", "test_y"), "images": ("train", "test"), "csv": ("train", "test"),
            "parquet": ("train", "test")}
FORMATS = tuple(REQUIRED)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class DatasetFormatError(ValueError):
    """A user's data files are missing, unreadable or inconsistent."""


def load_files(fmt: str, files: dict[str, str], sha256: dict[str, str] | None = None, label_column: str = "label",
               arrays: tuple[str, str] = ("x", "y"), image_size: int | None = None, channels: int = 1
               ) -> tuple[dict[str, tuple[Tensor, Tensor]], list[str] | None]:
    """``({"train": (x, y), "test": (x, y)}, class_names or None)`` from the files of a ``data.format``."""
    if fmt not in REQUIRED:
        raise DatasetFormatError(f"data.format {fmt!r} is not one of {', '.join(FORMATS)}")
    missing = [k for k in REQUIRED[fmt] if k not in files]
    extra = sorted(set(files) - set(REQUIRED[fmt]))
    if missing or extra:
        raise DatasetFormatError(f"data.files for format {fmt!r} needs keys {', '.join(REQUIRED[fmt])}"
                                 + (f"; missing: {', '.join(missing)}" if missing else "")
                                 + (f"; unknown: {', '.join(extra)}" if extra else ""))
    paths = {k: Path(os.path.expanduser(v)) for k, v in files.items()}
    for k, p in paths.items():
        if not p.exists():
            raise DatasetNotFoundError(f"data.files.{k}: {p} does not exist")
    for k, want in (sha256 or {}).items():
        if k not in paths:
            raise DatasetFormatError(f"data.sha256.{k}: no such file in data.files")
        got = sha256_file(paths[k])
        if got != want.lower():
            raise ChecksumError(f"data.files.{k}: {paths[k]} has sha256 {got}, but data.sha256.{k} says {want}")
    if fmt == "idx":
        from .mnist import read_idx

        raw = {s: (read_idx(paths[f"{s}_images"]), read_idx(paths[f"{s}_labels"])) for s in ("train", "test")}
    elif fmt == "npz":
        raw = {s: _npz(paths[s], arrays) for s in ("train", "test")}
    elif fmt == "npy":
        raw = {s: (_npy(paths[f"{s}_x"]), _npy(paths[f"{s}_y"])) for s in ("train", "test")}
    elif fmt == "images":
        names = sorted(p.name for p in paths["train"].iterdir() if p.is_dir())
        if not names:
            raise DatasetFormatError(f"data.files.train: {paths['train']} has no class subfolders")
        raw = {s: _image_folder(paths[s], names, image_size, channels) for s in ("train", "test")}
        return {s: (x, y) for s, (x, y) in raw.items()}, names
    else:
        raw = {s: _table(paths[s], fmt, label_column) for s in ("train", "test")}
    return _finish(raw)


def _npz(path: Path, arrays: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not all(a in z for a in arrays):
                raise DatasetFormatError(f"{path}: holds arrays {sorted(z.files)}, expected {list(arrays)} "
                                         "(set data.arrays)")
            return z[arrays[0]], z[arrays[1]]
    except (OSError, ValueError) as e:
        if isinstance(e, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path}: not a readable .npz archive ({e})") from None


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetFormatError(f"{path}: not a readable .npy array ({e})") from None


def _image_folder(root: Path, names: list[str], size: int | None, channels: int) -> tuple[Tensor, Tensor]:
    from PIL import Image

    xs, ys = [], []
    for c, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue  # a class absent from this split
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if channels == 1 else "RGB")
                    if size is not None:
                        im = im.resize((size, size), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
            except OSError as e:
                raise DatasetFormatError(f"{f}: not a readable image ({e})") from None
            xs.append(a if a.ndim == 3 else a[..., None])
            ys.append(c)
    if not xs:
        raise DatasetFormatError(f"{root}: no images found in its class subfolders")
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise DatasetFormatError(f"{root}: images differ in size {sorted(shapes)[:3]}...; set data.image_size")
    stack = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    unknown = sorted({p.name for p in root.iterdir() if p.is_dir()} - set(names))
    if unknown:
        raise DatasetFormatError(f"{root}: class folders {unknown} are not in the training set's {names}")
    return stack, torch.tensor(ys, dtype=torch.long)


def _table(path: Path, fmt: str, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import pandas as pd
    except ImportError:
        raise DatasetFormatError(f"data.format {fmt!r} needs pandas (pip install pandas"
                                 + (" pyarrow" if fmt == "parquet" else "") + ")") from None
    try:
        df = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    except Exception as e:  # pandas raises many kinds
        raise DatasetFormatError(f"{path}: cannot read it as {fmt} ({type(e).__name__}: {e})") from None
    if label_column not in df.columns:
        raise DatasetFormatError(f"{path}: no label column {label_column!r} (columns: {', '.join(map(str, df.columns))}"
                                 "); set data.label_column")
    feats = df.drop(columns=[label_column])
    bad = [c for c in feats.columns if not np.issubdtype(feats[c].dtype, np.number)]
    if bad:
        raise DatasetFormatError(f"{path}: feature columns must be numeric; not: {', '.join(map(str, bad[:5]))}")
    return feats.to_numpy(dtype=np.float32), df[label_column].to_numpy()


def _finish(raw: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict[str, tuple[Tensor, Tensor]], list[str] | None]:
    """Inputs to float tensors (uint8 scaled to [0, 1]); labels to 0..C-1 (class names kept when mapped)."""
    for s, (x, y) in raw.items():
        if len(x) != len(y):
            raise DatasetFormatError(f"{s}: {len(x)} inputs but {len(y)} labels")
        if len(y) == 0:
            raise DatasetFormatError(f"{s}: no examples")
    ys = np.concatenate([np.asarray(raw[s][1]).reshape(-1) for s in raw])
    names: list[str] | None = None
    if np.issubdtype(ys.dtype, np.integer) and ys.min() >= 0 and set(np.unique(ys)) == set(range(int(ys.max()) + 1)):
        mapping = None
    else:
        classes = np.unique(ys)
        if np.issubdtype(ys.dtype, np.floating) and not np.all(classes == np.round(classes)):
            raise DatasetFormatError("labels must be class ids or names, not fractional numbers")
        mapping = {v: i for i, v in enumerate(classes.tolist())}
        names = [str(v) for v in classes.tolist()]
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for s, (x, y) in raw.items():
        xt = torch.from_numpy(np.ascontiguousarray(x))
        xt = xt.float() / 255.0 if xt.dtype == torch.uint8 else xt.float()
        yy = np.asarray(y).reshape(-1)
        yt = torch.from_numpy(yy.astype(np.int64)) if mapping is None else torch.tensor([mapping[v] for v in yy.tolist()])
        out[s] = (xt, yt)
    return out, names
