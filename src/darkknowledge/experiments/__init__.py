"""Reproduction experiments, each a thin file over the library, registered by name.

``darkknowledge reproduce NAME`` looks the name up here. An experiment is an
:class:`~darkknowledge.engine.stages.Experiment` (settings, stages, report template) registered with
``register_experiment(Experiment(...))`` and run by :func:`~darkknowledge.engine.stages.run_experiment`; it
writes ``results/<name>/summary.json`` (metric → mean/std/n/values), its run records and ``report.md``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register_experiment", "get_experiment", "list_experiments"]

_EXPERIMENTS: dict[str, Any] = {}
# modules imported lazily so that `import darkknowledge` stays light
_MODULES = {"demo": ".demo", "demo-digits": ".demo", "hinton-mnist": ".hinton_mnist", "hinton-speech": ".hinton_speech",
            "hinton-specialists": ".hinton_specialists",
            "subclass-mnist-2x5": ".subclass_mnist_2x5", "subclass-data-efficiency": ".subclass_data_efficiency",
            "subclass-cifar-2x5": ".subclass_cifar_2x5", "subclass-clickthrough": ".subclass_clickthrough",
            "subclass-ablation": ".subclass_ablation",
            "consistent-teaching": ".consistent_teaching"}


def register_experiment(exp: Any) -> Any:
    """``register_experiment(Experiment(...))``: register the experiment under its name and return it."""
    _EXPERIMENTS[exp.name] = exp
    return exp


def list_experiments() -> list[str]:
    return sorted(set(_MODULES) | set(_EXPERIMENTS))


def _runner(exp: Any) -> Callable[..., Any]:
    """``run(out, data_dir, quick, [seeds], only, progress, pool)`` for an Experiment; its signature says
    which options it takes (the CLI refuses the others)."""
    from ..engine.stages import run_experiment

    def run(out: str | Path = f"results/{exp.name}", data_dir: str | None = None, quick: bool = False,
            seeds: int | None = None, only: str | None = None, progress: bool = True,
            pool: dict[str, Any] | None = None) -> dict[str, Any]:
        return run_experiment(exp, out, data_dir, quick, seeds, only, progress, pool)

    sig = inspect.signature(run)
    drop = {"seeds", "only"} - set(exp.options) | ({"pool"} if "workers" not in exp.options else set())
    run.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name not in drop])
    run.__doc__ = f"Run the {exp.name} experiment (darkknowledge.engine.stages.run_experiment)."
    return run


def get_experiment(name: str) -> Callable[..., Any]:
    """The experiment's ``run(out, data_dir, quick, [seeds], [only], progress, [pool])`` function."""
    if name not in _EXPERIMENTS and name in _MODULES:
        importlib.import_module(_MODULES[name], __name__)
    if name not in _EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(list_experiments())}")
    return _runner(_EXPERIMENTS[name])
