"""Models, registered by name (timm style) or named by import path; model files (safetensors).

``create_model("mlp", hidden=[800, 800])``, ``create_model("mypkg.nets:MyNet", width=64)``;
``save_model`` / ``load_model`` round-trip any of them (the file records the name and arguments).
"""

from __future__ import annotations

from .ctr_mlp import CtrMLP
from .files import ModelFileError, load_model, read_model_meta, save_model
from .mlp import MLP, apply_max_norm
from .registry import create_model, list_models, register_model, resolve_model  # noqa: I001 (registry first)
from .resnet_cifar import ResNetCifar
from .small_cnn import SmallCNN
from .subclass_net import SubclassNet

__all__ = ["register_model", "create_model", "list_models", "resolve_model", "MLP", "SmallCNN", "ResNetCifar",
           "CtrMLP", "SubclassNet", "apply_max_norm", "save_model", "load_model", "read_model_meta",
           "ModelFileError"]
