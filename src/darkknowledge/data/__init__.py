"""Datasets: loaders, a name registry, and seeded train/validation splits.

A dataset is held in memory as tensors (all of ours fit); :class:`TensorData` carries ``x``, ``y``
and the ``index`` of every example in its source split, which cached teachers look up.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .common import ENV_VAR, ChecksumError, DatasetNotFoundError, RemoteFile, candidate_dirs, locate_files
from .mnist import IDXFormatError, load_digits, load_mnist, read_idx
from .synthetic import make_blobs

__all__ = [
    "ENV_VAR", "ChecksumError", "DatasetNotFoundError", "IDXFormatError", "RemoteFile", "TensorData",
    "Splits", "candidate_dirs", "locate_files", "read_idx", "load_mnist", "load_digits", "register_dataset",
    "load_dataset", "list_datasets", "train_val_split",
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


def _coarse_2x5(loader: Callable[..., dict[str, tuple[Tensor, Tensor]]]) -> Callable[..., dict[str, tuple]]:
    """A 10-class loader regrouped into 2 classes of 5 (``y // 5``; Müller et al. 2020's "2x5" sets)."""
    def load(data_dir=None, download=True):
        return {k: (x, torch.div(y, 5, rounding_mode="floor")) for k, (x, y) in loader(data_dir, download).items()}
    return load


def _cifar(coarse: bool) -> Callable[..., dict[str, tuple[Tensor, Tensor]]]:
    def load(data_dir=None, download=True):
        from .cifar import load_cifar10_normalized

        return load_cifar10_normalized(data_dir, download, coarse=coarse)
    return load


def _clickthrough(data_dir=None, download=True):
    from .clickthrough import load_clickthrough

    return load_clickthrough()


def _fsdd_frames(split: str, train_share: float | None = None) -> Callable[..., dict[str, tuple[Tensor, Tensor]]]:
    def load(data_dir=None, download=True):
        from .fsdd import load_fsdd_frames

        return load_fsdd_frames(data_dir, download, split=split, train_share=train_share)
    return load


def _omniglot(data_dir=None, download=True):
    from .omniglot import load_omniglot

    return load_omniglot(data_dir, download)


def _criteo_sample(data_dir=None):
    from .criteo import load_criteo_sample_split

    return load_criteo_sample_split(data_dir)


#: the built-in datasets; every dataset an experiment's run record names is here, so the CLI can load it
_DATASETS: dict[str, Callable[..., dict[str, tuple[Tensor, Tensor]]]] = {
    "mnist": load_mnist,
    "digits": lambda data_dir=None, download=True: load_digits(),
    "synthetic": lambda data_dir=None, download=True: make_blobs(),
    "mnist-2x5": _coarse_2x5(load_mnist),
    "cifar10-jpeg": _cifar(False),
    "cifar10-jpeg-2x5": _cifar(True),
    "synthetic-clickthrough": _clickthrough,
    "criteo-sample": lambda data_dir=None, download=True: _criteo_sample(data_dir),
    "fsdd-frames": _fsdd_frames("official"),
    "fsdd-frames-speakers": _fsdd_frames("speaker"),
    "fsdd-frames-3pct": _fsdd_frames("official", train_share=0.03),
    "omniglot": _omniglot,
}
_NUM_CLASSES = {"mnist": 10, "digits": 10, "synthetic": 10, "mnist-2x5": 2, "cifar10-jpeg": 10,
                "cifar10-jpeg-2x5": 2, "synthetic-clickthrough": 2, "criteo-sample": 2, "fsdd-frames": 30,
                "fsdd-frames-speakers": 30, "fsdd-frames-3pct": 30, "omniglot": 242}


def register_dataset(name: str, loader: Callable[..., dict[str, tuple[Tensor, Tensor]]], num_classes: int) -> None:
    """Register ``loader(data_dir=None, download=True) -> {"train": (x, y), "test": (x, y)}``."""
    _DATASETS[name] = loader
    _NUM_CLASSES[name] = num_classes


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


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
    return _DATASETS[name](data_dir=data_dir, download=download)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, val_size: int | float = 5000,
                 split_seed: int = 0, download: bool = True) -> Splits:
    """Load dataset ``name`` and carve a seeded validation split out of its training set."""
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    raw = _load_raw(name, None if data_dir is None else str(data_dir), download)
    xtr, ytr = raw["train"]
    xte, yte = raw["test"]
    if len(ytr) == 0 or len(yte) == 0:
        raise ValueError(f"dataset {name!r} is empty")
    if "val" in raw:  # a loader that carves its own validation split (fsdd-frames: by recording, not by frame)
        return Splits(TensorData(xtr, ytr), TensorData(*raw["val"]), TensorData(xte, yte), _NUM_CLASSES[name], name)
    full = TensorData(xtr, ytr)
    tr, va = train_val_split(len(full), val_size, split_seed)
    return Splits(full.subset(tr), full.subset(va), TensorData(xte, yte), _NUM_CLASSES[name], name)
