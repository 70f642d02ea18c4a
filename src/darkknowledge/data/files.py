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
parquet    as csv (needs ``pandas`` with ``pyarrow``); a Hugging Face ``datasets`` parquet export with an
           image column too
hf         ``path``: a Hugging Face ``datasets`` folder written by ``DatasetDict.save_to_disk`` with
           ``train`` and ``test`` splits — or ``train``, ``test``: two ``Dataset.save_to_disk`` folders
           (needs ``pip install 'darkknowledge[hf]'``)
=========  ==========================================================================================

Whatever the format, the same checks and the same layout follow (:mod:`.checks`): images get a channel
axis (``[N, 1, 28, 28]`` like the built-in ``mnist``, so every registered model and augmentation takes
them), integer inputs in 0..255 are divided by 255 in every format, class ids must be 0..C-1 with every
class in the training file (other labels are mapped in sorted order with a warning; names kept). Every
error names the file. ``data.sha256`` may give the sha256 of any file (checked when given, never demanded
of a user's files).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import Tensor

from .checks import DatasetFormatError, class_labels, image_layout, scale_inputs
from .common import ChecksumError, DatasetNotFoundError, sha256_file
from .tables import pil_array, read_hf, read_table

__all__ = ["FORMATS", "REQUIRED", "load_files", "DatasetFormatError"]

#: the ``data.files`` keys of each format; ``hf`` also takes the one key ``path`` (a DatasetDict folder)
REQUIRED = {"idx": ("train_images", "train_labels", "test_images", "test_labels"), "npz": ("train", "test"),
            "npy": ("train_x", "train_y", "test_x", "test_y"), "images": ("train", "test"), "csv": ("train", "test"),
            "parquet": ("train", "test"), "hf": ("train", "test")}
FORMATS = tuple(REQUIRED)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
SPLITS = ("train", "test")


def load_files(fmt: str, files: dict[str, str], sha256: dict[str, str] | None = None, label_column: str = "label",
               arrays: tuple[str, str] = ("x", "y"), image_size: int | None = None, channels: int = 1
               ) -> tuple[dict[str, tuple[Tensor, Tensor]], list[str] | None]:
    """``({"train": (x, y), "test": (x, y)}, class_names or None)`` from the files of a ``data.format``."""
    if fmt not in REQUIRED:
        raise DatasetFormatError(f"data.format {fmt!r} is not one of {', '.join(FORMATS)}")
    want = ("path",) if fmt == "hf" and set(files) == {"path"} else REQUIRED[fmt]
    missing = [k for k in want if k not in files]
    extra = sorted(set(files) - set(want))
    if missing or extra:
        raise DatasetFormatError(f"data.files for format {fmt!r} needs keys {', '.join(REQUIRED[fmt])}"
                                 + (" (or the one key path)" if fmt == "hf" else "")
                                 + (f"; missing: {', '.join(missing)}" if missing else "")
                                 + (f"; unknown: {', '.join(extra)}" if extra else ""))
    paths = {k: Path(os.path.expanduser(v)) for k, v in files.items()}
    for k, p in paths.items():
        if not p.exists():
            raise DatasetNotFoundError(f"data.files.{k}: {p} does not exist")
    for k, want_sha in (sha256 or {}).items():
        if k not in paths:
            raise DatasetFormatError(f"data.sha256.{k}: no such file in data.files")
        if paths[k].is_dir():
            raise DatasetFormatError(f"data.sha256.{k}: {paths[k]} is a folder; sha256 is checked for files only")
        got = sha256_file(paths[k])
        if got != want_sha.lower():
            raise ChecksumError(f"data.files.{k}: {paths[k]} has sha256 {got}, but data.sha256.{k} says {want_sha}")
    where = {s: str(paths.get(s, paths.get(f"{s}_images", paths.get(f"{s}_x", paths.get("path", ""))))) for s in SPLITS}
    names: list[str] | None = None
    if fmt == "idx":
        from .mnist import read_idx

        raw = {s: (read_idx(paths[f"{s}_images"]), read_idx(paths[f"{s}_labels"])) for s in SPLITS}
    elif fmt == "npz":
        raw = {s: _npz(paths[s], arrays) for s in SPLITS}
    elif fmt == "npy":
        raw = {s: (_npy(paths[f"{s}_x"]), _npy(paths[f"{s}_y"])) for s in SPLITS}
    elif fmt == "images":
        names = _class_folders(paths["train"])
        raw = {s: _image_folder(paths[s], names, image_size, channels) for s in SPLITS}
    else:  # tables: csv, parquet, hf — with the class names they declare, if any
        if fmt == "hf":
            got = {s: read_hf(paths.get(s, paths.get("path")), None if s in paths else s, label_column, image_size,
                              channels) for s in SPLITS}
            if "path" in paths:
                where = {s: f"{paths['path']} [{s}]" for s in SPLITS}
        else:
            got = {s: read_table(paths[s], fmt, label_column, image_size, channels) for s in SPLITS}
        raw = {s: (x, y) for s, (x, y, _) in got.items()}
        names = got["train"][2]
    return _finish(raw, where, names)


def _finish(raw: dict[str, tuple[np.ndarray, np.ndarray]], where: dict[str, str], names: list[str] | None
            ) -> tuple[dict[str, tuple[Tensor, Tensor]], list[str] | None]:
    """Layout, scaling and labels of :mod:`.checks`; ``names``: the class names the files declare (image
    folders, a ``ClassLabel`` feature) for ids 0..C-1."""
    for s, (x, y) in raw.items():
        x, y = np.asarray(x), np.asarray(y)
        if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise DatasetFormatError(f"{where[s]}: labels of shape {y.shape}; expected one class id per example")
        if len(x) != y.reshape(-1).shape[0]:
            raise DatasetFormatError(f"{where[s]}: {len(x)} inputs but {y.reshape(-1).shape[0]} labels")
        if len(x) == 0:
            raise DatasetFormatError(f"{where[s]}: no examples")
    xs = scale_inputs({s: image_layout(np.asarray(x), where[s]) for s, (x, _) in raw.items()}, where)
    shapes = {s: tuple(x.shape[1:]) for s, x in xs.items()}
    if shapes["train"] != shapes["test"]:
        raise DatasetFormatError(f"{where['test']}: inputs of shape {shapes['test']} but the training file "
                                 f"{where['train']} has {shapes['train']}")
    ys, mapped = class_labels({s: y for s, (_, y) in raw.items()}, where)
    if names is not None and mapped is not None:  # declared names of the ids that occur
        names = [names[int(i)] for i in mapped]
    return {s: (xs[s], ys[s]) for s in raw}, names if names is not None else mapped


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


def _class_folders(root: Path) -> list[str]:
    """The class names of an image folder (its subfolders, sorted); an empty class folder is an error."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise DatasetFormatError(f"data.files.train: {root} has no class subfolders")
    empty = [n for n in names if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in (root / n).iterdir())]
    if empty:
        raise DatasetFormatError(f"{root}: class folders {empty} hold no images; remove them or add examples "
                                 "(every class needs training examples)")
    return names


def _image_folder(root: Path, names: list[str], size: int | None, channels: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    unknown = sorted({p.name for p in root.iterdir() if p.is_dir()} - set(names))
    if unknown:
        raise DatasetFormatError(f"{root}: class folders {unknown} are not in the training set's {names}")
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
                    xs.append(pil_array(im, size, channels))
            except OSError as e:
                raise DatasetFormatError(f"{f}: not a readable image ({e})") from None
            ys.append(c)
    if not xs:
        raise DatasetFormatError(f"{root}: no images found in its class subfolders")
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise DatasetFormatError(f"{root}: images differ in size {sorted(shapes)[:3]}...; set data.image_size")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)
