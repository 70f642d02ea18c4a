"""The dataset registry: each dataset's file registers its loaders with a decorator (timm style).

    @register_dataset("mnist", classes=10)
    def load_mnist(data_dir=None, download=True) -> {"train": (x, y), "test": (x, y)[, "val": (x, y)]}

**Lazy discovery.** ``import darkknowledge`` imports no dataset module. The first lookup of a name that is not
registered yet (:func:`get_dataset`, :func:`list_datasets`) imports every module of the ``darkknowledge.data``
package once, so each file's decorators run; a new dataset is one new file in ``data/`` and nothing else. A
loader registered by a user (``register_dataset(name, classes=n)(fn)`` or the call form
``register_dataset(name, fn, n)``) is found directly.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from torch import Tensor

__all__ = ["Loader", "register_dataset", "get_dataset", "list_datasets"]

Loader = Callable[..., dict[str, tuple[Tensor, Tensor]]]

_LOADERS: dict[str, Loader] = {}
_CLASSES: dict[str, int] = {}
_discovered = False


def register_dataset(name: str, loader: Loader | None = None, num_classes: int | None = None, *,
                     classes: int | None = None) -> Callable[[Loader], Loader]:
    """Register ``loader(data_dir=None, download=True)`` as dataset ``name`` with ``classes`` classes.

    As a decorator: ``@register_dataset("mnist", classes=10)``; as a call: ``register_dataset(name, loader,
    num_classes)``. Registering another loader under a taken name is an error (the same one again is not)."""
    n = classes if classes is not None else num_classes
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"register_dataset({name!r}): classes must be an integer >= 2, got {n!r}")

    def deco(fn: Loader) -> Loader:
        old = _LOADERS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"dataset {name!r} is already registered as {old.__module__}.{old.__qualname__}")
        _LOADERS[name], _CLASSES[name] = fn, n
        return fn

    if loader is not None:
        deco(loader)
    return deco


def _discover() -> None:
    """Import every module of the data package once (their decorators register the built-in datasets)."""
    global _discovered
    if not _discovered:
        for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
            importlib.import_module(f"{__package__}.{m.name}")
        _discovered = True


def get_dataset(name: str) -> tuple[Loader, int]:
    """The loader of dataset ``name`` and its number of classes; ``KeyError`` naming the known ones."""
    if name not in _LOADERS:
        _discover()
    if name not in _LOADERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _LOADERS[name], _CLASSES[name]


def list_datasets() -> list[str]:
    _discover()
    return sorted(_LOADERS)
