"""Batch augmentation on the device: a config list of augmentations, built on kornia, seeded per batch.

A config holds the list as plain dicts, e.g. ::

    augment: [{name: shift, max: 2}]                                          # Hinton et al. (2015) §3, MNIST
    augment: [{name: crop, padding: 4}, {name: hflip}, {name: mixup, alpha: 0.2}]   # CIFAR
    augment: [{name: time_mask, width: 4}, {name: freq_mask, width: 6}, {name: noise, std: 0.1}]  # speech frames

:func:`parse_augment` validates it (one-line errors); :func:`build_augment` turns it into an
:class:`AugmentPipeline` that the training loop calls once per batch::

    pipeline = build_augment(cfg.data.augment, input_shape=(1, 28, 28))
    x_aug, targets = pipeline(x, y, seed=augment_seed(cfg.seed, global_step))

**Shapes.** ``input_shape`` is the per-sample shape the augmentations see: ``(C, H, W)`` or ``(H, W)`` for
images, ``(T, F)`` for context windows of log-mel frames (this project's layout: ``[T·F]`` rows, frames oldest
first, see :func:`darkknowledge.speech.features.stack_context`), ``(C, F, T)`` for spectrograms, or ``(D,)``.
A batch is either ``[B, *input_shape]`` or flat ``[B, prod(input_shape)]`` (an MLP's MNIST input ``[B, 784]``
with ``input_shape=(1, 28, 28)``); it is viewed as ``[B, C, H, W]`` for the augmentations and returned in the
shape it came in.

**Mixing.** Without a mixing augmentation the labels come back unchanged (the same object). With ``mixup`` or
``cutmix`` (at most one per list) they come back as :class:`MixedTargets` ``(y_a, y_b, lam, index)``: sample
``i`` is ``lam_i`` of itself and ``1 − lam_i`` of sample ``index_i``, and the hard-label loss is
``lam·CE(y_a) + (1 − lam)·CE(y_b)`` (:meth:`MixedTargets.cross_entropy`), which equals the CE against the soft
target ``lam·onehot(y_a) + (1 − lam)·onehot(y_b)`` (:meth:`MixedTargets.soft`).

**Determinism.** kornia draws from torch's global RNG. A call runs under :func:`torch.random.fork_rng` with the
global generator (and that of the input's accelerator) seeded from ``seed``, so the same batch and seed give the
same output — on every DDP rank and after an exact resume — and the caller's RNG state is left as it was.
kornia samples its parameters on the CPU, so the draws do not depend on the device either.

**A new augmentation** is one class: a pydantic model of its parameters, registered with
:func:`register_augmentation`, whose ``build(shape)`` returns a function of a ``[B, C, H, W]`` batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.bbox import infer_bbox_shape
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import Tensor
from torch.distributions import Beta

__all__ = [
    "Augmentation", "AugmentError", "AugmentPipeline", "MixedTargets", "augment_seed", "build_augment",
    "list_augmentations", "parse_augment", "register_augmentation",
]

Shape4 = tuple[int, int, int]  # (C, H, W) of the [B, C, H, W] view


class AugmentError(ValueError):
    """A bad augmentation list or a batch that does not fit it (one line)."""


class Augmentation(BaseModel):
    """Base of an augmentation's parameters. Subclasses set ``name`` (by the decorator), ``mixes``, ``image`` and
    implement ``build``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str] = ""
    #: returns ``(x, index, lam)`` instead of ``x``: a mixing augmentation (mixup, cutmix)
    mixes: ClassVar[bool] = False
    #: needs a 2-D (H, W) layout per sample, not a flat vector
    image: ClassVar[bool] = True

    def build(self, shape: Shape4) -> Callable[[Tensor], Any]:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The config form: ``{"name": ..., **parameters}`` with defaults filled in."""
        return {"name": self.name, **self.model_dump(mode="json")}


_REGISTRY: dict[str, type[Augmentation]] = {}


def register_augmentation(name: str) -> Callable[[type[Augmentation]], type[Augmentation]]:
    """Decorator: register an :class:`Augmentation` subclass under ``name``."""

    def deco(cls: type[Augmentation]) -> type[Augmentation]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"augmentation {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_augmentations() -> list[str]:
    return sorted(_REGISTRY)


# ----------------------------------------------------------------------------------------------------- images
@register_augmentation("crop")
class Crop(Augmentation):
    """Pad by ``padding`` pixels, then a random crop of the input's size (``kornia.augmentation.RandomCrop``):
    the CIFAR recipe (He et al. 2016, §4.2: pad 4, crop 32×32). Offsets are uniform integers in
    ``[−padding, padding]²``."""

    padding: int = Field(4, ge=0)
    padding_mode: Literal["constant", "reflect", "replicate"] = "constant"

    def build(self, shape: Shape4) -> Callable[[Tensor], Tensor]:
        if self.padding == 0:
            return lambda x: x
        return K.RandomCrop(shape[1:], padding=self.padding, fill=0, padding_mode=self.padding_mode, p=1.0)


@register_augmentation("shift")
class Shift(Augmentation):
    """Translate each image by an independent integer offset in ``[−max, max]²`` with zero fill — Hinton et al.
    (2015, §3): "jittered by up to two pixels in any direction". A zero-padded crop of the same size."""

    max: int = Field(2, ge=0)

    def build(self, shape: Shape4) -> Callable[[Tensor], Tensor]:
        return Crop(padding=self.max).build(shape)


@register_augmentation("hflip")
class HFlip(Augmentation):
    """Mirror left–right with probability ``p`` per sample (``kornia.augmentation.RandomHorizontalFlip``)."""

    p: float = Field(0.5, ge=0, le=1)

    def build(self, shape: Shape4) -> Callable[[Tensor], Tensor]:
        return K.RandomHorizontalFlip(p=self.p)


@register_augmentation("affine")
class Affine(Augmentation):
    """Random rotation by up to ``degrees``, translation by up to ``translate`` of the width / height, scaling by
    a factor in ``scale``; bilinear, zero fill (``kornia.augmentation.RandomAffine``), with probability ``p``."""

    degrees: float = Field(0.0, ge=0, le=180)
    translate: float = Field(0.0, ge=0, le=1)
    scale: tuple[float, float] = (1.0, 1.0)
    p: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _scale_range(self) -> Affine:
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {list(self.scale)}")
        return self

    def build(self, shape: Shape4) -> Callable[[Tensor], Tensor]:
        t = (self.translate, self.translate) if self.translate else None
        s = self.scale if self.scale != (1.0, 1.0) else None
        return K.RandomAffine(self.degrees, translate=t, scale=s, padding_mode="zeros", p=self.p)


# ----------------------------------------------------------------------------------------------------- mixing
Params = dict[str, Tensor]


def _mixing(aug: K.MixAugmentationBaseV2, own_weight: Callable[[Params], Tensor],
            draw: Callable[[torch.Size], Params] | None = None) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]:
    """Run a kornia mix augmentation on parameters drawn by ``draw`` (default: its own
    ``forward_parameters``); return ``(x, partner index, own weight λ)``. Not via kornia's ``"class"`` data key,
    whose label path loops over the batch in Python (2–4 ms a batch)."""
    draw = draw or aug.forward_parameters

    def run(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        params = draw(x.shape)
        pairs = params["mixup_pairs"] if "mixup_pairs" in params else params["mix_pairs"][0]
        applied = params["batch_prob"] > 0.5  # kornia's batch gate p: all rows or none are mixed
        lam = torch.where(applied, own_weight(params).float(), 1.0)
        return aug(x, params=params), pairs.to(x.device), lam.to(x.device)

    return run


@register_augmentation("mixup")
class Mixup(Augmentation):
    """mixup (Zhang et al. 2018): ``x̃_i = λ_i·x_i + (1 − λ_i)·x_π(i)``, ``λ_i ~ Beta(alpha, alpha)`` per sample,
    ``π`` a random permutation; the whole batch with probability ``p``. ``kornia.augmentation.RandomMixUpV2``
    mixes, on parameters whose λ is replaced by the Beta draw (kornia draws it from a uniform range)."""

    mixes: ClassVar[bool] = True
    image: ClassVar[bool] = False
    alpha: float = Field(0.2, gt=0)
    p: float = Field(1.0, ge=0, le=1)

    def build(self, shape: Shape4) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]:
        aug, beta = K.RandomMixUpV2(p=self.p), Beta(torch.tensor(self.alpha), torch.tensor(self.alpha))

        def draw(batch_shape: torch.Size) -> Params:
            params = aug.forward_parameters(batch_shape)
            params["mixup_lambdas"] = 1 - beta.sample((batch_shape[0],))  # kornia's λk is the partner's weight
            return params

        return _mixing(aug, lambda params: 1 - params["mixup_lambdas"], draw)


@register_augmentation("cutmix")
class CutMix(Augmentation):
    """CutMix (Yun et al. 2019): a box of area ``(1 − λ)·H·W``, ``λ ~ Beta(alpha, alpha)``, is pasted from the
    partner ``π(i)``; the returned ``λ_i`` is the kept fraction of the sample's own image, exactly (from the
    integer box) (``kornia.augmentation.RandomCutMixV2``, ``use_correct_lambda=True``)."""

    mixes: ClassVar[bool] = True
    alpha: float = Field(1.0, gt=0)
    p: float = Field(1.0, ge=0, le=1)

    def build(self, shape: Shape4) -> Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]:
        h, w = shape[1:]

        def kept(params: Params) -> Tensor:  # 1 − box area / image area
            bw, bh = infer_bbox_shape(params["crop_src"][0])
            return 1 - bw * bh / (h * w)

        return _mixing(K.RandomCutMixV2(beta=self.alpha, p=self.p, use_correct_lambda=True), kept)


# ------------------------------------------------------------------------------------------ speech features
class _BandMask(Augmentation):
    """SpecAugment masking (Park et al. 2019, §2): ``count`` times, a band of width ``w ~ U{0, …, width}`` starting
    at ``s ~ U{0, …, L − w}`` along ``axis`` of ``input_shape`` is set to zero (the mean of normalised features).

    Written on torch: kornia (an image library) has no time/frequency masking, and its ``RandomErasing`` draws
    boxes by area and aspect ratio, which cannot express a full-height band of uniform width."""

    image: ClassVar[bool] = False
    width: int = Field(ge=0)
    count: int = Field(1, ge=1)
    #: -1 or -2: the last two axes of ``input_shape``
    axis: Literal[-1, -2] = -1

    def build(self, shape: Shape4) -> Callable[[Tensor], Tensor]:
        length = shape[self.axis]

        def run(x: Tensor) -> Tensor:
            b = x.shape[0]
            w = torch.randint(0, min(self.width, length) + 1, (self.count, b))
            start = (torch.rand(self.count, b) * (length - w + 1)).long()
            pos = torch.arange(length)
            band = ((pos >= start[..., None]) & (pos < (start + w)[..., None])).any(0)  # [B, L]
            view = [b, 1, 1, 1]
            view[self.axis] = length
            return x.masked_fill(band.view(view).to(x.device), 0.0)

        return run


@register_augmentation("time_mask")
class TimeMask(_BandMask):
    __doc__ = _BandMask.__doc__ + "\n    Time is ``axis = -2`` by default: the ``T`` of context windows ``(T, F)``."
    axis: Literal[-1, -2] = -2


@register_augmentation("freq_mask")
class FreqMask(_BandMask):
    __doc__ = _BandMask.__doc__ + "\n    Frequency is ``axis = -1`` by default: the ``F`` of context windows ``(T, F)``."
    axis: Literal[-1, -2] = -1


@register_augmentation("noise")
class Noise(Augmentation):
    """Additive Gaussian noise ``x + N(0, std²)`` per element, on a sample with probability ``p``
    (``kornia.augmentation.RandomGaussianNoise``)."""

    image: ClassVar[bool] = False
    std: float = Field(gt=0)
    p: float = Field(1.0, ge=0, le=1)

    def build(self, shape: Shape4) -> Callable[[Tensor], Tensor]:
        return K.RandomGaussianNoise(mean=0.0, std=self.std, p=self.p)


# ----------------------------------------------------------------------------------------------------- parse
def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown parameter {key!r}"
    msg = err["msg"].removeprefix("Value error, ")
    got = "" if err["type"] == "missing" else f" (got {err['input']!r})"
    return f"{key}: {msg}{got}" if key else msg


def parse_augment(spec: Sequence[Mapping[str, Any] | Augmentation] | None) -> list[Augmentation]:
    """Validate a config's augmentation list into parameter models; one-line :class:`AugmentError` otherwise."""
    if spec is None:
        return []
    if isinstance(spec, (str, Mapping)) or not isinstance(spec, Sequence):
        raise AugmentError(f"augment must be a list of {{name: ..., parameters}} entries, got {spec!r}")
    steps: list[Augmentation] = []
    for i, item in enumerate(spec):
        if isinstance(item, Augmentation):
            steps.append(item)
            continue
        if not isinstance(item, Mapping) or "name" not in item:
            raise AugmentError(f"augment[{i}]: expected a mapping with a 'name', got {item!r}")
        name, params = item["name"], {k: v for k, v in item.items() if k != "name"}
        if name not in _REGISTRY:
            raise AugmentError(f"augment[{i}]: unknown augmentation {name!r}; known: {', '.join(list_augmentations())}")
        cls = _REGISTRY[name]
        try:
            steps.append(cls(**params))
        except ValidationError as e:
            known = ", ".join(cls.model_fields) or "none"
            raise AugmentError(f"augment[{i}] ({name}): {_one_line(e)}; parameters: {known}") from None
    mixing = [s.name for s in steps if s.mixes]
    if len(mixing) > 1:
        raise AugmentError(f"augment: at most one mixing augmentation per list, got {', '.join(mixing)}")
    return steps


