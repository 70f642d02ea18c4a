"""``penultimate``: penultimate-layer distillation, the third baseline of subclass distillation
(Müller, Kornblith & Hinton 2020, §6.3), in our stated form."""

from __future__ import annotations

from ..losses import check_weight
from ..subclass.losses import PenultimateDistillation
from .base import Method, register_method

__all__ = ["PenultimateKD"]


@register_method("penultimate")
class PenultimateKD(Method):
    """Feature regression through a learned affine map ``W, c`` (trained alongside the student), with
    :meth:`PenultimateDistillation.loss <darkknowledge.subclass.PenultimateDistillation.loss>`::

        {"hard": CE(y, z),  "feat": weight · mean_b ½ ‖W h_s + c − sg(h_t)‖²}

    The student needs ``forward_features``, ``head`` and ``feature_dim``; the teacher serves
    ``forward_features`` (the mean over an ensemble's members). The map's parameters are this
    method's :meth:`extra_state` (keys ``map.proj.*``).
    """

    needs_teacher = True
    teacher_output = "forward_features"

    def __init__(self, student, teacher, weight: float = 1.0, teacher_dim: int | None = None):
        super().__init__(student, teacher)
        teacher = self.teacher
        if teacher_dim is None and teacher.precomputed:  # stored features: their width is the stored "classes"
            teacher_dim = teacher.num_classes
        elif teacher_dim is None:
            src = getattr(teacher, "model", None) or next(iter(getattr(teacher, "members", [])), None)
            teacher_dim = getattr(src, "feature_dim", None)
        if teacher_dim is None or getattr(student, "feature_dim", None) is None:
            raise ValueError("penultimate distillation needs feature_dim on the student and the teacher")
        self.weight = check_weight("weight", weight)
        self.map = PenultimateDistillation(student.feature_dim, int(teacher_dim))

    def forward(self, x, y, idx=None, *, epoch=0, step=0):
        h = self.student.forward_features(x)
        logits = self.student.head(h)
        h_t = self.teacher.member_logits(x, idx).mean(dim=1)
        return logits, self.map.loss(h, h_t, logits, y, self.weight, return_terms=True)
