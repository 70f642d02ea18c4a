"""Embedding + MLP for Criteo-style click-through rows (the subclass paper's clickthrough experiment)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.criteo import NUM_CAT
from .registry import register_model

__all__ = ["CtrMLP"]


@register_model("ctr_mlp")
class CtrMLP(nn.Module):
    """Embedding + MLP for Criteo-style rows: input ``[N, num_dense + num_cat]`` = dense values then
    categorical bucket ids (floats holding integers in ``[0, num_buckets)``; 0 = missing)."""

    def __init__(self, num_dense: int = 26, num_cat: int = NUM_CAT, num_buckets: int = 16384, emb_dim: int = 8,
                 hidden: tuple[int, ...] | list[int] = (256, 256), num_classes: int = 2, dropout: float = 0.0):
        super().__init__()
        self.num_dense, self.num_cat, self.num_buckets, self.num_classes = num_dense, num_cat, num_buckets, num_classes
        self.emb = nn.Embedding(num_cat * num_buckets, emb_dim)
        nn.init.normal_(self.emb.weight, std=0.05)
        self.register_buffer("offsets", torch.arange(num_cat) * num_buckets, persistent=False)
        layers: list[nn.Module] = []
        prev = num_dense + num_cat * emb_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        self.mlp = nn.Sequential(*layers)
        self.feature_dim = prev
        self.head = nn.Linear(prev, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        dense = x[:, :self.num_dense]
        ids = x[:, self.num_dense:self.num_dense + self.num_cat].long() + self.offsets
        e = self.emb(ids).flatten(1)
        return self.mlp(torch.cat([dense, e], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))
