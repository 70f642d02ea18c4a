"""The runs of :mod:`.hinton_specialists` that need more than a config, as registered job kinds of the pool
(:func:`~darkknowledge.engine.jobs.register_job_kind`; cached and resumable like
:func:`~darkknowledge.engine.jobs.run_cached`):

* ``"specialist"`` — a specialist initialised from its generalist's weights
  (:func:`~darkknowledge.specialists.make_specialist`: output layer over its classes + a dustbin), trained on
  50/50 data (:func:`~darkknowledge.specialists.specialist_splits`);
* ``"specialist-distilled"`` — one network distilled from the generalist + specialists combination
  (:class:`~darkknowledge.specialists.SpecialistCombination`), whose Eq. 5 distributions on the training set are
  read from a table checked against its digest;

and the loaders they share with the experiment (a config's splits, a trained generalist or specialist)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..config import validate
from ..engine.jobs import finished_record, register_job_kind, run_cached
from ..specialists import SpecialistCombination, apply_dustbin_shift, make_specialist, specialist_splits

__all__ = ["SPECIALIST", "DISTILLED", "train_specialist", "train_distilled", "data_splits", "load_generalist",
           "load_specialist", "tensor_sha256"]

SPECIALIST = "specialist"
DISTILLED = "specialist-distilled"


@functools.lru_cache(maxsize=4)
def _splits_cached(data_json: str):
    from ..config import DataConfig
    from ..engine import prepare_data

    return prepare_data(validate(json.loads(data_json), DataConfig))


def data_splits(data: dict[str, Any]):
    """The engine's splits of a config's ``data`` section (exactly what the generalist trained on), memoised."""
    return _splits_cached(json.dumps(data, sort_keys=True))


def _best(cfg: dict[str, Any]) -> Path:
    return Path(cfg["out_dir"]) / "best.safetensors"


def load_generalist(gen_cfg: dict[str, Any]) -> nn.Module:
    from ..models import load_model

    path = _best(gen_cfg)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the generalist's weights are missing (the experiment retrains them "
                                "before any specialist needs them; rerun it)")
    return load_model(path).eval()


def load_specialist(generalist: nn.Module, spec_cfg: dict[str, Any], classes: list[int],
                    shift: float | None = None) -> nn.Module:
    """The trained specialist: the generalist's architecture with its output layer over ``classes`` + dustbin,
    the weights selected on validation, and (``shift``) the dustbin bias correction."""
    from safetensors.torch import load_file

    spec = make_specialist(generalist, classes)
    spec.load_state_dict(load_file(str(_best(spec_cfg))))
    spec.eval()
    if shift is not None:
        apply_dustbin_shift(spec, shift)
    return spec


def tensor_sha256(t: Tensor) -> str:
    """sha256 of a tensor's shape, dtype and bytes (a stored table is checked against it)."""
    t = t.detach().contiguous().cpu()
    return hashlib.sha256(str((tuple(t.shape), str(t.dtype))).encode() + t.numpy().tobytes()).hexdigest()


def _finished(config: dict[str, Any], need_weights: bool) -> dict[str, Any] | None:
    rec = finished_record(config)
    return rec if rec is not None and (not need_weights or _best(config).exists()) else None


@register_job_kind(SPECIALIST)
def train_specialist(config: dict[str, Any], *, progress: bool = False, need_weights: bool = False,
                     generalist: dict[str, Any], classes: list[int]) -> dict[str, Any]:
    """One specialist run: built from the generalist's weights (``generalist``: its config; trained already)
    and the special ``classes``."""
    rec = _finished(config, need_weights)
    if rec is not None:
        return rec
    cfg = validate(config)
    splits = data_splits(generalist["data"])
    spec = make_specialist(load_generalist(generalist), classes)
    # named after the source dataset, so the record names a registered dataset (the classes are in the run's name)
    ssplits = specialist_splits(splits, classes, seed=cfg.seed, name=splits.name)
    return run_cached(cfg, splits=ssplits, student=spec, progress=progress, need_weights=need_weights)


@register_job_kind(DISTILLED)
def train_distilled(config: dict[str, Any], *, progress: bool = False, need_weights: bool = False,
                    generalist: dict[str, Any], specialists: list[dict[str, Any]], classes: list[list[int]],
                    shifts: list[float], table: str, table_sha256: str, top_n: int = 1,
                    consistent: bool = False) -> dict[str, Any]:
    """One network of the generalist's architecture distilled from the combination: the Eq. 5 distributions on
    the training set are read from ``table`` (checked against ``table_sha256``); validation and test targets are
    the live combination of the generalist and the specialists (``specialists``: their configs), each with its
    dustbin ``shifts``. ``consistent``: no table — the live combination answers every (augmented) training batch."""
    from safetensors.torch import load_file

    rec = _finished(config, need_weights)
    if rec is not None:
        return rec
    log_q = load_file(table)["log_q"]
    if tensor_sha256(log_q) != table_sha256:
        raise ValueError(f"{table}: the stored combination differs from the one this run was configured with")
    if consistent:
        log_q = None
    gen = load_generalist(generalist)
    specs = [load_specialist(gen, sc, cl, sh) for sc, cl, sh in zip(specialists, classes, shifts)]
    teacher = SpecialistCombination(gen, specs, classes, top_n=top_n, table=log_q)
    return run_cached(validate(config), splits=data_splits(config["data"]), teacher=teacher, progress=progress,
                      need_weights=need_weights)
