"""A seeded synthetic classification set (Gaussian class clusters) for tests and benchmarks."""

from __future__ import annotations

import torch
from torch import Tensor

from .registry import register_dataset


def make_blobs(n_train: int = 20000, n_test: int = 2000, dim: int = 64, num_classes: int = 10, noise: float = 3.0,
               seed: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """Class ``c`` draws ``x = μ_c + noise · ε`` with ``μ_c ~ N(0, I)``, ``ε ~ N(0, I)``; overlapping enough that
    a classifier cannot be perfect."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(num_classes, dim, generator=g)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = mu[y] + noise * torch.randn(n, dim, generator=g)
        out[split] = (x, y)
    return out


@register_dataset("synthetic", classes=10)
def _synthetic(data_dir=None, download=True) -> dict[str, tuple[Tensor, Tensor]]:
    return make_blobs()