# -------------------------------------------------------------------------------------------------- targets
def _opt(t: Tensor | None, f: Callable[[Tensor], Tensor]) -> Tensor | None:
    return None if t is None else f(t)


@dataclass(frozen=True)
class MixedTargets:
    """Labels of a mixed batch: sample ``i`` is ``lam[i]`` of itself (label ``y_a[i]``) and ``1 − lam[i]`` of
    sample ``index[i]`` of the same batch (label ``y_b[i] = y[index[i]]``). ``y`` may be class indices ``[B]``,
    soft targets ``[B, K]`` or ``None`` (an unlabelled transfer set)."""

    y_a: Tensor | None
    y_b: Tensor | None
    lam: Tensor
    index: Tensor

    def __getitem__(self, rows: Any) -> MixedTargets:
        """The rows ``rows`` (e.g. one DDP rank's part of the global batch); ``index`` keeps global positions."""
        return MixedTargets(_opt(self.y_a, lambda t: t[rows]), _opt(self.y_b, lambda t: t[rows]),
                            self.lam[rows], self.index[rows])

    def to(self, device: torch.device | str) -> MixedTargets:
        return MixedTargets(_opt(self.y_a, lambda t: t.to(device)), _opt(self.y_b, lambda t: t.to(device)),
                            self.lam.to(device), self.index.to(device))

    def soft(self, num_classes: int) -> Tensor:
        """``lam·onehot(y_a) + (1 − lam)·onehot(y_b)`` — ``[B, num_classes]``."""
        if self.y_a is None or self.y_b is None:
            raise AugmentError("mixed targets without labels have no soft target")

        def dense(y: Tensor) -> Tensor:
            return F.one_hot(y, num_classes).float() if y.ndim == 1 else y.float()

        lam = self.lam[:, None]
        return lam * dense(self.y_a) + (1 - lam) * dense(self.y_b)

    def cross_entropy(self, logits: Tensor, reduction: Literal["mean", "none", "sum"] = "mean") -> Tensor:
        """``lam·CE(logits, y_a) + (1 − lam)·CE(logits, y_b)`` per sample (Zhang et al. 2018, Eq. 1)."""
        if self.y_a is None or self.y_b is None:
            raise AugmentError("mixed targets without labels have no cross-entropy")
        lam = self.lam.to(logits.dtype)
        per = lam * F.cross_entropy(logits, self.y_a, reduction="none") \
            + (1 - lam) * F.cross_entropy(logits, self.y_b, reduction="none")
        return per.mean() if reduction == "mean" else per.sum() if reduction == "sum" else per


