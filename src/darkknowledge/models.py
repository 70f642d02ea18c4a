"""Models, registered by name (timm style): ``create_model("mlp", hidden=[800, 800])``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .utils import atomic_write_bytes

__all__ = ["register_model", "create_model", "list_models", "MLP", "SmallCNN", "apply_max_norm", "save_model",
           "load_model", "read_model_meta", "ModelFileError"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"model {name!r}: bad arguments {sorted(kwargs)}: {e}") from None


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


@register_model("mlp")
def _mlp(**kw) -> nn.Module:
    return MLP(**kw)


@register_model("small_cnn")
def _small_cnn(**kw) -> nn.Module:
    return SmallCNN(**kw)


# --------------------------------------------------------------------------- model files

class ModelFileError(ValueError):
    """A model file is missing, corrupt or does not describe a registered model."""


def save_model(model: nn.Module, path: str | os.PathLike, name: str, args: dict[str, Any],
               extra: dict[str, Any] | None = None) -> None:
    """Save weights as safetensors with the registry ``name`` and constructor ``args`` in its metadata,
    written atomically."""
    from safetensors.torch import save

    meta = {"darkknowledge_model": json.dumps({"name": name, "args": args}), **{
        k: json.dumps(v) for k, v in (extra or {}).items()}}
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=meta))


def read_model_meta(path: str | os.PathLike) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for bad files
        raise ModelFileError(f"{path}: not a readable safetensors model file ({e})") from e
    if "darkknowledge_model" not in meta:
        raise ModelFileError(f"{path}: no darkknowledge model metadata (was it written by save_model?)")
    return {k: json.loads(v) for k, v in meta.items()}


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (architecture from its metadata)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    spec = read_model_meta(path)["darkknowledge_model"]
    model = create_model(spec["name"], **spec["args"])
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as e:
        raise ModelFileError(f"{path}: weights do not fit model {spec['name']} {spec['args']}: {e}") from e
    return model
