"""The runs of :mod:`.hinton_specialists` that need more than a config — a specialist built from its generalist's
weights, a student distilled from the generalist + specialists combination — as ``Job.fn`` functions for the
pool (cached and resumable like :func:`~darkknowledge.engine.jobs.run_cached`), and the data/model loaders
they share with the experiment."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..config import validate
from ..specialists.teacher import SpecialistCombination
from .runner import finished_record, run_cached

# --------------------------------------------------------------------------- data and models


@functools.lru_cache(maxsize=4)
def _splits_cached(data_json: str):
    from ..config import DataConfig
    from ..engine import prepare_data

    return prepare_data(validate(json.loads(data_json), DataConfig))


def data_splits(data: dict[str, Any]):
    """The engine's splits of a config's ``data`` section (exactly what the generalist trained on), memoised."""
    return _splits_cached(json.dumps(data, sort_keys=True))


def class_names(dataset: str, data_dir: str | None) -> list[str]:
    if dataset.startswith("cifar10"):
        from ..data.cifar import CIFAR10_CLASSES

        return list(CIFAR10_CLASSES)
    if dataset == "omniglot":
        from ..data.omniglot import omniglot_class_names

        return omniglot_class_names(data_dir)
    raise KeyError(dataset)


def _best(cfg: dict[str, Any]) -> Path:
    return Path(cfg["out_dir"]) / "best.safetensors"


def _load_generalist(gen_cfg: dict[str, Any]) -> nn.Module:
    from ..models import load_model

    path = _best(gen_cfg)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the generalist's weights are missing (the experiment retrains them "
                                "before any specialist needs them; rerun it)")
    return load_model(path).eval()


def _load_specialist(generalist: nn.Module, spec_cfg: dict[str, Any], classes: list[int],
                     shift: float | None = None) -> nn.Module:
    """The trained specialist: the generalist's architecture with its output layer over ``classes`` + dustbin,
    the weights selected on validation, and (``shift``) the dustbin bias correction."""
    from safetensors.torch import load_file

    from ..specialists import apply_dustbin_shift, make_specialist

    spec = make_specialist(generalist, classes)
    spec.load_state_dict(load_file(str(_best(spec_cfg))))
    spec.eval()
    if shift is not None:
        apply_dustbin_shift(spec, shift)
    return spec


# --------------------------------------------------------------------------- job functions (run in pool workers)


def train_specialist(config: dict[str, Any], progress: bool = False, need_weights: bool = False, *,
                     generalist: dict[str, Any], classes: list[int]) -> dict[str, Any]:
    """One specialist run (a ``Job.fn``): rebuilt from the generalist's config and the special classes, cached and
    resumable like :func:`~darkknowledge.engine.jobs.run_cached`."""
    from ..specialists import make_specialist, specialist_splits

    cfg = validate(config)
    rec = finished_record(cfg)
    if rec is not None and (not need_weights or _best(config).exists()):
        return rec
    splits = data_splits(generalist["data"])
    spec = make_specialist(_load_generalist(generalist), classes)
    # named after the source dataset, so the record names a registered dataset (the classes are in the run's name)
    ssplits = specialist_splits(splits, classes, seed=cfg.seed, name=splits.name)
    return run_cached(cfg, splits=ssplits, student=spec, progress=progress, need_weights=need_weights)


def train_distilled(config: dict[str, Any], progress: bool = False, need_weights: bool = False, *,
                    generalist: dict[str, Any], specialists: list[dict[str, Any]], classes: list[list[int]],
                    shifts: list[float], table: str, table_sha256: str, top_n: int = 1) -> dict[str, Any]:
    """One network of the generalist's architecture distilled from the combination (a ``Job.fn``): the Eq. 5
    distributions on the training set are read from ``table`` (checked against ``table_sha256``)."""
    from safetensors.torch import load_file

    cfg = validate(config)
    rec = finished_record(cfg)
    if rec is not None and (not need_weights or _best(config).exists()):
        return rec
    log_q = load_file(table)["log_q"]
    if _tensor_sha(log_q) != table_sha256:
        raise ValueError(f"{table}: the stored combination differs from the one this run was configured with")
    gen = _load_generalist(generalist)
    specs = [_load_specialist(gen, sc, cl, sh) for sc, cl, sh in zip(specialists, classes, shifts)]
    teacher = SpecialistCombination(gen, specs, classes, top_n=top_n, table=log_q)
    return run_cached(cfg, splits=data_splits(config["data"]), teacher=teacher, progress=progress,
                      need_weights=need_weights)


def _tensor_sha(t: Tensor) -> str:
    t = t.detach().contiguous().cpu()
    return hashlib.sha256(str((tuple(t.shape), str(t.dtype))).encode() + t.numpy().tobytes()).hexdigest()
