"""``dkd``: Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang 2022, CVPR), in one file.

§3.1 of the paper splits the KD loss at temperature ``T`` into a target-class and a non-target-class
part. For a case with label ``y``, teacher logits ``v`` and student logits ``z``:

* binary distributions ``b = (p_y, 1 − p_y)`` with ``p = softmax(· / T)`` over all classes;
* non-target distributions ``p̂_j = softmax(· / T)`` over the classes ``j ≠ y`` only (renormalised);
* ``TCKD = KL(b^T ‖ b^S)``,  ``NCKD = KL(p̂^T ‖ p̂^S)``;
* §3.2: ``L = w_hard · CE(y, z) + warmup · T² · (α · TCKD + β · NCKD)``, batch means,

with ``warmup = min(epoch / warmup_epochs, 1)`` counting epochs from 1 (the linear warm-up of the
authors' code, mdistiller). Defaults α = 1, β = 8, T = 4, 20 warm-up epochs, ``w_hard = 1`` (their
CIFAR-100 settings). Both KL terms are :func:`darkknowledge.losses.distillation_loss` (``kind="kl"``)
applied to two-way and ``(N − 1)``-way logits built from ``z`` and ``v``, so nothing here repeats its
maths; the target / non-target split is exact (no ``−1000`` mask).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..losses import check_labels, check_logits, check_temperature, check_weight, distillation_loss, hard_loss
from ..utils import fp32
from .base import Method, register_method

__all__ = ["DKD", "dkd_loss", "dkd_warmup"]


def _split(logits: Tensor, target: Tensor, t: float) -> tuple[Tensor, Tensor]:
    """Two-way logits ``[z_y, T · logsumexp_{j≠y}(z_j / T)]``, whose softmax at ``T`` is ``(p_y, 1 − p_y)``,
    and the ``N − 1`` non-target logits (in class order)."""
    b, n = logits.shape
    others = logits[~target].reshape(b, n - 1)
    rest = t * torch.logsumexp(others / t, dim=1)
    return torch.stack([logits[target], rest], dim=1), others


@fp32
def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *, alpha: float = 1.0,
             beta: float = 8.0, temperature: float = 4.0, w_hard: float = 1.0,
             warmup: float = 1.0) -> dict[str, Tensor]:
    """The weighted DKD terms (module docstring; the teacher side is detached)::

        {"hard": w_hard · CE(y, z),  "tckd": warmup · α · T² · TCKD,  "nckd": warmup · β · T² · NCKD}
    """
    t = check_temperature(temperature)
    alpha, beta, w_hard = check_weight("alpha", alpha), check_weight("beta", beta), check_weight("w_hard", w_hard)
    warmup = check_weight("warmup", warmup)
    check_logits(student_logits, "student_logits")
    check_logits(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape or student_logits.shape[1] < 2:
        raise ValueError(f"DKD needs student and teacher logits of one shape [batch, classes >= 2], got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    check_labels(labels, student_logits.shape[0], student_logits.shape[1])
    target = torch.zeros_like(student_logits, dtype=torch.bool)
    target[torch.arange(labels.shape[0], device=labels.device), labels.long()] = True
    bin_s, nt_s = _split(student_logits, target, t)
    bin_t, nt_t = _split(teacher_logits.detach(), target, t)
    tckd = distillation_loss(bin_s, bin_t, t, kind="kl")
    nckd = distillation_loss(nt_s, nt_t, t, kind="kl")
    return {"hard": w_hard * hard_loss(student_logits, labels), "tckd": (warmup * alpha) * tckd,
            "nckd": (warmup * beta) * nckd}


def dkd_warmup(epoch: int, warmup_epochs: float) -> float:
    """``min((epoch + 1) / warmup_epochs, 1)`` for the engine's 0-based ``epoch`` — mdistiller's
    ``min(epoch / warmup, 1)`` with its epochs counted from 1; 1 when ``warmup_epochs`` is 0."""
    return 1.0 if warmup_epochs <= 0 else min((epoch + 1) / warmup_epochs, 1.0)


@register_method("dkd")
class DKD(Method):
    """Decoupled KD (Zhao et al. 2022; module docstring): ``{"hard", "tckd", "nckd"}`` from
    :func:`dkd_loss` on the teacher's class logits, warmed up by the ``epoch`` keyword."""

    needs_teacher = True

    def __init__(self, student, teacher, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 warmup_epochs: float = 20, w_hard: float = 1.0):
        super().__init__(student, teacher)
        self.alpha, self.beta = check_weight("alpha", alpha), check_weight("beta", beta)
        self.temperature, self.w_hard = check_temperature(temperature), check_weight("w_hard", w_hard)
        self.warmup_epochs = check_weight("warmup_epochs", warmup_epochs)

    def forward(self, x, y, idx=None, *, epoch=0, step=0):
        logits = self.student(x)
        return logits, dkd_loss(logits, self.teacher.logits(x, idx), y, alpha=self.alpha, beta=self.beta,
                                temperature=self.temperature, w_hard=self.w_hard,
                                warmup=dkd_warmup(epoch, self.warmup_epochs))
