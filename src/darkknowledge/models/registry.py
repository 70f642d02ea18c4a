"""The model registry (timm style): ``create_model("mlp", hidden=[800, 800])``, and import-path models.

A name is either a registered model (``"mlp"``) or an import path ``"package.module:Class"`` (any
``nn.Module`` subclass or factory), so a config can name a user's own model class and the saved file
records how to rebuild it. Import paths are looked up as ``python -m`` does: the working directory is
importable (for the ``darkknowledge`` console script too); a class defined in a script run as
``__main__`` cannot be imported by another program, so saving one warns (:func:`~.files.save_model`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "resolve_model"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model class or factory under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def resolve_model(name: str) -> Callable[..., nn.Module]:
    """The constructor registered as ``name``, or the object at import path ``"pkg.mod:Attr"``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        mod, _, attr = name.partition(":")
        _cwd_importable()
        try:
            obj = importlib.import_module(mod)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            hint = (f" (looked in the working directory {os.getcwd()} and the installed packages; run from the folder "
                    f"that holds {mod.split('.')[0]}, or add it to PYTHONPATH)") if isinstance(e, ImportError) else ""
            raise KeyError(f"model {name!r}: cannot import it ({e}){hint}") from None
        if not callable(obj):
            raise KeyError(f"model {name!r}: {attr} is not a class or function")
        return obj
    raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())} "
                   "(or give an import path 'package.module:Class')")


def _cwd_importable() -> None:
    """The working directory on the import path, as ``python -m`` has it (a console script has its own folder
    there instead): appended, so an installed package of the same name still wins."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or ".") == cwd for p in sys.path):
        sys.path.append(cwd)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as ``name`` (or at import path ``"pkg.mod:Class"``) with ``kwargs``; the
    model gets ``init_name`` and ``init_args`` attributes (unless it sets ``init_args`` itself)."""
    fn = resolve_model(name)
    try:
        model = fn(**kwargs)
    except TypeError as e:
        raise ValueError(f"model {name!r}: bad arguments {sorted(kwargs)}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {name!r} built a {type(model).__name__}, not a torch.nn.Module")
    # how to build it again: a model built here and later given to train(student=...) (e.g. a specialist made
    # from a generalist) is saved under this name and arguments, so that load_model can rebuild it
    if getattr(model, "init_args", None) is None:
        model.init_name, model.init_args = name, dict(kwargs)
    return model
