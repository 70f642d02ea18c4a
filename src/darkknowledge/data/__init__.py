"""Datasets: one file per dataset, each registering its loaders by name (:mod:`.registry`), and seeded
train/validation splits.

A dataset is held in memory as tensors (all of ours fit); :class:`TensorData` carries ``x``, ``y``
and the ``index`` of every example in its source split, which cached teachers look up.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .common import ENV_VAR, ChecksumError, DatasetNotFoundError, RemoteFile, candidate_dirs, locate_files
from .mnist import IDXFormatError, load_digits, load_mnist, read_idx
from .registry import get_dataset, list_datasets, register_dataset

if TYPE_CHECKING:
    from ..config import DataConfig

__all__ = [
    "ENV_VAR", "ChecksumError", "DatasetNotFoundError", "IDXFormatError", "RemoteFile", "TensorData",
    "Splits", "candidate_dirs", "locate_files", "read_idx", "load_mnist", "load_digits", "register_dataset",
    "load_dataset", "load_splits", "list_datasets", "train_val_split",
]


@dataclass
class TensorData:
    """An in-memory dataset: inputs ``x``, labels ``y`` and source indices ``index``."""

    x: Tensor
    y: Tensor
    index: Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} examples but y has {self.y.shape[0]}")
        if self.index is None:
            self.index = torch.arange(self.x.shape[0])

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: Tensor) -> TensorData:
        return TensorData(self.x[idx], self.y[idx], self.index[idx])


@dataclass
class Splits:
    train: TensorData
    val: TensorData
    test: TensorData
    num_classes: int
    name: str
    class_names: list[str] | None = None


def train_val_split(n: int, val_size: int | float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded split of ``range(n)`` into train and validation indices (both sorted)."""
    n_val = int(round(val_size * n)) if isinstance(val_size, float) and val_size < 1 else int(val_size)
    if not 0 <= n_val < n:
        raise ValueError(f"validation size {val_size} leaves no training data out of {n} examples")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


@functools.lru_cache(maxsize=4)
def _load_raw(name: str, data_dir: str | None, download: bool) -> dict[str, tuple[Tensor, Tensor]]:
    """Loaded arrays, memoised per process (callers must not modify them in place)."""
    return get_dataset(name)[0](data_dir=data_dir, download=download)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, val_size: int | float = 5000,
                 split_seed: int = 0, download: bool = True) -> Splits:
    """Load dataset ``name`` and carve a seeded validation split out of its training set."""
    n_cls = get_dataset(name)[1]  # KeyError naming the known datasets
    raw = _load_raw(name, None if data_dir is None else str(data_dir), download)
    xtr, ytr = raw["train"]
    xte, yte = raw["test"]
    if len(ytr) == 0 or len(yte) == 0:
        raise ValueError(f"dataset {name!r} is empty")
    if "val" in raw:  # a loader that carves its own validation split (fsdd-frames: by recording, not by frame)
        return Splits(TensorData(xtr, ytr), TensorData(*raw["val"]), TensorData(xte, yte), n_cls, name)
    full = TensorData(xtr, ytr)
    tr, va = train_val_split(len(full), val_size, split_seed)
    return Splits(full.subset(tr), full.subset(va), TensorData(xte, yte), n_cls, name)


def load_splits(cfg: DataConfig, download: bool = True) -> Splits:
    """The splits a config's ``data`` section names: a built-in dataset (downloaded only when ``download``),
    or the user's files of ``cfg.format`` (:mod:`.files`); validation carved from training, seeded."""
    if cfg.format is None:
        return load_dataset(cfg.dataset, cfg.data_dir, cfg.val_size, cfg.split_seed, download=download)
    from .files import load_files

    raw, names = load_files(cfg.format, cfg.files, cfg.sha256, cfg.label_column, tuple(cfg.arrays), cfg.image_size,
                            cfg.channels)
    (xtr, ytr), (xte, yte) = raw["train"], raw["test"]
    n_cls = len(names) if names else int(ytr.max()) + 1  # every class occurs in training (files.load_files checks)
    full = TensorData(xtr, ytr)
    tr, va = train_val_split(len(full), cfg.val_size, cfg.split_seed)
    return Splits(full.subset(tr), full.subset(va), TensorData(xte, yte), n_cls, cfg.dataset, names)
