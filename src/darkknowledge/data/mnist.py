"""MNIST from the four IDX ``.gz`` files (LeCun, Cortes & Burges), and sklearn's 8×8 digits.

IDX format: big-endian; images magic ``0x00000803``, count, rows, cols, then ``uint8`` pixels;
labels magic ``0x00000801``, count, then ``uint8`` labels. Files are verified by the sha256 of
their *decompressed* content, so any mirror's gzip works.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .common import RemoteFile, locate_files
from .registry import register_dataset

__all__ = ["MNIST_FILES", "read_idx", "load_mnist", "load_digits", "IDXFormatError"]

_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def _rf(name: str, sha: str) -> RemoteFile:
    return RemoteFile(name, sha, tuple(m + name for m in _MIRRORS), gunzip=True)


MNIST_FILES = {
    "train_images": _rf("train-images-idx3-ubyte.gz", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train_labels": _rf("train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "test_images": _rf("t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "test_labels": _rf("t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}


class IDXFormatError(ValueError):
    """An IDX file is truncated, corrupt or of the wrong kind."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a ``uint8`` array, validating header and length."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise IDXFormatError(f"{path}: cannot read ({e}); the file is corrupt or truncated") from e
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
        raise IDXFormatError(f"{path}: bad magic {raw[:4].hex()} (expected an unsigned-byte IDX file)")
    hdr = 4 + 4 * ndim
    if len(raw) < hdr:
        raise IDXFormatError(f"{path}: truncated header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:hdr])
    need = int(np.prod(dims))
    if len(raw) - hdr != need:
        raise IDXFormatError(
            f"{path}: header says shape {dims} = {need} bytes but the file holds {len(raw) - hdr}; "
            f"it is truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=hdr).reshape(dims)


@register_dataset("mnist", classes=10)
def load_mnist(data_dir: str | os.PathLike | None = None, download: bool = True
               ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return ``{"train": (x, y), "test": (x, y)}`` with ``x`` float32 ``[N, 1, 28, 28]`` in [0, 1]."""
    paths = locate_files("mnist", list(MNIST_FILES.values()), data_dir=data_dir, download=download)
    out = {}
    for split in ("train", "test"):
        imgs = read_idx(paths[MNIST_FILES[f"{split}_images"].name])
        labels = read_idx(paths[MNIST_FILES[f"{split}_labels"].name])
        if imgs.ndim != 3 or labels.ndim != 1 or imgs.shape[0] != labels.shape[0]:
            raise IDXFormatError(f"MNIST {split}: images {imgs.shape} and labels {labels.shape} do not match")
        if labels.size and labels.max() > 9:
            raise IDXFormatError(f"MNIST {split}: label {labels.max()} out of range 0–9")
        x = torch.from_numpy(imgs.astype(np.float32) / 255.0).unsqueeze(1)
        out[split] = (x, torch.from_numpy(labels.astype(np.int64)))
    return out


def load_digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's bundled 1,797 8×8 digits (no files needed), split 1,397 train / 400 test
    with a fixed permutation. ``x`` is float32 ``[N, 1, 8, 8]`` in [0, 1]."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    x, y = x[perm], y[perm]
    return {"train": (x[:-400], y[:-400]), "test": (x[-400:], y[-400:])}


@register_dataset("digits", classes=10)
def _digits(data_dir=None, download=True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return load_digits()


@register_dataset("mnist-2x5", classes=2)
def load_mnist_2x5(data_dir: str | os.PathLike | None = None, download: bool = True
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """MNIST regrouped into 2 classes of 5 digits, ``y // 5`` (Müller et al. 2020's "2x5" sets)."""
    return {k: (x, torch.div(y, 5, rounding_mode="floor")) for k, (x, y) in load_mnist(data_dir, download).items()}
