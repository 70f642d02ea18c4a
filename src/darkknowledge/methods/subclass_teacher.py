"""``subclass_teacher``: the teacher of subclass distillation (Müller, Kornblith & Hinton 2020, §3–§4)."""

from __future__ import annotations

from ..losses import check_temperature, check_weight
from ..subclass.losses import subclass_teacher_loss, subclass_to_class_logits
from .base import Method, register_method

__all__ = ["SubclassTeacherMethod"]


@register_method("subclass_teacher")
class SubclassTeacherMethod(Method):
    """Teacher training of §4 with :func:`~darkknowledge.subclass.subclass_teacher_loss`::

        {"ce": CE(y, class_logits(z_sub)),  "aux": β · L_aux(z_sub; T_aux)}

    The student is a :class:`~darkknowledge.models.SubclassNet` (``subclass_logits``, ``num_classes``);
    the returned class logits are the logsumexp grouping of its subclass logits (§2). ``"aux"`` is absent
    when ``β = 0``, and for a final batch of one example, which has no negatives (§3).
    """

    def __init__(self, student, teacher=None, beta: float = 1.0, aux_temperature: float = 1.0):
        super().__init__(student, teacher)
        self.beta = check_weight("beta", beta)
        self.aux_temperature = check_temperature(aux_temperature, "aux_temperature")

    def forward(self, x, y, idx=None, *, epoch=0, step=0):
        z_sub = self.student.subclass_logits(x)
        n = self.student.num_classes
        beta = self.beta if z_sub.shape[0] > 1 else 0.0  # a batch of one has no negatives
        return subclass_to_class_logits(z_sub, n), subclass_teacher_loss(
            z_sub, y, n, beta, self.aux_temperature, return_terms=True)
