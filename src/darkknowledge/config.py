"""Typed run configuration: YAML files validated by pydantic, with ``key=value`` overrides.

Unknown keys and wrong types are errors that name the key (``ConfigError``).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

__all__ = ["ConfigError", "ModelConfig", "DataConfig", "OptimConfig", "DistillConfig", "KDArgs", "TrainConfig",
           "load_config", "apply_overrides", "parse_overrides", "same_config", "migrate"]


#: the YAML configs shipped inside the package (also reachable as ``configs/`` in the repository)
BUNDLED = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A configuration is invalid; the message names the offending key."""


class _Strict(BaseModel):
    # strict: no silent coercion (``epochs: true`` is not 1, ``lr: "0.1"`` is not a number); ints are accepted
    # where floats are expected
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


def _finite(v: float, what: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False) -> float:
    """``v`` if finite and within the bounds, else a ValueError naming the allowed range."""
    bad = not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or \
        (hi is not None and (v >= hi if hi_open else v > hi))
    if bad:
        rng = ("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo:g}") + ", " + \
              ("inf" if hi is None else f"{hi:g}") + (")" if hi_open or hi is None else "]")
        raise ValueError(f"{what} must be a finite number in {rng}, got {v!r}")
    return v


class ModelConfig(_Strict):
    name: str = "mlp"
    args: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Strict):
    dataset: str = "mnist"
    data_dir: str | None = None
    val_size: int | float = 5000
    split_seed: int = 0
    #: fraction (0, 1] of the training split to use (seeded by ``split_seed``)
    fraction: float = 1.0
    #: classes removed from the training (transfer) split, e.g. ``[3]``
    exclude_classes: list[int] = Field(default_factory=list)
    #: if set, only these classes are kept in the training split
    include_classes: list[int] | None = None
    #: batch augmentations run on the device in this order, e.g. ``[{name: shift, max: 2}]`` (Hinton et al.'s
    #: MNIST teacher: jitter by up to 2 pixels) — see :mod:`darkknowledge.data.augment`; stored with every
    #: parameter filled in. ``augment_shift: s`` of older configs migrates to ``[{name: shift, max: s}]``.
    augment: list[dict[str, Any]] = Field(default_factory=list)
    #: the per-example shape the augmentations see when the inputs are stored flat (e.g. ``[16, 40]``: context
    #: windows of 16 frames × 40 log-mel bands; ``[1, 28, 28]`` for flat MNIST rows); None: the inputs' shape
    augment_shape: list[int] | None = None
    #: a user's own files instead of a built-in dataset (``dataset`` then only names them in the records);
    #: see :mod:`darkknowledge.data.files` for the keys of ``files`` per format
    format: Literal["idx", "npz", "npy", "images", "csv", "parquet", "hf"] | None = None
    files: dict[str, str] = Field(default_factory=dict)
    #: optional sha256 per file (checked when given)
    sha256: dict[str, str] = Field(default_factory=dict)
    label_column: str = "label"
    #: the array names inside an ``.npz`` archive: inputs, labels
    arrays: list[str] = Field(default_factory=lambda: ["x", "y"])
    #: images: resize to this square size (None: keep; all must then share one size), and 1 or 3 channels
    image_size: int | None = None
    channels: Literal[1, 3] = 1

    @model_validator(mode="before")
    @classmethod
    def _augment_shift(cls, data: Any) -> Any:
        """``augment_shift: s`` (before the augmentation list) → ``augment: [{name: shift, max: s}, ...]``."""
        if not isinstance(data, dict) or "augment_shift" not in data:
            return data
        data = dict(data)
        s = data.pop("augment_shift")
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"augment_shift must be >= 0 pixels, got {s!r}")
        if s:
            data["augment"] = [{"name": "shift", "max": s}, *(data.get("augment") or [])]
        return data

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, v: Any) -> Any:
        if not v:
            return v
        from .data.augment import AugmentError, parse_augment  # lazy: kornia is imported only when used

        try:
            return [a.spec() for a in parse_augment(v)]
        except AugmentError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _files_need_format(self) -> DataConfig:
        if (self.files or self.sha256) and self.format is None:
            raise ValueError("data.files / data.sha256 need data.format (idx, npz, npy, images, csv, parquet or hf)")
        if self.format is not None and not self.files:
            raise ValueError(f"data.format {self.format!r} needs data.files")
        if len(self.arrays) != 2:
            raise ValueError("data.arrays names two arrays: inputs and labels")
        return self

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        return _finite(v, "fraction", 0, 1, lo_open=True)

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, v: int | float) -> int | float:
        if isinstance(v, float):
            return _finite(v, "val_size (a fraction)", 0, 1, hi_open=True)
        if v < 0:
            raise ValueError(f"val_size must be >= 0, got {v}")
        return v



class OptimConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "linear", "step"] = "cosine"
    warmup_epochs: float = 0.0
    #: for ``step``: multiply the LR by ``gamma`` every ``step_epochs``
    step_epochs: int = 30
    gamma: float = 0.1
    grad_clip: float | None = None

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        return _finite(v, "lr", 0, lo_open=True)

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, v: float) -> float:
        return _finite(v, "momentum", 0, 1, hi_open=True)

    @field_validator("weight_decay", "warmup_epochs")
    @classmethod
    def _nonneg(cls, v: float) -> float:
        return _finite(v, "weight_decay / warmup_epochs", 0)

    @field_validator("gamma", "grad_clip")
    @classmethod
    def _pos(cls, v: float | None) -> float | None:
        return v if v is None else _finite(v, "gamma / grad_clip", 0, lo_open=True)

    @field_validator("step_epochs")
    @classmethod
    def _step_epochs(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"step_epochs must be >= 1, got {v}")
        return v


class DistillConfig(_Strict):
    """What picks and serves the teacher. The training method's settings (kd's temperature and weights
    included) are ``method_args``; see :func:`migrate` for configs written before."""

    #: teacher checkpoint(s); several make an ensemble
    teachers: list[str]
    combine: Literal["arithmetic", "geometric"] = "arithmetic"
    #: precompute the teacher's logits on the (unaugmented) transfer set once (the run folder's teacher_store/)
    cache: bool = True


#: the temperatures a config accepts: below 0.01 the softened logits ``z / T`` and the ``T²`` gradient scale
#: overflow float32 for ordinary logits; above 1000 the soft targets are uniform to float32 precision
TEMPERATURE_RANGE = (0.01, 1000.0)


class KDArgs(_Strict):
    """``method_args`` of ``kd`` (Hinton et al. 2015 §2: ``w_soft · T² · KL(p_T ‖ q_T) + w_hard · CE(y, q_1)``),
    validated here and completed with these defaults, so that every kd run's record names all four;
    ``temperature`` within :data:`TEMPERATURE_RANGE`."""

    temperature: float = 4.0
    w_soft: float = 1.0
    w_hard: float = 0.5
    kind: Literal["ce", "kl", "logits"] = "ce"

    @field_validator("temperature", "w_soft", "w_hard")
    @classmethod
    def _t(cls, v: float, info: ValidationInfo) -> float:
        if info.field_name == "temperature":
            return _finite(v, "temperature", *TEMPERATURE_RANGE)
        return _finite(v, info.field_name, 0)


#: kd's settings, which the distill section held until they moved to ``method_args`` (:func:`migrate`)
KD_KEYS = tuple(KDArgs.model_fields)


