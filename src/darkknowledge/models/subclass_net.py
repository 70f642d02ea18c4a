"""A backbone with a subclass head: ``n·s`` outputs read as subclass logits (Müller et al. 2020 §2)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..subclass import subclass_to_class_logits
from .registry import create_model, register_model

__all__ = ["SubclassNet"]


@register_model("subclass")
class SubclassNet(nn.Module):
    """Any registered backbone with ``n·s`` outputs read as subclass logits (§2).

    ``forward(x)`` returns the ``n`` class logits (logsumexp grouping), so every class-level tool
    (metrics, conventional distillation, agreement) works unchanged; ``subclass_logits(x)`` returns the
    ``n·s`` subclass logits and ``forward_features(x)`` the backbone's penultimate features.
    Registered as model ``"subclass"``: ``create_model("subclass", backbone="small_cnn", subclasses=5,
    num_classes=2, in_channels=1)``.
    """

    def __init__(self, backbone: str = "mlp", num_classes: int = 2, subclasses: int = 5, **backbone_args: Any):
        super().__init__()
        if num_classes < 1 or subclasses < 1:
            raise ValueError("num_classes and subclasses must be >= 1")
        self.num_classes, self.subclasses = num_classes, subclasses
        self.backbone = create_model(backbone, num_classes=num_classes * subclasses, **backbone_args)
        self.feature_dim = getattr(self.backbone, "feature_dim", None)

    def subclass_logits(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        return subclass_to_class_logits(self.backbone(x), self.num_classes)
