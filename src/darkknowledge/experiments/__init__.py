"""Reproduction experiments, each a thin config over the library, registered by name.

``darkknowledge reproduce NAME`` looks the name up here. Each experiment writes
``results/<name>/summary.json`` (metric → mean/std/n/values), its run records and ``report.md``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["register_experiment", "get_experiment", "list_experiments"]

_EXPERIMENTS: dict[str, Callable[..., Any]] = {}
# modules imported lazily so that `import darkknowledge` stays light
_MODULES = {"demo": ".demo", "demo-digits": ".demo", "hinton-mnist": ".hinton_mnist", "hinton-speech": ".hinton_speech",
            "hinton-specialists": ".hinton_specialists",
            "subclass-mnist-2x5": ".subclass_mnist_2x5", "subclass-data-efficiency": ".subclass_data_efficiency",
            "subclass-cifar-2x5": ".subclass_cifar_2x5", "subclass-clickthrough": ".subclass_clickthrough",
            "subclass-ablation": ".subclass_ablation"}


def register_experiment(name: str, module: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _EXPERIMENTS[name] = fn
        return fn

    return deco


def list_experiments() -> list[str]:
    return sorted(set(_MODULES) | set(_EXPERIMENTS))


def get_experiment(name: str) -> Callable[..., Any]:
    """The experiment's ``run`` function, wrapped so that a failing run leaves its results folder's
    summary, report and figures as they were (:class:`~.runner.preserve_results`)."""
    if name not in _EXPERIMENTS and name in _MODULES:
        importlib.import_module(_MODULES[name], __name__)
    if name not in _EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(list_experiments())}")
    fn = _EXPERIMENTS[name]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from .runner import preserve_results

        bound = inspect.signature(fn).bind(*args, **kwargs)
        bound.apply_defaults()
        with preserve_results(bound.arguments["out"]):
            return fn(*args, **kwargs)

    return run
