"""The Python API's arguments checked before anything runs: a wrong type to ``dk.train`` or ``dk.distill``
is a one-line ``TypeError`` that says what was expected and how to get it (the numbers inside a config are
the config's business: :class:`~darkknowledge.config.ConfigError`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..config import TrainConfig
from ..data import Splits
from ..teachers import Teacher

__all__ = ["check_student", "check_teacher", "check_train_args"]


def _what(v: Any) -> str:
    return f"the class {v.__name__}" if isinstance(v, type) else f"{type(v).__name__} {v!r}"[:80]


def check_student(student: Any, name: str = "student") -> None:
    """``student`` must be an ``nn.Module`` instance (``None`` where the config's model is meant)."""
    if isinstance(student, nn.Module):
        return
    if isinstance(student, type) and issubclass(student, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module instance, got the class {student.__name__} — pass "
                        f"{student.__name__}(...)")
    hint = (f" — build it with dk.create_model({student!r}, num_classes=...) or load a file with dk.load_model(path)"
            if isinstance(student, str) else "")
    raise TypeError(f"{name} must be a torch.nn.Module instance, got {_what(student)}{hint}")


def check_teacher(teacher: Any) -> None:
    """``teacher``: ``None``, an ``nn.Module``, a :class:`Teacher` or a non-empty list of ``nn.Module``."""
    if teacher is None or isinstance(teacher, (nn.Module, Teacher)):
        return
    if isinstance(teacher, Sequence) and not isinstance(teacher, str) and teacher:
        for i, m in enumerate(teacher):
            check_student(m, f"teacher[{i}]")
        return
    hint = " — load the file with dk.load_model(path)" if isinstance(teacher, str) else ""
    raise TypeError("teacher must be a torch.nn.Module, a list of them (an ensemble), a darkknowledge Teacher or None, "
                    f"got {_what(teacher)}{hint}")


def check_train_args(cfg: Any, splits: Any, student: Any, teacher: Any, callbacks: Any) -> None:
    """The arguments of :func:`~darkknowledge.engine.train.train`."""
    if not isinstance(cfg, TrainConfig):
        hint = (" — validate it first: dk.TrainConfig.model_validate(d) (or dk.load_config(path))"
                if isinstance(cfg, dict) else "")
        raise TypeError(f"cfg must be a darkknowledge.TrainConfig, got {type(cfg).__name__}{hint}")
    if splits is not None and not isinstance(splits, Splits):
        raise TypeError(f"splits must be a darkknowledge.data.Splits (train / val / test TensorData) or None, got "
                        f"{type(splits).__name__} — or give tensors, a Dataset or a DataLoader to dk.distill")
    if splits is not None:
        from ..data.convert import as_labels

        for part in ("train", "val", "test"):
            as_labels(getattr(splits, part).y, f"splits.{part}.y")
    if student is not None:
        check_student(student)
    check_teacher(teacher)
    from .callbacks import Callback

    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence) or \
            not all(isinstance(c, Callback) for c in callbacks):
        raise TypeError("callbacks must be a list of darkknowledge.Callback objects, got "
                        f"{type(callbacks).__name__}")
