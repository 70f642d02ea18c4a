"""``labels``: plain training on the labels."""

from __future__ import annotations

from ..losses import hard_loss
from .base import Method, register_method

__all__ = ["LabelsOnly"]


@register_method("labels")
class LabelsOnly(Method):
    """Cross-entropy with the labels at T = 1: ``{"hard": CE(y, z)}`` (batch mean)."""

    mixed_labels = True

    def forward(self, x, y, idx=None, *, epoch=0, step=0):
        logits = self.student(x)
        return logits, {"hard": hard_loss(logits, y)}
