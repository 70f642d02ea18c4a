"""Training methods, registered by name: each one short class (mdistiller style).

A method wraps the student (and, if it distils, a teacher) and its ``forward(x, y, idx)`` returns the
student's class logits and a dict of **weighted** named losses; the training loss is their sum.
``teacher_output`` names what the method needs from its teacher: ``None`` (the class logits) or a
model method such as ``"subclass_logits"`` or ``"forward_features"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from .losses import DistillationObjective, hard_loss
from .teachers import Teacher

__all__ = ["Method", "LabelsOnly", "KD", "Distiller", "register_method", "create_method", "get_method", "list_methods"]

_METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def deco(cls: type[Method]) -> type[Method]:
        _METHODS[name] = cls
        cls.name = name
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type[Method]:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(list_methods())}")
    return _METHODS[name]


def create_method(name: str, student: nn.Module, teacher: Teacher | None = None, **args: Any) -> Method:
    cls = get_method(name)
    if cls.needs_teacher and teacher is None:
        raise ValueError(f"method {name!r} needs a teacher (set distill.teachers)")
    try:
        return cls(student, teacher, **args)
    except TypeError as e:
        raise ValueError(f"method {name!r}: bad arguments {sorted(args)}: {e}") from None


class Method(nn.Module):
    name: ClassVar[str] = "method"
    needs_teacher: ClassVar[bool] = False
    teacher_output: ClassVar[str | None] = None

    def __init__(self, student: nn.Module, teacher: Teacher | None = None):
        super().__init__()
        self.student = student
        self.teacher = teacher

    def forward(self, x: Tensor, y: Tensor, idx: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Tensor]:
        """Trainable state besides the student's (e.g. a projection), saved in checkpoints."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("student.", "teacher."))}


@register_method("labels")
class LabelsOnly(Method):
    """Cross-entropy with the labels: ``{"hard": CE(y, z)}``."""

    def forward(self, x, y, idx=None):
        logits = self.student(x)
        return logits, {"hard": hard_loss(logits, y)}


@register_method("kd")
class KD(Method):
    """Hinton et al. (2015) §2: ``w_soft · T² · CE(p_T, q_T) + w_hard · CE(y, q_1)`` (or centred logit matching
    with ``kind="logits"``); the teacher's soft targets at the loss's T (an ensemble's mean distribution at T)."""

    needs_teacher = True

    def __init__(self, student, teacher, temperature: float = 4.0, w_soft: float = 1.0, w_hard: float = 0.1,
                 kind: str = "ce", objective: DistillationObjective | None = None):
        super().__init__(student, teacher)
        self.objective = objective or DistillationObjective(temperature, w_soft, w_hard, kind)

    def forward(self, x, y, idx=None):
        logits = self.student(x)
        obj = self.objective
        if obj.kind == "logits":
            _, terms = obj(logits, y, teacher_logits=self.teacher.logits(x, idx))
        else:
            _, terms = obj(logits, y, teacher_probs=self.teacher.soft_targets(x, obj.temperature, idx))
        w = {"soft": obj.w_soft, "hard": obj.w_hard}
        return logits, {k: w[k] * v for k, v in terms.items()}


def Distiller(student: nn.Module, teacher: Teacher | None = None,  # noqa: N802 (kept as the familiar name)
              objective: DistillationObjective | None = None) -> Method:
    """``Distiller(student, teacher, objective)``: :class:`KD` with a teacher, :class:`LabelsOnly` without."""
    if teacher is None:
        return LabelsOnly(student)
    return KD(student, teacher, objective=objective)
