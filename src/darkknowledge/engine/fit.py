"""``dk.distill``: distil any teacher into any student from Python, through the same engine as the CLI.

A thin front end over :func:`~.train.train`: the data (tensors, a ``Dataset`` or a ``DataLoader``) become
in-memory splits, the arguments a :class:`~darkknowledge.config.TrainConfig`, and the engine does the
rest — validation split and model selection, checkpoints, the run record, progress bars.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..config import validate
from ..data import Splits, TensorData, train_val_split
from ..data.convert import as_tensor_data
from ..teachers import Teacher, as_teacher
from .callbacks import Callback
from .train import train

__all__ = ["distill"]


def distill(student: nn.Module, teacher: Teacher | nn.Module | Sequence[nn.Module] | None, x: Any,
            y: Tensor | None = None, *, val: Any = None, val_fraction: float = 0.1, test: Any = None,
            temperature: float = 4.0, w_soft: float = 1.0, w_hard: float = 0.1, epochs: int = 10,
            batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam", seed: int = 0,
            combine: str = "arithmetic", method: str | None = None, method_args: dict[str, Any] | None = None,
            out_dir: str | None = None, progress: bool = True, device: str = "auto",
            callbacks: Sequence[Callback] = ()) -> nn.Module:
    """Distil ``teacher`` (an ``nn.Module``, a list of them as an ensemble, a :class:`Teacher`, or ``None``
    to train from labels only) into ``student`` and return ``student`` with the weights selected on
    validation (Hinton et al. 2015 §2: ``w_soft · T² · KL(p_T ‖ q_T) + w_hard · CE(y, q_1)``).

    ``x``: inputs (with labels ``y``), or a ``Dataset`` / ``DataLoader`` of ``(input, label)`` pairs. Without
    labels (``y=None`` with a tensor ``x``), the teacher's predictions stand in for them in the validation
    metrics and ``w_hard`` is 0. ``val``: a validation set (default: a seeded ``val_fraction`` of ``x``);
    ``test``: a test set for the final metrics (default: the validation set). ``out_dir``: keep the run
    (checkpoint, ``run.json``, ``best.safetensors``) there, resumable; default a temporary folder.
    ``device``: ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``.
    ``callbacks``: :class:`~darkknowledge.engine.callbacks.Callback` objects, run after the built-in ones.
    """
    t = as_teacher(teacher, combine=combine) if teacher is not None else None
    if isinstance(x, Tensor) and y is None:
        if t is None:
            raise ValueError("labels y are needed to train without a teacher")
        if x.shape[0] == 0:
            raise ValueError("x is empty")
        from ..metrics import predict_logits

        y = predict_logits(t, x, 1000).argmax(1)
        w_hard = 0.0
    data = as_tensor_data(x, y, "x")
    if len(data) == 0:
        raise ValueError("x is empty")
    if val is None:
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        tr, va = train_val_split(len(data), val_fraction, seed)
        train_data, val_data = data.subset(tr), data.subset(va)
    else:
        train_data, val_data = data, as_tensor_data(val, name="val")
    test_data = as_tensor_data(test, name="test") if test is not None else val_data
    num_classes = _num_classes(student, train_data, val_data, test_data)
    splits = Splits(train_data, val_data, TensorData(test_data.x, test_data.y), num_classes, "in-memory")
    cfg = {"name": "distill" if t is not None else "labels", "seed": seed, "epochs": epochs,
           "batch_size": batch_size, "optim": {"name": optimizer, "lr": lr, "schedule": "constant"},
           "data": {"dataset": "in-memory", "val_size": len(val_data)}, "method": method,
           "method_args": method_args or {}, "device": device}
    if t is not None:
        cfg["distill"] = {"teachers": ["(in-memory teacher)"], "temperature": temperature, "w_soft": w_soft,
                          "w_hard": w_hard, "combine": combine}
    with tempfile.TemporaryDirectory(prefix="darkknowledge-") as tmp:
        cfg["out_dir"] = out_dir or tmp
        train(validate(cfg, source="(dk.distill arguments)"), resume=out_dir is not None, splits=splits,
              progress=progress, student=student, teacher=t, callbacks=callbacks)
    return student.eval()


def _num_classes(student: nn.Module, *parts: TensorData) -> int:
    n = getattr(student, "num_classes", None)
    if n is None:
        with torch.no_grad():
            was = student.training
            n = int(student.eval()(parts[0].x[:1]).shape[-1])
            student.train(was)
    top = max(int(p.y.max()) for p in parts if len(p))
    if top >= n:
        raise ValueError(f"labels go up to {top} but the student has {n} outputs")
    return n
