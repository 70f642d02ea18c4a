"""Subclass distillation losses (Müller, Kornblith & Hinton 2020, arXiv:2002.03936).

Section numbers (§) refer to the project spec ``subclass2020.md``, which follows Google's official
demo (``google-research/subclass_distillation/mnist_colab.ipynb``).

Notation: ``n`` classes, ``s`` subclasses per class, ``k = n·s`` subclass logits, batch ``B`` (``m``
in the auxiliary loss). Class ``c`` owns the contiguous block of subclass logits ``[c·s, (c+1)·s)``.

* class logits (§2): ``class_logits[b, c] = logsumexp_j z_sub[b, c·s + j]``, so
  ``softmax(class_logits)`` is the block sum of ``softmax(z_sub)``;
* teacher (§4): ``CE(y, class_logits(z_sub)) + β · L_aux(z_sub)``, with the correlation-based
  auxiliary loss of §3 (:func:`subclass_auxiliary_loss`);
* student (§5): ``α · T² · mean_b CE(softmax(sg(v_sub)/T), softmax(z_sub/T))
  + (1−α) · CE(y, class_logits(z_sub))``;
* baselines (§6): conventional distillation on the teacher's (grouped) class logits, and
  penultimate-layer regression through a learned linear map (our stated form).

The checks and the soft cross-entropy are those of :mod:`darkknowledge.losses`. With
``return_terms=True`` a loss returns the dict of its **weighted** terms (with gradient; their sum is
the total), which is what the training methods of :mod:`darkknowledge.methods` return.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import (
    check_alpha,
    check_finite,
    check_labels,
    check_logits,
    check_temperature,
    check_weight,
    distillation_loss,
)
from ..utils import fp32

__all__ = [
    "subclass_to_class_logits",
    "subclass_auxiliary_loss",
    "SubclassHead",
    "subclass_teacher_loss",
    "subclass_distillation_loss",
    "conventional_class_distillation_loss",
    "PenultimateDistillation",
]


def _num_subclasses(k: int, num_classes: int, name: str = "subclass_logits") -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if k % num_classes != 0:
        raise ValueError(
            f"{name} has {k} logits, which is not divisible by num_classes={num_classes}; "
            f"a subclass head must have num_classes * subclasses logits"
        )
    return k // int(num_classes)


# --------------------------------------------------------------------------------------------------
# grouping and the auxiliary loss


@fp32
def subclass_to_class_logits(subclass_logits: Tensor, num_classes: int) -> Tensor:
    """Group ``[B, n·s]`` subclass logits into ``[B, n]`` class logits by logsumexp (§2).

    ``class_logits[b, c] = log Σ_{j<s} exp(z[b, c·s + j])``: class ``c`` owns the contiguous
    block ``[c·s, (c+1)·s)``. Hence ``softmax(class_logits) = Σ_block softmax(z)`` exactly, i.e. a
    class probability is the sum of its subclass probabilities (official function
    ``class_logits_from_subclass_logits``). With ``s = 1`` this is the identity.
    """
    check_logits(subclass_logits, "subclass_logits", finite=False)
    b, k = subclass_logits.shape
    s = _num_subclasses(k, num_classes)
    return torch.logsumexp(subclass_logits.reshape(b, int(num_classes), s), dim=-1)


@fp32
def subclass_auxiliary_loss(subclass_logits: Tensor, temperature: float = 1.0, eps: float = 1e-9) -> Tensor:
    """The teacher's auxiliary loss of §3 (official ``negative_sampling_loss``).

    For a mini-batch of ``m`` examples with subclass logits ``z_i ∈ R^k`` (``k = n·s``)::

        μ_i   = mean_j z_ij,   σ²_i = mean_j (z_ij − μ_i)²           (per example, population variance)
        ẑ_i   = (z_i − μ_i) / sqrt(σ²_i + eps) / sqrt(T_aux · k)
        S     = ẑ ẑᵀ                                                  ([m, m]; S_ij = ρ_ij / T_aux)
        L_aux = mean_i logsumexp_j S_ij − 1/T_aux − log m

    where ``ρ_ij`` is the Pearson correlation of the logit vectors of examples ``i`` and ``j``. This
    is an InfoNCE loss in which each example is its own only positive and every other example in
    the batch is a negative whatever its class; minimising it decorrelates the logit patterns of
    different examples. A batch of identical rows gives 0; a batch with ``ρ_ij = 0`` for ``i ≠ j``
    gives ``log(e^{1/T} + m − 1) − 1/T − log m < 0``. Per-example z-scoring (not L2
    normalisation) and the ``1/sqrt(k)`` factor are both required (§10). A row with constant
    logits has ``ẑ_i = 0`` and finite gradients (thanks to ``eps``).

    Raises ``ValueError`` for ``T_aux ≤ 0``, a batch of fewer than 2 examples or fewer than 2
    logits, and ``FloatingPointError`` for non-finite input.
    """
    t = check_temperature(temperature, "aux temperature")
    check_logits(subclass_logits, "subclass_logits", finite=False)
    m, k = subclass_logits.shape
    if m < 2:
        raise ValueError(f"the auxiliary loss needs a batch of at least 2 examples (negatives), got {m}")
    if k < 2:
        raise ValueError(f"the auxiliary loss needs at least 2 subclass logits per example, got {k}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    check_finite(subclass_logits, "subclass_logits")
    z = subclass_logits
    mu = z.mean(dim=1, keepdim=True)
    var = z.var(dim=1, keepdim=True, correction=0)
    zn = (z - mu) / torch.sqrt(var + eps) / math.sqrt(t * k)
    sim = zn @ zn.T
    return torch.logsumexp(sim, dim=1).mean() - 1.0 / t - math.log(m)


# --------------------------------------------------------------------------------------------------
# head and losses


class SubclassHead(nn.Linear):
    """A linear layer producing ``num_classes · subclasses`` subclass logits (§2).

    Class ``c`` owns outputs ``[c·s, (c+1)·s)``; :meth:`class_logits` groups them by logsumexp.
    """

    def __init__(self, in_features: int, num_classes: int, subclasses: int, bias: bool = True) -> None:
        checks = (("in_features", in_features), ("num_classes", num_classes), ("subclasses", subclasses))
        for name, v in checks:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        super().__init__(in_features, num_classes * subclasses, bias=bias)
        self.num_classes = num_classes
        self.subclasses = subclasses

    def class_logits(self, subclass_logits: Tensor) -> Tensor:
        """``[B, n·s]`` subclass logits → ``[B, n]`` class logits (logsumexp per block)."""
        return subclass_to_class_logits(subclass_logits, self.num_classes)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_classes={self.num_classes}, subclasses={self.subclasses}"


@fp32
def subclass_teacher_loss(
    subclass_logits: Tensor,
    labels: Tensor,
    num_classes: int,
    beta: float = 1.0,
    aux_temperature: float = 1.0,
    *,
    return_terms: bool = False,
) -> tuple[Tensor, dict[str, Tensor]] | dict[str, Tensor]:
    """Teacher loss of §4: ``L = CE(y, class_logits(z_sub)) + β · L_aux(z_sub)``.

    The class cross-entropy is at T = 1 (never divided by the distillation temperature, §10) and
    uses only the class labels. Returns ``(total, parts)`` where ``parts`` holds detached copies
    of the named terms: ``"ce"`` and, when ``β ≠ 0``, ``"aux"`` (the unweighted ``L_aux``). With
    ``return_terms=True`` it returns the weighted terms ``{"ce": CE, "aux": β · L_aux}`` instead.

    With ``β == 0`` the auxiliary loss is not computed at all (so no batch-size or finiteness
    requirement from it), ``"aux"`` is absent, and the total is exactly the plain class
    cross-entropy. Demo values: β = 1, T_aux = 1.
    """
    beta = check_weight("beta", beta)
    class_logits = subclass_to_class_logits(subclass_logits, num_classes)
    check_labels(labels, subclass_logits.shape[0], num_classes)
    ce = F.cross_entropy(class_logits, labels.long())
    if beta == 0.0:
        return {"ce": ce} if return_terms else (ce, {"ce": ce.detach()})
    aux = subclass_auxiliary_loss(subclass_logits, temperature=aux_temperature)
    if return_terms:
        return {"ce": ce, "aux": beta * aux}
    return ce + beta * aux, {"ce": ce.detach(), "aux": aux.detach()}


def _check_teacher(student: Tensor, teacher: Tensor, sname: str, tname: str) -> None:
    check_logits(student, sname, finite=False)
    check_logits(teacher, tname, finite=False)
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher subclass logits differ in shape: {tuple(student.shape)} vs "
            f"{tuple(teacher.shape)} (both need num_classes * subclasses logits)"
        )


def _mix(soft: Tensor, hard_fn, labels: Tensor | None, a: float, return_terms: bool):
    """``α · soft + (1 − α) · hard`` as a total with detached parts, or as weighted terms."""
    if labels is None:
        if a != 1.0:
            raise ValueError("labels may be None only when alpha == 1 (no hard-label term)")
        return {"soft": a * soft} if return_terms else (a * soft, {"soft": soft.detach()})
    hard = hard_fn()
    if return_terms:
        return {"soft": a * soft, "hard": (1.0 - a) * hard}
    return a * soft + (1.0 - a) * hard, {"soft": soft.detach(), "hard": hard.detach()}


@fp32
def subclass_distillation_loss(
    student_sub: Tensor,
    teacher_sub: Tensor | None,
    labels: Tensor | None,
    num_classes: int,
    temperature: float = 4.0,
    alpha: float = 0.5,
    *,
    teacher_probs: Tensor | None = None,
    return_terms: bool = False,
) -> tuple[Tensor, dict[str, Tensor]] | dict[str, Tensor]:
    """Student loss of §5 (subclass distillation)::

        L_soft    = T² · mean_b Σ_{j<n·s} −p_bj · log q_bj,   p = softmax(sg(v_sub)/T), q = softmax(z_sub/T)
        L_hard    = CE(y, class_logits(z_sub))                 (T = 1, logsumexp grouping)
        L_student = α · L_soft + (1 − α) · L_hard

    **α weights the soft (distillation) term**, following the official code's convention (the
    paper's notation may differ, §5). Demo: α = 0.5, T = 4. The teacher is given as subclass logits
    ``teacher_sub`` or as its tempered distribution ``teacher_probs`` (e.g. an ensemble's mean at
    ``T``), and is detached; ``∂(α·L_soft)/∂z_sub = α · T · (q − p) / B``. ``L_soft`` is
    :func:`darkknowledge.losses.distillation_loss`. ``labels`` may be ``None`` only when ``α == 1``.
    Returns ``(total, {"soft": ..., "hard": ...})`` (detached, unweighted parts; ``"hard"`` absent
    without labels), or with ``return_terms=True`` the weighted terms
    ``{"soft": α · L_soft, "hard": (1 − α) · L_hard}``.
    """
    t = check_temperature(temperature)
    a = check_alpha(alpha)
    if (teacher_sub is None) == (teacher_probs is None):
        raise ValueError("give exactly one of teacher_sub or teacher_probs")
    teacher = teacher_sub if teacher_sub is not None else teacher_probs
    _check_teacher(student_sub, teacher, "student_sub", "teacher_sub" if teacher_sub is not None else "teacher_probs")
    _num_subclasses(student_sub.shape[1], num_classes, "student_sub")
    soft = distillation_loss(student_sub, teacher_sub, t, teacher_probs=teacher_probs)
    if labels is not None:
        check_labels(labels, student_sub.shape[0], num_classes)
    return _mix(soft, lambda: F.cross_entropy(subclass_to_class_logits(student_sub, num_classes), labels.long()),
                labels, a, return_terms)


@fp32
def conventional_class_distillation_loss(
    student_class_logits: Tensor,
    teacher_sub: Tensor,
    labels: Tensor | None,
    num_classes: int,
    temperature: float = 4.0,
    alpha: float = 0.5,
    *,
    return_terms: bool = False,
) -> tuple[Tensor, dict[str, Tensor]] | dict[str, Tensor]:
    """Baseline 2 of §6: conventional distillation on the subclass teacher's class probabilities::

        v_class   = class_logits(sg(v_sub))                   (logsumexp grouping)
        L_soft    = T² · mean_b Σ_{c<n} −softmax(v_class/T)_c · log_softmax(z/T)_c
        L_student = α · L_soft + (1 − α) · CE(y, z)           (z: the student's n class logits)

    The class logits are tempered, as in the official baseline: for T ≠ 1,
    ``softmax(v_class/T)`` is *not* the block sum of the tempered subclass probabilities (§6.2).
    α weights the soft term (official convention). Returns ``(total, {"soft", "hard"})``, or the
    weighted terms with ``return_terms=True``.
    """
    t = check_temperature(temperature)
    a = check_alpha(alpha)
    check_logits(student_class_logits, "student_class_logits", finite=False)
    teacher_class = subclass_to_class_logits(teacher_sub.detach(), num_classes)
    if student_class_logits.shape != teacher_class.shape:
        raise ValueError(
            f"student class logits have shape {tuple(student_class_logits.shape)} but the teacher's grouped "
            f"class logits have shape {tuple(teacher_class.shape)}"
        )
    soft = distillation_loss(student_class_logits, teacher_class, t)
    if labels is not None:
        check_labels(labels, student_class_logits.shape[0], num_classes)
    return _mix(soft, lambda: F.cross_entropy(student_class_logits, labels.long()), labels, a, return_terms)


class PenultimateDistillation(nn.Module):
    """Baseline 3 of §6 (penultimate-layer distillation), in our stated form.

    The exact form used in the paper is not known (§6.3). We regress the student's penultimate
    features ``h_s ∈ R^{d_s}`` through a learned affine map onto the (detached) teacher's
    penultimate features ``h_t ∈ R^{d_t}`` with squared error::

        L_feat    = mean_b ½ ‖W h_s,b + c − sg(h_t,b)‖²       (sum over features, mean over the batch)
        L_student = CE(y, z) + λ · L_feat                      (see :meth:`loss`)

    ``c = 0`` when ``bias=False``. ``W``/``c`` are trained jointly with the student, so this
    module's parameters must be added to the student's optimiser.
    """

    def __init__(self, student_dim: int, teacher_dim: int, bias: bool = True) -> None:
        super().__init__()
        for name, v in (("student_dim", student_dim), ("teacher_dim", teacher_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.proj = nn.Linear(student_dim, teacher_dim, bias=bias)

    @fp32
    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        """``mean_b ½ ‖W h_s + c − sg(h_t)‖²`` (in float32 under autocast)."""
        check_logits(student_features, "student_features", finite=False)
        check_logits(teacher_features, "teacher_features", finite=False)
        if student_features.shape[1] != self.student_dim or teacher_features.shape[1] != self.teacher_dim:
            raise ValueError(
                f"expected features of width {self.student_dim} (student) and {self.teacher_dim} (teacher), "
                f"got {student_features.shape[1]} and {teacher_features.shape[1]}"
            )
        if student_features.shape[0] != teacher_features.shape[0]:
            raise ValueError(
                f"batch sizes differ: {student_features.shape[0]} (student) vs "
                f"{teacher_features.shape[0]} (teacher)"
            )
        diff = self.proj(student_features) - teacher_features.detach()
        return 0.5 * diff.pow(2).sum(dim=1).mean()

    @fp32
    def loss(
        self,
        student_features: Tensor,
        teacher_features: Tensor,
        student_class_logits: Tensor,
        labels: Tensor,
        weight: float = 1.0,
        *,
        return_terms: bool = False,
    ) -> tuple[Tensor, dict[str, Tensor]] | dict[str, Tensor]:
        """``CE(y, z) + weight · L_feat``; returns ``(total, {"ce", "feat"})`` (detached, unweighted parts),
        or with ``return_terms=True`` the weighted terms ``{"hard": CE(y, z), "feat": weight · L_feat}``."""
        weight = check_weight("weight", weight)
        check_logits(student_class_logits, "student_class_logits", finite=False)
        check_labels(labels, student_class_logits.shape[0], student_class_logits.shape[1])
        ce = F.cross_entropy(student_class_logits, labels.long())
        feat = self(student_features, teacher_features)
        if return_terms:
            return {"hard": ce, "feat": weight * feat}
        return ce + weight * feat, {"ce": ce.detach(), "feat": feat.detach()}