def _runs_kd(data: dict[str, Any]) -> bool:
    """Whether a config dict trains with ``kd``: named, or implied by a distill section without a method."""
    return data.get("method") == "kd" or (data.get("method") is None and data.get("distill") is not None)


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict (a file, a run record's or checkpoint's config) in today's form, unchanged otherwise:
    kd's settings written as ``distill.temperature / w_soft / w_hard / kind`` move to ``method_args`` (a key in
    both: ``method_args`` wins, as it always did); with any other method those keys were never read and are
    dropped. A kd run's ``method_args`` are then validated and completed by :class:`KDArgs`, so that the old and
    the new form of one run are equal (:func:`same_config`)."""
    distill = data.get("distill")
    old: dict[str, Any] = {}
    if isinstance(distill, dict) and any(k in distill for k in KD_KEYS):
        old = {k: distill[k] for k in KD_KEYS if k in distill}
        data = {**data, "distill": {k: v for k, v in distill.items() if k not in KD_KEYS}}
    args = data.get("method_args", {})
    if not (_runs_kd(data) and isinstance(args, dict)):
        return data
    try:
        return {**data, "method_args": KDArgs.model_validate({**old, **args}).model_dump()}
    except ValidationError as e:
        raise ValueError("; ".join(_kd_error(err) for err in e.errors())) from None


def _kd_error(err: Any) -> str:
    key = str(err["loc"][0]) if err["loc"] else ""
    if err["type"] == "extra_forbidden":
        return f"method_args.{key}: unknown key (kd takes {', '.join(KD_KEYS)})"
    return f"method_args.{key} (formerly distill.{key}): {err['msg'].removeprefix('Value error, ')}"


class TrainConfig(_Strict):
    name: str = "run"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 2000
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    distill: DistillConfig | None = None
    #: training method by registered name (None: "kd" with a teacher, "labels" without); see darkknowledge.methods
    method: str | None = None
    #: the method's settings, every method's (kd's: :class:`KDArgs`, filled in; distill.temperature and the
    #: other kd keys of older configs are migrated here, :func:`migrate`)
    method_args: dict[str, Any] = Field(default_factory=dict)
    out_dir: str = "runs/run"
    #: torch intra-op threads (None: leave torch's default)
    threads: int | None = None
    #: also checkpoint every this many steps inside an epoch (0: only at epoch ends)
    checkpoint_every_steps: int = 0
    #: stop after this many optimiser steps (the epoch in progress ends there and is validated); None: epochs
    max_steps: int | None = None
    #: evaluate the test split every this many steps (and at step 0) into the record's "curve" (0: never);
    #: for learning-speed experiments ("steps to reach a loss"), never for selection
    eval_every_steps: int = 0
    #: metric on the validation split that selects the reported model
    select_metric: Literal["accuracy", "nll"] = "accuracy"
    #: "bf16": the training forward runs under bf16 autocast (losses stay fp32; evaluation is fp32)
    precision: Literal["fp32", "bf16"] = "fp32"
    #: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:N" or "mps"; student, teacher, batches and
    #: cached teacher outputs all live there
    device: str = "auto"
    #: channels_last memory format for the model and 4-d image batches (faster convolutions on CPU)
    channels_last: bool = False

    @model_validator(mode="before")
    @classmethod
    def _one_route(cls, data: Any) -> Any:
        return migrate(data) if isinstance(data, dict) else data

    @field_validator("epochs", "batch_size", "eval_batch_size", "threads", "max_steps")
    @classmethod
    def _at_least_one(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is not None and v < 1:  # threads / max_steps may be null (torch's default / no step limit)
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v

    @field_validator("checkpoint_every_steps", "eval_every_steps")
    @classmethod
    def _at_least_zero(cls, v: int, info: ValidationInfo) -> int:
        if v < 0:
            raise ValueError(f"{info.field_name} must be >= 0, got {v}")
        return v


def _format_errors(e: ValidationError, source: str) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        # a check of the whole config (no location) names its keys itself
        lines.append(f"  {key}: {msg}" if key else f"  {msg.removeprefix('Value error, ')}")
    return f"invalid config {source}:\n" + "\n".join(lines)


def validate(data: dict[str, Any], cls: type[BaseModel] = TrainConfig, source: str = "") -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` (YAML 1.1 wants ``1.0e-3``) as a float, and refuses a key given twice
    in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r} (first on line {seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: the problem and its line and column."""
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{getattr(e, 'problem', None) or str(e).splitlines()[0]}{where}"


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.01", "model.args.hidden=[30,30]"]`` → nested dict; values parsed as YAML. A key given
    twice is an error (which one was meant?)."""
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        if key in seen:
            raise ConfigError(f"override {key} is given twice (out_dir also comes from --out, device from --device, "
                              "distill.teachers from --teacher) — give it once")
        seen.add(key)
        try:
            value = _yaml_load(raw) if raw != "" else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {_yaml_problem(e)}") from None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {p} is not a section")
        node[parts[-1]] = value
    return out


def _lift(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Overrides written the old way, ``distill.temperature=20``, set ``method_args.temperature`` (else the
    base's completed ``method_args`` would win over them); for a method other than kd they are an error."""
    d = over.get("distill")
    moved = {k: d[k] for k in KD_KEYS if k in d} if isinstance(d, dict) else {}
    if not moved:
        return over
    probe = {"method": over.get("method", base.get("method")), "distill": d}
    if not _runs_kd(probe):
        raise ConfigError(f"distill.{next(iter(moved))}: method {probe['method']!r} does not read it — a method's "
                          "settings are method_args.* (kd's too, since they left the distill section)")
    args = over.get("method_args")
    return {**over, "distill": {k: v for k, v in d.items() if k not in KD_KEYS},
            "method_args": {**moved, **args} if isinstance(args, dict) else moved if args is None else args}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "args":
            out[k] = _merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def apply_overrides(cfg: TrainConfig | dict[str, Any], overrides: list[str] | dict[str, Any]) -> TrainConfig:
    base = cfg.model_dump() if isinstance(cfg, BaseModel) else dict(cfg)
    over = parse_overrides(overrides) if isinstance(overrides, list) else overrides
    return validate(_merge(base, _lift(base, over)), TrainConfig, "(after overrides)")


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and (BUNDLED / p.name).is_file() and p.parent.name in ("", "configs"):
            p = BUNDLED / p.name  # the configs shipped with the package (``configs/mnist_teacher.yaml`` anywhere)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p} (bundled configs: "
                              f"{', '.join(sorted(f.name for f in BUNDLED.glob('*.yaml')))})")
        try:
            data = _yaml_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {_yaml_problem(e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
    if not overrides:
        return validate(data, TrainConfig, str(path or "(defaults)"))
    # the overrides are merged into the file's mapping before validating, so an override may supply a field
    # the file leaves out (``distill --teacher`` fills ``distill.teachers`` of a file's ``distill:`` block)
    return validate(_merge(data, _lift(data, parse_overrides(overrides))), TrainConfig,
                    f"{path or '(defaults)'} with the overrides")


def _identity(dump: dict[str, Any]) -> dict[str, Any]:
    """A config dump without what does not change a run: where the dataset files live (the built-in
    loaders check them by sha256 wherever they are found; a loader added with ``register_dataset`` must
    likewise not let ``data_dir`` change what it returns)."""
    return {**dump, "data": {**dump.get("data", {}), "data_dir": None}}


def same_config(recorded: dict[str, Any] | None, cfg: TrainConfig) -> bool:
    """Whether a config recorded in a run file or checkpoint is ``cfg``. The recorded dict is validated
    first, so keys added to :class:`TrainConfig` later (at their defaults) do not count as a change;
    ``data.data_dir`` is ignored (the same files found through ``--data-dir`` or ``$DARKKNOWLEDGE_DATA``)."""
    if not isinstance(recorded, dict):
        return False
    mine = _identity(cfg.model_dump())
    if isinstance(recorded.get("data"), dict) and _identity(recorded) == mine:
        return True
    try:
        return _identity(TrainConfig.model_validate(recorded).model_dump()) == mine
    except ValidationError:
        return False
