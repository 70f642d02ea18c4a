"""A user's data in any of the usual shapes → :class:`TensorData` (the engine holds datasets in memory).

Accepted: a tensor ``x`` (with labels ``y``), a ``TensorData``, a map-style ``torch.utils.data.Dataset``
whose items are ``(x, y)`` pairs, or a ``DataLoader`` over such a dataset (read once, in its order).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from . import TensorData

__all__ = ["as_tensor_data"]


def as_tensor_data(data: Any, y: Tensor | None = None, name: str = "data") -> TensorData:
    """``data`` (and ``y``) as one in-memory :class:`TensorData`; a clear ``ValueError`` for anything else."""
    if isinstance(data, TensorData):
        return data
    if not isinstance(data, (Tensor, DataLoader, Dataset)):
        raise ValueError(f"{name}: expected a tensor, a Dataset or a DataLoader, got {type(data).__name__}")
    if isinstance(data, Tensor):
        if y is None:
            raise ValueError(f"{name}: a tensor of inputs needs its labels y")
        y = torch.as_tensor(y)
        if data.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: x has {data.shape[0]} examples but y has {y.shape[0]}")
        return TensorData(data, y)
    if y is not None:
        raise ValueError(f"{name}: y is only accepted with a tensor x (a Dataset or DataLoader carries its labels)")
    if isinstance(data, DataLoader):
        xs, ys = [], []
        for batch in data:
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise ValueError(f"{name}: a DataLoader must yield (inputs, labels) batches")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise ValueError(f"{name}: the DataLoader yielded no batches")
        return TensorData(torch.cat(xs), torch.cat(ys))
    if isinstance(data, Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"{name}: an iterable Dataset has no length; wrap it in a DataLoader") from None
        if n == 0:
            raise ValueError(f"{name}: the Dataset is empty")
        items = [data[i] for i in range(n)]
        if not all(isinstance(it, (list, tuple)) and len(it) >= 2 for it in items[:1]):
            raise ValueError(f"{name}: Dataset items must be (input, label) pairs")
        return TensorData(torch.stack([torch.as_tensor(it[0]) for it in items]),
                          torch.as_tensor([int(it[1]) for it in items]))
