"""Augmentations written as batched tensor ops (no torchvision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_shift", "random_crop_flip"]


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image ``[B, C, H, W]`` by an independent integer offset in ``[-s, s]²``, zero fill.

    Hinton et al. (2015, §3): the MNIST teacher saw inputs "jittered by up to two pixels in any direction".
    """
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    s = max_shift
    xp = F.pad(x, (s, s, s, s))
    dy = torch.randint(0, 2 * s + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * s + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # [B, H]
    cols = (dx[:, None] + torch.arange(w)[None, :])  # [B, W]
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: Tensor, pad: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """CIFAR-style augmentation: random crop after zero padding by ``pad``, then random horizontal flip."""
    out = random_shift(x, pad, generator)
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    # not in place: with pad=0 ``out`` is ``x`` itself and the caller's batch must not change
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
