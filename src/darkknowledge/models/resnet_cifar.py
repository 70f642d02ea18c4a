"""ResNet-(6n+2) for 32×32 images (He et al. 2016 §4.2); ResNet-20 is ``n = 3, width = 16``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.augment import build_augment
from .registry import register_model

__all__ = ["ResNetCifar"]


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


@register_model("resnet_cifar")
class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32×32 images (He et al. 2016 §4.2): conv3×3 → 3 stages of ``n`` basic blocks
    with ``width, 2·width, 4·width`` channels (stride 2 between stages) → global average pool → linear.
    ``n = 3, width = 16`` is ResNet-20. Shortcuts that change shape use a 1×1 convolution.
    ``augment=True``: random crop (zero padding 4) + horizontal flip of each batch in training mode (the
    :mod:`darkknowledge.data.augment` pipeline, seeded from torch's global generator, which the engine seeds and
    checkpoints; ``data.augment`` in a config does the same outside the model, for student and teacher alike)."""

    def __init__(self, num_classes: int = 10, n: int = 3, width: int = 16, in_channels: int = 3,
                 augment: bool = False):
        super().__init__()
        self.num_classes, self.augment = num_classes, augment
        self._crop_flip = build_augment([{"name": "crop", "padding": 4}, {"name": "hflip"}], (in_channels, 32, 32)) \
            if augment else None
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        blocks, cin = [], width
        for stage, w in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(_Block(cin, w, 2 if stage > 0 and i == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = cin
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        if self.training and self.augment:
            x, _ = self._crop_flip(x, None, seed=int(torch.randint(0, 2**62, (1,))))
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))
