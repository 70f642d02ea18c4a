"""A user's data in any of the usual shapes → :class:`TensorData` (the engine holds datasets in memory).

Accepted: a tensor (or numpy array) ``x`` with labels ``y``, a ``TensorData``, a map-style
``torch.utils.data.Dataset`` whose items are ``(input, label)`` pairs, or a ``DataLoader`` over such a
dataset. A ``DataLoader`` given for training is used **as given** (:class:`LoaderData`): every epoch
iterates it afresh — its batch size, sampler (shuffling), ``collate_fn``, ``drop_last`` and the dataset's
own transforms all apply — seeded by ``(seed, epoch)`` (torch's, numpy's and Python's random numbers) so a
run resumes exactly; elsewhere (validation, test) it is read once, in its order. A validation part split off
a training loader goes through the dataset's transforms too (read once, seeded): pass ``val=`` to avoid them.

Wrong types are a ``TypeError`` that says what was expected; labels must be integer class ids
(``int64``; other signed integer types are converted; ``uint8``, ``bool``, floats and strings are refused,
since each usually means a mistake upstream — a mask, a one-hot or regression target, unmapped names).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler, Subset

from . import TensorData

__all__ = ["as_tensor_data", "as_labels", "LoaderData", "loader_settings", "split_loader", "seeded"]

_ACCEPTED = "a tensor or numpy array (with labels y), a TensorData, a Dataset of (input, label) pairs or a DataLoader"


def as_labels(y: Any, name: str = "y") -> Tensor:
    """``y`` as an int64 tensor of class ids; a ``TypeError`` naming what was expected otherwise."""
    if isinstance(y, (list, tuple)) and y and isinstance(y[0], str) or \
            isinstance(y, np.ndarray) and y.dtype.kind in "UO":
        raise TypeError(f"{name}: labels must be integer class ids 0..C-1, got strings — map the names to ids first "
                        "(e.g. sklearn.preprocessing.LabelEncoder)")
    if not isinstance(y, (Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"{name}: labels must be a tensor of integer class ids, got {type(y).__name__}")
    try:
        t = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name}: labels must be a tensor of integer class ids ({e})") from None
    if t.dtype in (torch.uint8, torch.bool) or t.is_floating_point() or t.is_complex():
        fix = " (a uint8 tensor indexes as a mask in torch)" if t.dtype == torch.uint8 else ""
        raise TypeError(f"{name}: labels must be integer class ids (torch.int64), got {t.dtype}{fix} — pass "
                        f"{name}.long() if they are class ids")
    if t.ndim != 1:
        raise TypeError(f"{name}: labels must be one class id per example (shape [N]), got shape {tuple(t.shape)}")
    return t.long()


def _pair(item: Any, name: str) -> tuple[Any, Any]:
    if not isinstance(item, (list, tuple)) or len(item) != 2:
        n = len(item) if isinstance(item, (list, tuple)) else 1
        raise ValueError(f"{name}: items (and batches) must be (input, label) pairs, got {n} part(s) — return "
                         "(x, y) from the Dataset (an (x, flag, y) item would train on flag)")
    return item


def _read(loader: DataLoader, name: str) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for batch in loader:
        bx, by = _pair(batch, name)
        xs.append(torch.as_tensor(bx))
        ys.append(as_labels(by, f"{name} labels"))
    if not xs:
        raise ValueError(f"{name}: the DataLoader yielded no batches")
    return torch.cat(xs), torch.cat(ys)


def as_tensor_data(data: Any, y: Any = None, name: str = "data") -> TensorData:
    """``data`` (and ``y``) as one in-memory :class:`TensorData` (a ``DataLoader`` read once, in its order)."""
    if isinstance(data, TensorData):
        return data
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "iufb":
            raise TypeError(f"{name}: a numpy array of numbers was expected, got dtype {data.dtype}")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, (Tensor, DataLoader, Dataset)):
        raise TypeError(f"{name}: expected {_ACCEPTED}, got {type(data).__name__}")
    if isinstance(data, Tensor):
        if y is None:
            raise ValueError(f"{name}: a tensor of inputs needs its labels y")
        y = as_labels(y)
        if data.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: x has {data.shape[0]} examples but y has {y.shape[0]}")
        return TensorData(data, y)
    if y is not None:
        raise ValueError(f"{name}: y is only accepted with a tensor x (a Dataset or DataLoader carries its labels)")
    if isinstance(data, DataLoader):
        return TensorData(*_read(data, name))
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name}: an iterable Dataset has no length; wrap it in a DataLoader") from None
    if n == 0:
        raise ValueError(f"{name}: the Dataset is empty")
    items = [_pair(data[i], name) for i in range(n)]
    return TensorData(torch.stack([torch.as_tensor(it[0]) for it in items]),
                      as_labels([int(it[1]) if not isinstance(it[1], str) else it[1] for it in items],
                                f"{name} labels"))


def loader_settings(loader: DataLoader) -> dict[str, Any]:
    """What a DataLoader does to its data, for the run record."""
    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
    collate = loader.collate_fn
    collate_name = getattr(collate, "__qualname__", type(collate).__name__)
    return {"batch_size": loader.batch_size, "shuffle": isinstance(sampler, RandomSampler),
            "sampler": type(sampler).__name__, "drop_last": loader.drop_last, "num_workers": loader.num_workers,
            "collate_fn": f"{getattr(collate, '__module__', '?')}.{collate_name}",
            "dataset": type(loader.dataset).__name__, "examples": len(loader.dataset)}  # type: ignore[arg-type]


def split_loader(loader: DataLoader, val_fraction: float, seed: int) -> tuple[DataLoader, TensorData]:
    """A seeded ``val_fraction`` of the loader's dataset as the validation set (read once, without the
    loader's batching), and a DataLoader over the rest with the loader's settings (batch size, shuffling,
    ``collate_fn``, ``drop_last``, workers). A custom sampler cannot be carried over: pass ``val=`` then."""
    from . import train_val_split

    sampler = loader.sampler
    if loader.batch_size is None or not isinstance(sampler, (RandomSampler, SequentialSampler)):
        raise ValueError(f"x: a DataLoader with a {type(sampler).__name__ if loader.batch_size else 'batch_sampler'} "
                         "cannot be split into training and validation — pass a validation set as val=")
    n = len(loader.dataset)  # type: ignore[arg-type]
    tr, va = train_val_split(n, val_fraction, seed)
    kw = {"batch_size": loader.batch_size, "shuffle": isinstance(sampler, RandomSampler),
          "collate_fn": loader.collate_fn, "drop_last": loader.drop_last, "num_workers": loader.num_workers,
          "pin_memory": loader.pin_memory, "worker_init_fn": loader.worker_init_fn}
    train = DataLoader(Subset(loader.dataset, tr.tolist()), **kw)
    val = DataLoader(Subset(loader.dataset, va.tolist()), **{**kw, "shuffle": False, "drop_last": False})
    with seeded(seed):  # the dataset's own transforms apply to these examples too (pass val= to avoid them)
        return train, as_tensor_data(val, name="x (validation part)")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's, numpy's and Python's global random numbers fixed by ``seed`` inside, restored after: a loader's
    sampler, its workers' seeds and the dataset's random transforms draw the same numbers on every pass."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


@dataclass
class LoaderData(TensorData):
    """A training set that is a DataLoader used as given: ``x``, ``y`` hold its first pass (for the checks,
    the shapes and the teacher's outputs); :meth:`epoch_data` iterates it again for each epoch."""

    loader: DataLoader | None = None

    @classmethod
    def of(cls, loader: DataLoader, seed: int) -> LoaderData:
        if loader.batch_size is None:
            raise ValueError("x: a DataLoader with a batch_sampler yields batches of varying size; dk.distill uses "
                             "a loader as given and needs its batch_size")
        x, y = cls._pass(loader, seed, 0)
        return cls(x, y, None, loader)

    @staticmethod
    def _pass(loader: DataLoader, seed: int, epoch: int) -> tuple[Tensor, Tensor]:
        with seeded(seed * 100_003 + epoch):
            return _read(loader, "x")

    def epoch_data(self, seed: int, epoch: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """``((x, y), order)`` of one epoch: the loader's batches of this epoch, concatenated, in its order
        (epoch 0 is the first pass, already read with the same seed)."""
        x, y = (self.x, self.y) if epoch == 0 else self._pass(self.loader, seed, epoch)
        if len(y) != len(self.y):
            raise ValueError(f"x: the DataLoader yielded {len(y)} examples in epoch {epoch + 1} but {len(self.y)} "
                             "in the first; it must yield the same number every epoch")
        return (x, y), torch.arange(len(y))
