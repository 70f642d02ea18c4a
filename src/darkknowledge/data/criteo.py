"""Criteo Display Advertising Challenge (Kaggle 2014) format: loader and featuriser.

**Format** (tab-separated, no header, plain or gzip): ``label, I1..I13, C1..C26`` (40 fields) for
labelled rows, or ``I1..I13, C1..C26`` (39 fields) for the unlabelled test file.

* ``label``: ``0`` or ``1``;
* ``I1..I13``: integer counts, possibly empty (missing) or negative (``-1`` and other negative
  values occur in the real data and are kept as values, not treated as missing);
* ``C1..C26``: 32-bit hashes written as hex (8 hex digits in Criteo's files), possibly empty.

:func:`read_criteo` returns a :class:`CriteoData` of NumPy arrays:

* ``labels``: ``float32 [N]`` (0/1), or ``None`` for unlabelled files;
* ``ints``: ``float64 [N, 13]``, ``NaN`` where missing;
* ``cats``: ``int64 [N, 26]``, the hex hash parsed as an integer (so in ``[0, 2^60)``), ``-1`` where
  missing (``-1`` can never be a parsed hash).

:func:`criteo_features` turns these into model inputs: dense ``float32 [N, 26]`` (13 transformed
counts ``sign(x)·log(1+|x|)``, missing → 0, then 13 missing-value indicators) and categorical
``int64 [N, 26]`` bucket ids in ``[0, num_buckets)``, bucket 0 reserved for missing.

The synthetic generator in :mod:`darkknowledge.data.clickthrough` produces the same
:class:`CriteoData`, so one featuriser serves both.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch

from .common import RemoteFile, locate_files
from .registry import register_dataset

__all__ = [
    "NUM_INT",
    "NUM_CAT",
    "INT_COLUMNS",
    "CAT_COLUMNS",
    "CriteoData",
    "CriteoFormatError",
    "read_criteo",
    "load_criteo_sample",
    "criteo_features",
    "ctr_inputs",
    "hash_categorical",
]

NUM_INT = 13
NUM_CAT = 26
INT_COLUMNS = tuple(f"I{i}" for i in range(1, NUM_INT + 1))
CAT_COLUMNS = tuple(f"C{i}" for i in range(1, NUM_CAT + 1))
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789-")
_MAX_HEX_DIGITS = 15  # keeps every parsed hash below 2^60 in int64

SAMPLE_DATASET = "criteo-sample"
SAMPLE_FILES = {
    "train": RemoteFile("criteo_kaggle_train_head1000.tsv.gz",
                        "2d083253ed905f67b573b6bb7ee74af07f5287cfc2eb064938da32d783b7e242", ()),
    "test": RemoteFile("criteo_kaggle_test_head100_unlabeled.tsv.gz",
                       "1a21141d8724847bdd71a60b897d40ce4d6926e8a61e0f53e8d20980795fc7d6", ()),
}


class CriteoFormatError(ValueError):
    """A Criteo-format file has a row with the wrong number of fields or a bad value."""


class CriteoData(NamedTuple):
    """Criteo-format rows as arrays (see the module docstring for the encoding)."""

    labels: np.ndarray | None  # float32 [N] in {0, 1}, or None when unlabelled
    ints: np.ndarray  # float64 [N, 13], NaN = missing
    cats: np.ndarray  # int64 [N, 26], -1 = missing

    @property
    def num_rows(self) -> int:
        return int(self.ints.shape[0])

    def subset(self, index: np.ndarray | slice) -> CriteoData:
        labels = None if self.labels is None else self.labels[index]
        return CriteoData(labels, self.ints[index], self.cats[index])


def load_criteo_sample_split(data_dir: str | os.PathLike | None = None, download: bool = False,
                             num_buckets: int = 4096) -> dict[str, tuple]:
    """The registry's ``criteo-sample``: the 1,000 labelled rows as ``ctr_mlp`` inputs, the first 800 as
    ``train`` and the last 200 as ``test`` (the pipeline check of the subclass-clickthrough experiment)."""
    data = load_criteo_sample("train", data_dir)
    x, y = ctr_inputs(data, num_buckets), torch.from_numpy(data.labels).long()
    return {"train": (x[:800], y[:800]), "test": (x[800:], y[800:])}


# --------------------------------------------------------------------------------------------------
# reading


def _open_binary(path: Path) -> IO[bytes]:
    """Open plain or gzip (detected by its magic bytes) for reading bytes."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _bad(path: Path, line: int, msg: str) -> CriteoFormatError:
    return CriteoFormatError(f"{path}, line {line}: {msg}")


