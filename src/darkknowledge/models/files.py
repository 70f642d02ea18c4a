"""Model files: safetensors weights with the model's name and constructor arguments in the metadata,
written atomically and byte-deterministically (metadata keys in a fixed order), so equal weights give
equal bytes and a sha256 identifies a model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..utils import atomic_write_bytes
from .registry import create_model

__all__ = ["ModelFileError", "save_model", "read_model_meta", "load_model"]

_KEY = "darkknowledge"
_WARNED: set[str] = set()
log = logging.getLogger(__name__)


class ModelFileError(ValueError):
    """A model file is missing, corrupt or does not describe a registered model."""


def save_model(model: nn.Module, path: str | os.PathLike, name: str, args: dict[str, Any],
               extra: dict[str, Any] | None = None) -> None:
    """Save weights as safetensors with the registry ``name`` and constructor ``args`` in its metadata,
    written atomically."""
    from safetensors.torch import save

    if name.startswith("__main__:") and name not in _WARNED:
        _WARNED.add(name)
        log.warning("model %s is defined in the script being run, so the saved file names it by %r, which no other "
                    "program can import: load_model will fail elsewhere — move the class into a module (e.g. "
                    "mymodels.py beside the script) and import it from there", name.partition(":")[2], name)
    # one metadata entry (safetensors keeps metadata in a hash map, whose order varies between processes)
    info = {"darkknowledge_model": {"name": name, "args": args}, **(extra or {})}
    meta = {_KEY: json.dumps(info, sort_keys=True)}
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=meta))


def read_model_meta(path: str | os.PathLike) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for bad files
        raise ModelFileError(f"{path}: not a readable safetensors model file ({e})") from e
    try:
        if _KEY in meta:
            info = json.loads(meta[_KEY])
        else:  # files written before the single-entry format
            info = {k: json.loads(v) for k, v in meta.items()}
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: corrupt darkknowledge metadata ({e})") from e
    if not isinstance(info, dict) or "darkknowledge_model" not in info:
        raise ModelFileError(f"{path}: no darkknowledge model metadata (was it written by save_model?)")
    return info


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (architecture from its metadata)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    spec = read_model_meta(path)["darkknowledge_model"]
    try:
        model = create_model(spec["name"], **spec["args"])
    except (ValueError, KeyError) as e:  # e.g. a module passed to train(student=...) without ``init_args``
        if spec["name"].startswith("__main__:"):
            raise ModelFileError(f"{path}: the model {spec['name']!r} was defined in the script that trained it and "
                                 "cannot be imported here — move the class into a module, import it from there, "
                                 "and save the model again") from None
        e = e.args[0] if isinstance(e, KeyError) and e.args else e
        hint = ("; a module given as train(student=...) is saved with its `init_args` attribute — set it to the "
                "constructor's keyword arguments") if ":" in spec["name"] else ""
        raise ModelFileError(f"{path}: cannot rebuild the model: {e}{hint}") from None
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as e:
        raise ModelFileError(f"{path}: weights do not fit model {spec['name']} {spec['args']}: {e}") from e
    return model
