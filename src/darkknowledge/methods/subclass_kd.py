"""``subclass_kd``: the student of subclass distillation (Müller, Kornblith & Hinton 2020, §5)."""

from __future__ import annotations

from ..losses import check_alpha, check_temperature
from ..subclass.losses import subclass_distillation_loss, subclass_to_class_logits
from .base import Method, register_method

__all__ = ["SubclassKD"]


@register_method("subclass_kd")
class SubclassKD(Method):
    """Student training of §5 with :func:`~darkknowledge.subclass.subclass_distillation_loss`::

        {"soft": α · T² · mean_b CE(p_T, softmax(z_sub / T)),  "hard": (1 − α) · CE(y, class_logits(z_sub))}

    where ``p_T`` is the teacher's distribution over the ``n·s`` subclasses at ``T`` (an ensemble's mean);
    α weights the soft term (official convention). The teacher serves its subclass logits
    (``teacher_output = "subclass_logits"``); the student is a :class:`~darkknowledge.models.SubclassNet`.
    """

    needs_teacher = True
    teacher_output = "subclass_logits"

    def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.5):
        super().__init__(student, teacher)
        self.temperature, self.alpha = check_temperature(temperature), check_alpha(alpha)

    def forward(self, x, y, idx=None, *, epoch=0, step=0):
        z_sub = self.student.subclass_logits(x)
        n = self.student.num_classes
        p = self.teacher.soft_targets(x, self.temperature, idx)
        return subclass_to_class_logits(z_sub, n), subclass_distillation_loss(
            z_sub, None, y, n, self.temperature, self.alpha, teacher_probs=p, return_terms=True)