def _int_column(col: list[str], lines: list[int], path: Path, name: str) -> np.ndarray:
    """Strictly parse one integer column (``""`` → NaN); errors name the first bad line."""
    if not set("".join(col)) <= _DIGITS or any("-" in v[1:] or v == "-" for v in col):
        for v, ln in zip(col, lines):
            if v and (not set(v) <= _DIGITS or "-" in v[1:] or v == "-"):
                raise _bad(path, ln, f"{name} = {v!r} is not an integer")
    out = np.full(len(col), np.nan)
    present = np.fromiter((bool(v) for v in col), dtype=bool, count=len(col))
    if present.any():
        out[present] = np.array([v for v in col if v], dtype=np.float64)
    return out


def _cat_column(col: list[str], lines: list[int], path: Path, name: str) -> np.ndarray:
    """Strictly parse one hex column (``""`` → -1); errors name the first bad line."""
    if not set("".join(col)) <= _HEX or max(map(len, col), default=0) > _MAX_HEX_DIGITS:
        for v, ln in zip(col, lines):
            if v and (not set(v) <= _HEX or len(v) > _MAX_HEX_DIGITS):
                raise _bad(path, ln, f"{name} = {v!r} is not a hex hash of at most {_MAX_HEX_DIGITS} digits")
    return np.fromiter((int(v, 16) if v else -1 for v in col), dtype=np.int64, count=len(col))


def _read_rows(
    fh: IO[bytes], path: Path, width: int | None, max_rows: int | None, pad: bool,
    rows: list[list[str]], lines: list[int],
) -> None:
    """Split lines into fields, checking the field count; fills ``rows`` and their line numbers."""
    for ln, raw in enumerate(fh, start=1):
        if max_rows is not None and len(rows) >= max_rows:
            break
        try:
            text = raw.decode("ascii").rstrip("\r\n")
        except UnicodeDecodeError as e:
            raise _bad(path, ln, f"non-ASCII bytes ({e})") from e
        if not text:
            continue
        fields = text.split("\t")
        if width is None:
            if len(fields) not in (NUM_INT + NUM_CAT, 1 + NUM_INT + NUM_CAT):
                raise _bad(path, ln, f"{len(fields)} fields; a Criteo row has 40 (labelled) or 39 "
                                     f"(unlabelled)")
            width = len(fields)
        if len(fields) != width:
            if pad and len(fields) < width:
                fields += [""] * (width - len(fields))
            else:
                raise _bad(path, ln, f"{len(fields)} fields, expected {width}")
        rows.append(fields)
        lines.append(ln)


def read_criteo(
    path: str | os.PathLike,
    has_label: bool | None = None,
    max_rows: int | None = None,
    pad_short_rows: bool = False,
) -> CriteoData:
    """Read a Criteo-format TSV file (plain or gzip, detected from the content).

    ``has_label=None`` infers it from the first row (40 fields → labelled, 39 → unlabelled); every
    row must then have that many fields. ``pad_short_rows=True`` right-pads rows that have fewer
    fields with empty ones (some copies trim trailing empty fields). Empty lines are skipped.
    ``max_rows`` reads only the first rows. Raises :class:`CriteoFormatError` naming the file and
    the 1-based line number of the first row with a wrong field count or a bad value.
    """
    path = Path(path)
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    width = None if has_label is None else (1 + NUM_INT + NUM_CAT if has_label else NUM_INT + NUM_CAT)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with _open_binary(path) as fh:
            _read_rows(fh, path, width, max_rows, pad_short_rows, rows, lines)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise CriteoFormatError(f"{path}: corrupt or truncated gzip file ({e})") from e
    width = len(rows[0]) if rows else width
    labelled = width == 1 + NUM_INT + NUM_CAT if width is not None else bool(has_label)
    n = len(rows)
    off = 1 if labelled else 0
    cols = list(zip(*rows)) if rows else [()] * (off + NUM_INT + NUM_CAT)
    labels = None
    if labelled:
        lab = cols[0]
        for v, ln in zip(lab, lines):
            if v not in ("0", "1"):
                raise _bad(path, ln, f"label = {v!r}, expected 0 or 1")
        labels = np.fromiter((v == "1" for v in lab), dtype=np.float32, count=n)
    ints = np.empty((n, NUM_INT), dtype=np.float64)
    for j in range(NUM_INT):
        ints[:, j] = _int_column(list(cols[off + j]), lines, path, INT_COLUMNS[j])
    cats = np.empty((n, NUM_CAT), dtype=np.int64)
    for j in range(NUM_CAT):
        cats[:, j] = _cat_column(list(cols[off + NUM_INT + j]), lines, path, CAT_COLUMNS[j])
    return CriteoData(labels, ints, cats)


