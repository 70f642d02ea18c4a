"""``kd``: Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", §2."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..losses import DistillationObjective
from ..teachers import Teacher
from .base import Method, register_method
from .labels import LabelsOnly

__all__ = ["KD", "Distiller"]


@register_method("kd")
class KD(Method):
    """Knowledge distillation (Hinton et al. 2015, §2), the weighted terms of
    :meth:`DistillationObjective.terms`::

        {"soft": w_soft · T² · KL(p_T ‖ q_T),  "hard": w_hard · CE(y, q_1)}

    with ``p_T`` the teacher's soft targets at ``T`` (an ensemble's mean distribution at ``T``) and
    ``q_T = softmax(z / T)``. ``kind="ce"`` (default) and ``"kl"`` both log the KL form: it has exactly
    the gradient of the paper's ``T² · CE(p_T, q_T)`` (the teacher side is detached; the two differ by
    the constant ``T² · H(p_T)``) and goes to 0 as the student matches the teacher.
    ``kind="logits"`` is centred logit matching on the teacher's logits (§2.1, the ``T → ∞`` limit).
    ``"hard"`` is omitted only when the labels are ``None`` (then ``w_hard`` must be 0).
    """

    needs_teacher = True
    mixed_labels = True

    def __init__(self, student, teacher, temperature: float = 4.0, w_soft: float = 1.0, w_hard: float = 0.5,
                 kind: str = "ce", objective: DistillationObjective | None = None):
        super().__init__(student, teacher)
        self.objective = objective or DistillationObjective(temperature, w_soft, w_hard, kind)

    def forward(self, x, y, idx=None, *, epoch=0, step=0):
        logits = self.student(x)
        obj = self.objective
        if obj.kind == "logits":
            return logits, obj.terms(logits, y, teacher_logits=self.teacher.logits(x, idx))
        return logits, obj.terms(logits, y, teacher_probs=self.teacher.soft_targets(x, obj.temperature, idx))


def Distiller(student: nn.Module,  # noqa: N802 (kept as the familiar name)
              teacher: Teacher | nn.Module | Sequence[nn.Module] | None = None,
              objective: DistillationObjective | None = None) -> KD | LabelsOnly:
    """``Distiller(student, teacher, objective)``: :class:`KD` with a teacher (a :class:`Teacher`, an
    ``nn.Module`` or a list of them as an ensemble), :class:`LabelsOnly` without."""
    if teacher is None:
        return LabelsOnly(student)
    return KD(student, teacher, objective=objective)