# ---------------------------------------------------------------------------------------------------- seeding
def augment_seed(run_seed: int, step: int) -> int:
    """A 63-bit seed for the batch at global ``step`` of a run seeded ``run_seed`` (numpy ``SeedSequence``
    hashing, so neighbouring runs and steps get unrelated streams)."""
    hi, lo = np.random.SeedSequence([int(run_seed) & 0xFFFFFFFF, int(step)]).generate_state(2, np.uint32)
    return (int(hi) << 32 | int(lo)) & 0x7FFF_FFFF_FFFF_FFFF


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run with the CPU generator (and the input's accelerator's) seeded from ``seed``; restore both after."""
    accel = device.type != "cpu"
    with torch.random.fork_rng(devices=[device] if accel else [], device_type=device.type if accel else "cuda"):
        torch.default_generator.manual_seed(seed)
        if accel:
            mod = torch.get_device_module(device.type)
            with mod.device(device):
                mod.manual_seed(seed)
        yield


# --------------------------------------------------------------------------------------------------- pipeline
def _as_chw(input_shape: Sequence[int]) -> Shape4:
    shape = tuple(int(d) for d in input_shape)
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        raise AugmentError(f"input_shape must be (C, H, W), (H, W) or (D,) of positive sizes, got {shape}")
    return (1,) * (3 - len(shape)) + shape  # type: ignore[return-value]


class AugmentPipeline:
    """The augmentations of one list, built for one per-sample shape; call it once per batch."""

    def __init__(self, steps: Sequence[Augmentation], input_shape: Sequence[int]) -> None:
        self.steps = list(steps)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.shape = _as_chw(self.input_shape)
        if len(self.input_shape) == 1:
            flat = [s.name for s in self.steps if s.image]
            if flat:
                raise AugmentError(f"{', '.join(flat)}: needs an image shape (C, H, W) or (H, W), got input_shape "
                                   f"{self.input_shape}; declare it, e.g. (1, 28, 28) for flat MNIST rows")
        self._fns = [s.build(self.shape) for s in self.steps]
        self.mixes = any(s.mixes for s in self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"AugmentPipeline({[s.spec() for s in self.steps]}, input_shape={self.input_shape})"

    def spec(self) -> list[dict[str, Any]]:
        return [s.spec() for s in self.steps]

    def __call__(self, x: Tensor, y: Tensor | None = None, *, seed: int) -> tuple[Tensor, Tensor | MixedTargets | None]:
        """``(x_aug, targets)``: ``x_aug`` in ``x``'s shape, device and dtype; ``targets`` is ``y`` itself
        unless a mixing augmentation ran, then :class:`MixedTargets`. A function of ``(x, seed)`` only."""
        if not self.steps:
            return x, y
        n = math.prod(self.shape)
        if tuple(x.shape[1:]) not in (self.input_shape, (n,)):
            raise AugmentError(f"batch of shape {tuple(x.shape)} does not fit input_shape {self.input_shape} "
                               f"(expected [B, *{self.input_shape}] or [B, {n}])")
        if not x.is_floating_point():
            raise AugmentError(f"augmentation needs a floating-point batch, got {x.dtype}")
        out, mixed = x.reshape(x.shape[0], *self.shape), None
        with _seeded(seed, x.device), torch.no_grad():
            for step, fn in zip(self.steps, self._fns):
                if step.mixes:
                    out, index, lam = fn(out)
                    lam, index = lam.to(x.device), index.to(x.device)
                    y_b = None if y is None else y[index.to(y.device)]
                    mixed = MixedTargets(y, y_b, lam if y is None else lam.to(y.device), index)
                else:
                    out = fn(out)
        return out.to(x.dtype).reshape(x.shape), (mixed if mixed is not None else y)


def build_augment(spec: Sequence[Mapping[str, Any] | Augmentation] | None,
                  input_shape: Sequence[int]) -> AugmentPipeline:
    """The pipeline of a config's augmentation list for samples of ``input_shape`` (see the module docstring)."""
    return AugmentPipeline(parse_augment(spec), input_shape)
