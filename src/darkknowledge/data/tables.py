"""Tables of examples — CSV, parquet (a Hugging Face ``datasets`` parquet export included) and Hugging Face
``datasets`` folders written by ``save_to_disk`` — as arrays ``(x, y)``.

The inputs of a table are either its one image column (Hugging Face's ``Image`` feature; in a parquet
export a column of ``{"bytes": ..., "path": ...}`` records) or all its numeric columns but the label.
Images are decoded with Pillow, resized to ``data.image_size`` when set and converted to ``data.channels``
channels; they come back as ``uint8`` ``[N, H, W, C]`` (see :mod:`.checks` for the layout and scaling
every format then shares). ``datasets`` is an optional dependency (``pip install 'darkknowledge[hf]'``),
imported only when a ``data.format: hf`` config is loaded.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from .checks import DatasetFormatError

__all__ = ["pil_array", "read_table", "read_hf"]


def pil_array(im: Any, size: int | None, channels: int) -> np.ndarray:
    """A PIL image as ``uint8`` ``[H, W, C]``: ``channels`` 1 (greyscale) or 3 (RGB), resized to ``size``²."""
    from PIL import Image

    im = im.convert("L" if channels == 1 else "RGB")
    if size is not None:
        im = im.resize((size, size), Image.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a if a.ndim == 3 else a[..., None]


def _stack_images(images: list[Any], size: int | None, channels: int, where: str) -> np.ndarray:
    from PIL import Image

    arrays = []
    for i, im in enumerate(images):
        try:
            if isinstance(im, dict):  # a parquet export's image record
                im = Image.open(io.BytesIO(im["bytes"])) if im.get("bytes") else Image.open(im["path"])
            arrays.append(pil_array(im, size, channels))
        except (OSError, KeyError, TypeError) as e:
            raise DatasetFormatError(f"{where}: row {i} is not a readable image ({e})") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DatasetFormatError(f"{where}: images differ in size {sorted(shapes)[:3]}...; set data.image_size")
    return np.stack(arrays)


def _is_image_record(v: Any) -> bool:
    return isinstance(v, dict) and ("bytes" in v or "path" in v)


def _hf_names(path: Path, label_column: str) -> list[str] | None:
    """The class names a Hugging Face parquet export keeps in its schema metadata (a ``ClassLabel`` label)."""
    import json

    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        feature = json.loads(meta[b"huggingface"])["info"]["features"][label_column]
    except (ImportError, KeyError, TypeError, ValueError, OSError):
        return None
    names = feature.get("names") if isinstance(feature, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else None


def read_table(path: Path, fmt: str, label_column: str, size: int | None = None, channels: int = 1
               ) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """``(x, y, class names or None)`` of a CSV or parquet file: its image column, else its numeric feature
    columns; the names of a Hugging Face parquet export's ``ClassLabel`` label."""
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
    if len(df) == 0:
        raise DatasetFormatError(f"{path}: no rows")
    feats = df.drop(columns=[label_column])
    if feats.shape[1] == 0:
        raise DatasetFormatError(f"{path}: no feature columns beside the label column {label_column!r}")
    images = [c for c in feats.columns if feats[c].dtype == object and _is_image_record(feats[c].iloc[0])]
    if len(images) > 1:
        raise DatasetFormatError(f"{path}: several image columns {images}; keep one")
    names = _hf_names(path, label_column) if fmt == "parquet" else None
    if images:
        return _stack_images(list(feats[images[0]]), size, channels, str(path)), df[label_column].to_numpy(), names
    bad = [c for c in feats.columns if not np.issubdtype(feats[c].dtype, np.number)]
    if bad:
        raise DatasetFormatError(f"{path}: feature columns must be numeric; not: {', '.join(map(str, bad[:5]))}")
    if feats.isna().to_numpy().any():
        raise DatasetFormatError(f"{path}: feature columns hold empty cells (NaN); fill or drop them")
    dtypes = {feats[c].dtype for c in feats.columns}
    as_int = all(np.issubdtype(d, np.integer) for d in dtypes)  # whole numbers keep an integer type (the pixel rule)
    return feats.to_numpy(dtype=np.int64 if as_int else np.float32), df[label_column].to_numpy(), names


def read_hf(path: Path, split: str | None, label_column: str, size: int | None = None, channels: int = 1
            ) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """``(x, y, class names or None)`` of a ``save_to_disk`` folder: a ``Dataset``, or split ``split`` of a
    ``DatasetDict``; the names come from a ``ClassLabel`` label feature."""
    try:
        import datasets
    except ImportError:
        raise DatasetFormatError("data.format 'hf' needs the Hugging Face datasets package "
                                 "(pip install 'darkknowledge[hf]')") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DatasetFormatError(f"{path}: not a Hugging Face datasets folder written by save_to_disk ({e})") from None
    where = str(path)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DatasetFormatError(f"{path}: a DatasetDict without a {split!r} split (it has {', '.join(ds)})")
        ds, where = ds[split], f"{path} [{split}]"
    if label_column not in ds.column_names:
        raise DatasetFormatError(f"{where}: no label column {label_column!r} (columns: {', '.join(ds.column_names)}); "
                                 "set data.label_column")
    feature = ds.features[label_column]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    y = np.asarray(ds[label_column])
    cols = [c for c in ds.column_names if c != label_column]
    images = [c for c in cols if isinstance(ds.features[c], datasets.Image)]
    if len(images) > 1:
        raise DatasetFormatError(f"{where}: several image columns {images}; keep one")
    if images:
        return _stack_images(ds[images[0]], size, channels, where), y, names
    npy = ds.with_format("numpy")
    try:
        parts = [np.asarray(npy[c]).reshape(len(ds), -1) if len(cols) > 1 else np.asarray(npy[c]) for c in cols]
    except ValueError as e:
        raise DatasetFormatError(f"{where}: input columns {cols} are not numeric arrays of one shape ({e})") from None
    if not parts or any(p.dtype.kind not in "iufb" for p in parts):
        raise DatasetFormatError(f"{where}: no image column and not all of {cols} are numeric")
    return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)), y, names