def load_criteo_sample(
    split: str = "train", data_dir: str | os.PathLike | None = None, download: bool = False
) -> CriteoData:
    """The real Criteo sample (dataset folder ``criteo-sample``): ``"train"`` = 1,000 labelled rows
    (205 clicks), ``"test"`` = 100 unlabelled rows. sha256-verified; there is no download URL."""
    if split not in SAMPLE_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rf = SAMPLE_FILES[split]
    path = locate_files(SAMPLE_DATASET, [rf], data_dir, download=download)[rf.name]
    return read_criteo(path, has_label=(split == "train"))


# --------------------------------------------------------------------------------------------------
# featurising


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic): a fixed, well-mixed 64-bit hash."""
    x = x.astype(np.uint64, copy=True)
    x += np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def hash_categorical(cats: np.ndarray, num_buckets: int | Sequence[int], seed: int = 0) -> np.ndarray:
    """Hash ``int64 [N, F]`` ids (``-1`` = missing) into per-field buckets.

    Missing → 0; a present id of field ``j`` → ``1 + splitmix64(id ⊕ salt_j) mod (B_j − 1)``, with
    ``B_j = num_buckets`` (an int for every field or one per field, each ≥ 2) and ``salt_j``
    derived from ``seed`` and ``j``. Deterministic across runs and machines.
    """
    cats = np.asarray(cats)
    if cats.ndim != 2 or not np.issubdtype(cats.dtype, np.integer):
        raise ValueError(f"cats must be an integer array [N, F], got dtype {cats.dtype} shape {cats.shape}")
    f = cats.shape[1]
    buckets = np.broadcast_to(np.asarray(num_buckets, dtype=np.int64), (f,))
    if (buckets < 2).any():
        raise ValueError(f"num_buckets must be >= 2 (bucket 0 is reserved for missing), got {num_buckets}")
    if (cats < -1).any():
        raise ValueError("categorical ids must be >= 0, or -1 for missing")
    salt0 = np.uint64((int(seed) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF)
    salts = _splitmix64(np.arange(f, dtype=np.uint64) + salt0)
    h = _splitmix64(cats.astype(np.uint64) ^ salts[None, :])
    out = (h % (buckets - 1).astype(np.uint64)[None, :]).astype(np.int64) + 1
    out[cats == -1] = 0
    return out


def criteo_features(
    data: CriteoData, num_buckets: int | Sequence[int] = 100_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs from :class:`CriteoData`.

    Returns ``(dense float32 [N, 26], cat int64 [N, 26])``:

    * ``dense[:, :13] = sign(x)·log(1 + |x|)`` of the counts (``log1p`` for the usual ``x ≥ 0``;
      sign-preserving so negative counts stay finite), ``0`` where missing;
    * ``dense[:, 13:]``: 1.0 where the count is missing, else 0.0;
    * ``cat``: :func:`hash_categorical` bucket ids in ``[0, num_buckets)``, 0 = missing.
    """
    ints = np.asarray(data.ints, dtype=np.float64)
    if ints.ndim != 2 or ints.shape[1] != NUM_INT:
        raise ValueError(f"ints must have shape [N, {NUM_INT}], got {ints.shape}")
    cats = np.asarray(data.cats)
    if cats.shape != (ints.shape[0], NUM_CAT):
        raise ValueError(f"cats must have shape [{ints.shape[0]}, {NUM_CAT}], got {cats.shape}")
    missing = np.isnan(ints)
    x = np.where(missing, 0.0, ints)
    dense = np.concatenate([np.sign(x) * np.log1p(np.abs(x)), missing.astype(np.float64)], axis=1)
    return dense.astype(np.float32), hash_categorical(cats, num_buckets, seed=seed)


def ctr_inputs(data: CriteoData, num_buckets: int) -> torch.Tensor:
    """``CriteoData`` → the ``ctr_mlp`` model's ``[N, 52]`` float input (:func:`criteo_features`: the dense
    features, then the bucket ids as floats)."""
    dense, cat = criteo_features(data, num_buckets=num_buckets)
    return torch.cat([torch.from_numpy(dense), torch.from_numpy(cat).float()], dim=1)


@register_dataset("criteo-sample", classes=2)
def _criteo_sample(data_dir=None, download=True) -> dict[str, tuple]:
    return load_criteo_sample_split(data_dir)  # the sample ships with the data folder: nothing to download
