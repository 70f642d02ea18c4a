"""The fully connected ReLU net of Hinton et al.'s MNIST experiments, with dropout and max-norm."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .registry import register_model

__all__ = ["MLP", "apply_max_norm"]


@register_model("mlp")
class MLP(nn.Module):
    """Fully connected ReLU net: ``in → hidden[0] → … → num_classes``.

    ``input_dropout`` and ``dropout`` (hidden layers) as in Hinton et al. (2012)'s MNIST nets; the
    optional ``max_norm`` bounds the L2 norm of each unit's incoming weight vector (applied after
    every optimiser step by :func:`apply_max_norm`).
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (800, 800), num_classes: int = 10,
                 dropout: float = 0.0, input_dropout: float = 0.0, max_norm: float | None = None):
        super().__init__()
        if num_classes < 1 or in_features < 1 or any(h < 1 for h in hidden):
            raise ValueError("layer sizes must be positive")
        self.in_features, self.num_classes, self.max_norm = in_features, num_classes, max_norm
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)
        self.feature_dim = prev

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def apply_max_norm(model: nn.Module) -> None:
    """Rescale each ``nn.Linear`` row (a unit's incoming weights) to L2 norm ≤ ``model.max_norm``."""
    c = getattr(model, "max_norm", None)
    if not c:
        return
    for m in model.modules():
        if isinstance(m, nn.Linear):
            norms = m.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
            m.weight.mul_(torch.clamp(c / norms, max=1.0))
