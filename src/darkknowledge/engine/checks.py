"""Checks made before a run folder exists (:func:`~darkknowledge.engine.train.train`): the splits' labels and
sizes, one forward of student and teacher on two training inputs, and stored teacher outputs against
augmentation — each a one-line ``ValueError`` naming what is wrong."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..data import Splits
from ..teachers import Teacher

__all__ = ["check_splits", "check_inputs", "check_output", "check_consistent"]


def check_splits(splits: Splits) -> None:
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise ValueError(f"dataset {splits.name!r}: the training or test split is empty")
    for part in ("train", "val", "test"):
        d = getattr(splits, part)
        y = d.y
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"dataset {splits.name!r}: {part} labels must be integer class ids, got {y.dtype}")
        if d.x.shape[0] != len(y):
            raise ValueError(f"dataset {splits.name!r}: {part} has {d.x.shape[0]} inputs but {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= splits.num_classes):
            raise ValueError(f"dataset {splits.name!r}: {part} labels out of range 0..{splits.num_classes - 1}")


@torch.no_grad()
def check_inputs(x: Tensor, model: nn.Module, teacher: Teacher | None, cfg: TrainConfig, n_train: int,
                  n_cls: int) -> None:
    """One forward of student and teacher on two training inputs (eval mode: no dropout, no RNG, no
    batch-norm update), so a model that cannot take this dataset's inputs fails before anything is written."""
    if teacher is not None and not teacher.live:  # stored outputs looked up by index: the training rows 0..N-1
        rows = len(teacher) if hasattr(teacher, "__len__") else n_train
        if rows < n_train:
            raise ValueError(f"the {type(teacher).__name__} holds {rows} rows but the training split has {n_train} "
                             "examples: store the outputs of this training split")
        teacher = None
    for who, m in (("student", model), ("teacher", teacher)):
        if m is None:
            continue
        was = m.training
        m.eval()
        where = cfg.model.name if who == "student" else ", ".join(cfg.distill.teachers)
        try:
            out = m(x)
        except RuntimeError as e:
            raise ValueError(f"the {who} ({where}) cannot take {cfg.data.dataset!r} inputs of shape "
                             f"{tuple(x.shape[1:])}: {str(e).splitlines()[0]}") from None
        finally:
            m.train(was)
        check_output(f"the {who} ({where})", m, out)
        if out.shape[-1] != n_cls:  # 12 outputs for 10 classes
            raise ValueError(f"the {who} ({where}) returns {out.shape[-1]} outputs but {cfg.data.dataset!r} has "
                             f"{n_cls} classes: it must return one logit per class")


def check_output(who: str, m: nn.Module, out: Any) -> None:
    """A model's output must be one tensor of logits, finite on finite inputs (NaN weights are named)."""
    if not isinstance(out, Tensor):
        raise ValueError(f"{who} returns a {type(out).__name__}, not a tensor of logits [batch, classes] — make its "
                         "forward return the logits alone")
    if not torch.isfinite(out).all():
        bad = next((k for k, v in m.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()),
                   None)
        raise ValueError(f"{who} has non-finite weights (NaN or inf in {bad})" if bad else
                         f"{who} gives NaN or inf outputs on the first training inputs")


def check_consistent(cfg: TrainConfig, teacher: Teacher) -> None:
    """Stored outputs answer for the training inputs as they are; with ``data.augment`` the student sees other
    inputs, and consistent teaching needs the teacher run on each augmented batch."""
    if not teacher.live and cfg.data.augment:
        names = ", ".join(a["name"] for a in cfg.data.augment)
        raise ValueError(f"a {type(teacher).__name__} serves outputs stored for the training inputs as they are, but "
                         f"data.augment ({names}) changes what the student sees: consistent teaching needs the teacher "
                         "run on each augmented batch — give the teacher model (or drop data.augment)")
