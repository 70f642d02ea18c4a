"""A small convolutional net (the subclass-distillation demo's teacher)."""

from __future__ import annotations

from torch import Tensor, nn

from .registry import register_model

__all__ = ["SmallCNN"]


@register_model("small_cnn")
class SmallCNN(nn.Module):
    """Conv32-pool-Conv64-pool-dropout-FC128-dropout-FC (the subclass-distillation demo's teacher)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 dropout: float = 0.5, width: int = 32, max_norm: float | None = None):
        super().__init__()
        self.num_classes, self.max_norm = num_classes, max_norm
        s = ((image_size - 2) // 2 - 2) // 2
        if s < 1:
            raise ValueError(f"SmallCNN needs image_size >= 10, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * s * s, 128), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(128, num_classes)
        self.feature_dim = 128
        self.image_size, self.in_channels = image_size, in_channels

    def forward_features(self, x: Tensor) -> Tensor:
        if x.ndim == 2:
            x = x.view(x.shape[0], self.in_channels, self.image_size, self.image_size)
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))
