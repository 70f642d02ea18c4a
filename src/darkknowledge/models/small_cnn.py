"""A small convolutional net (the subclass-distillation demo's teacher)."""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model

__all__ = ["SmallCNN"]


@register_model("small_cnn")
class SmallCNN(nn.Module):
    """Conv(w)-pool-Conv(2w)-pool-dropout-FC(hidden)-dropout-FC: ``width`` w = 32 and ``hidden`` = 128 by default (the
    subclass-distillation demo's teacher); smaller ``width`` / ``hidden`` give the capacity sweep of
    ``reproduce hinton-specialists`` its small generalists."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 dropout: float = 0.5, width: int = 32, max_norm: float | None = None, hidden: int = 128):
        super().__init__()
        self.num_classes, self.max_norm = num_classes, max_norm
        s = ((image_size - 2) // 2 - 2) // 2
        if s < 1:
            raise ValueError(f"SmallCNN needs image_size >= 10, got {image_size}")
        if width < 1 or hidden < 1:
            raise ValueError(f"SmallCNN needs width >= 1 and hidden >= 1, got width={width}, hidden={hidden}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * s * s, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden
        self.image_size, self.in_channels = image_size, in_channels

    def forward_features(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            x = x.view(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))
