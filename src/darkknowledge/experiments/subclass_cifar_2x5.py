"""``darkknowledge reproduce subclass-cifar-2x5``: subclass distillation on CIFAR-2x5 (spec §11.2).

CIFAR-10 classes 0–4 (airplane, automobile, bird, cat, deer) → class 0 and 5–9 (dog, frog, horse,
ship, truck) → class 1; the 10 CIFAR labels are the hidden subclasses, used only for evaluation.
**The images are the JPEG-compressed copy in ``../shared/data/cifar10-jpeg`` (quality 75, decoded
with Pillow)**, so numbers are comparable between methods here, not with published CIFAR results.

* Teacher: a ResNet-20-style net (``resnet_cifar``, registered in ``models/``: 3 stages × ``n`` basic blocks,
  widths ``w, 2w, 4w``; ``n = 3, w = 16`` is ResNet-20) with a 2 × 5 subclass head, ``CE + β·L_aux``
  (β = 1, T_aux = 1), random crop (pad 4) + horizontal flip. The augmentation runs inside the model's
  ``forward`` in training mode (``augment=True``), so the training engine needs no change.
* Students: the smaller ``small_cnn`` (conv32-pool-conv64-pool-FC128, 3 input channels) from labels,
  conventional, penultimate and subclass distillation (α = 0.5 on the soft term, T = 4), without
  augmentation, so the teacher's outputs on the transfer set can be computed once.
* SGD (momentum 0.9, Nesterov, weight decay 5e-4), cosine schedule, batch 128, 30 teacher / 15 student
  epochs; the epoch is selected on a 5k validation split carved from the 50k training images.
* Training forwards run under bf16 autocast with channels_last tensors (≈2.6× faster for the ResNet on
  this CPU); every loss is computed in fp32 and evaluation (incl. the cached teacher outputs) is fp32.

Same summary keys and report as ``subclass-mnist-2x5`` (no reference numbers: the paper's tables are
not available here, spec §9).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from ..data import Splits, load_dataset
from ..engine.jobs import Job, register_job_kind, run_cached
from ..engine.stages import Context
from . import register_experiment
from .subclass_common import SUBCLASSES, FineLabels, Settings, coarse_2x5, subsample_train
from .subclass_mnist_2x5 import two_by_five

NAME = "subclass-cifar-2x5"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

__all__ = ["EXPERIMENT", "NAME", "cifar_settings", "cifar_2x5_splits"]


def cifar_settings(quick: bool) -> Settings:
    return Settings(
        dataset="cifar10-jpeg-2x5",
        teacher_model={"name": "subclass", "args": {"backbone": "resnet_cifar", "subclasses": SUBCLASSES,
                                                     "n": 1 if quick else 3, "width": 8 if quick else 16,
                                                     "augment": True}},
        student_backbone={"name": "small_cnn", "args": {"in_channels": 3, "image_size": 32, "dropout": 0.3}},
        epochs=1 if quick else 30, student_epochs=1 if quick else 15, batch_size=128,
        precision="bf16", channels_last=True,
        # 1/d_t (d_t = 64 pooled ResNet features): the per-dimension mean of the squared error. The MNIST
        # setting (1, the sum over features) collapsed the CIFAR student at lr 0.05: its features died in
        # epoch 1 and it stayed at chance (run record of commit 6498663).
        penultimate_weight=1 / 64,
        optim={"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
               "schedule": "cosine"},
        data_note=("quick: 3k train / 500 val / 1k test images" if quick else
                   "45k train / 5k val (carved from the 50k training images, split seed 0) / 10k test"),
    )


@functools.lru_cache(maxsize=2)
def cifar_2x5_splits(data_dir: str | None, quick: bool) -> tuple[Splits, FineLabels]:
    """The JPEG CIFAR-10 copy, normalised per channel, regrouped into 2×5 (fine labels kept aside). Memoised."""
    splits = load_dataset("cifar10-jpeg", data_dir, val_size=5000, split_seed=0)
    splits, fine = coarse_2x5(splits)
    if quick:
        splits, fine = subsample_train(splits, fine, 3000, seed=1)
        g = torch.Generator().manual_seed(2)
        kv = torch.randperm(len(splits.val), generator=g)[:500].sort().values
        kt = torch.randperm(len(splits.test), generator=g)[:1000].sort().values
        splits = dataclasses.replace(splits, val=splits.val.subset(kv), test=splits.test.subset(kt))
        fine = dataclasses.replace(fine, val=fine.val[kv], test=fine.test[kt])
    return splits, fine


@register_job_kind("subclass-cifar")
def train_on_cifar_2x5(config: dict[str, Any], *, progress: bool, need_weights: bool, data_dir: str | None = None,
                       quick: bool = False) -> dict[str, Any]:
    """A run on the CIFAR-2x5 splits of ``(data_dir, quick)`` (cached and resumable: ``run_cached``)."""
    return run_cached(config, splits=cifar_2x5_splits(data_dir, quick)[0], progress=progress,
                      need_weights=need_weights)


def cifar_job(ctx: Context, cfg: dict[str, Any]) -> Job:
    return Job(cfg, {"data_dir": ctx.data_dir, "quick": ctx.quick}, kind="subclass-cifar")


def _fields(st: Settings) -> dict[str, Any]:
    t = st.teacher_model["args"]
    return {"depth": 6 * t["n"] + 2, "t": t, "w2": 2 * t["width"], "w4": 4 * t["width"],
            "classes": ", ".join(f"{i} {c}" for i, c in enumerate(CLASSES)),
            "channels_last": " with channels_last" if st.channels_last else ""}


EXPERIMENT = register_experiment(two_by_five(
    NAME, cifar_settings, cifar_job, lambda ctx: cifar_2x5_splits(ctx.data_dir, ctx.quick),
    {"template": "subclass_cifar_2x5", "title": "Subclass distillation on CIFAR-2x5", "reference": {},
     "reference_header": "reference (paper; not available here)",
     "teacher_label": "teacher ResNet-{depth} (subclass head + aux loss)", "student_kind": "small CNN student",
     "fine_name": "CIFAR class", "fields": _fields},
    default_seeds=3))
