"""Distillation losses (Hinton, Vinyals & Dean 2015, §2; Caruana et al. logit matching).

Notation: student logits ``z``, teacher logits ``v``, temperature ``T``, ``N`` classes, batch ``B``.

* soft targets ``p = softmax(v / T)`` (Eq. 1);
* ``distillation_loss = T² · (1/B) Σ_b CE(p_b, softmax(z_b / T))``, whose gradient is
  ``∂L/∂z = T · (q − p) / B`` — Eq. 2 times ``T²`` — so its scale hardly depends on ``T`` (§2);
* as ``T → ∞`` with per-case zero-meaned logits the gradient tends to ``(z − v) / (N · B)`` (Eq. 4):
  logit matching, ``½ Σ_i (z_i − v_i)²`` per case.

Every reduction is a mean over the batch, never over classes; the teacher side never gets gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .utils import fp32

__all__ = [
    "soft_targets",
    "distillation_loss",
    "logit_matching_loss",
    "hard_loss",
    "DistillationObjective",
    "check_temperature",
    "check_weight",
    "check_alpha",
    "check_logits",
    "check_finite",
    "check_labels",
    "scaled_logits",
]


# --------------------------------------------------------------------------- checks shared by every loss


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """``float(temperature)``; ``ValueError`` unless it is a finite number > 0."""
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return t


def check_weight(name: str, value: float) -> float:
    """A loss weight: ``float(value)``; ``ValueError`` (naming it) unless it is finite and >= 0."""
    v = float(value)
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """A mixing weight: ``float(alpha)``; ``ValueError`` unless it lies in [0, 1]."""
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {alpha!r}")
    return a


def check_finite(x: Tensor, name: str = "logits") -> None:
    """``FloatingPointError`` naming the first rows of ``x`` that hold NaN or inf."""
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).nonzero().flatten()[:5].tolist()
        raise FloatingPointError(f"{name} contain NaN or inf (first bad rows: {bad})")


def check_logits(logits: Tensor, name: str = "logits", *, finite: bool = True) -> None:
    """A non-empty floating-point ``[batch, classes]`` tensor (and finite, unless ``finite=False``:
    the finiteness check synchronises with the device, which cheap per-step helpers avoid)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must have shape [batch, classes], got {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if finite:
        check_finite(logits, name)


def check_labels(labels: Tensor, batch: int, num_classes: int) -> None:
    """Integer class indices of shape ``[batch]`` in ``[0, num_classes)``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape [{batch}], got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels out of range for {num_classes} classes: labels must lie in [0, {num_classes}), "
                         f"got range [{int(labels.min())}, {int(labels.max())}]")


# --------------------------------------------------------------------------- losses


def _check_pair(student: Tensor, teacher: Tensor, tname: str = "teacher_logits") -> None:
    check_logits(student, "student_logits")
    check_logits(teacher, tname)
    if student.shape != teacher.shape:
        raise ValueError(
            f"student and teacher shapes differ: {tuple(student.shape)} vs {tuple(teacher.shape)} "
            f"(batch size or number of classes do not match)"
        )


@fp32
def soft_targets(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` along the last dimension (paper Eq. 1)."""
    t = check_temperature(temperature)
    return F.softmax(scaled_logits(logits, t), dim=-1)


def scaled_logits(logits: Tensor, temperature: float, name: str = "logits") -> Tensor:
    """``logits / T``, checked: NaN or inf in the logits (``FloatingPointError``) or a ``T`` so small that
    the division overflows (``ValueError``) are errors, not NaN rows downstream."""
    check_finite(logits, name)
    z = logits / temperature
    if not bool(torch.isfinite(z).all()):
        raise ValueError(f"temperature {temperature!r} is too small for these {name}: logits / T overflows "
                         f"(largest |logit| {float(logits.abs().max()):.3g})")
    return z


@fp32
def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None = None,
    temperature: float = 1.0,
    *,
    teacher_probs: Tensor | None = None,
    kind: str = "ce",
    scale_t2: bool = True,
) -> Tensor:
    """Soft-target loss ``T² · mean_b CE(softmax(v/T), softmax(z/T))`` (Hinton et al. 2015, §2).

    Give the teacher either as logits ``v`` or directly as soft targets ``teacher_probs`` already
    at temperature ``T`` (e.g. an ensemble's mean distribution). The teacher side is detached.
    ``kind="kl"`` returns ``T² · mean_b KL(p ‖ q)`` — the same gradient, lower by the teacher
    entropy. ``scale_t2=False`` drops the ``T²`` factor (then the gradient is Eq. 2: ``(q − p)/T``).
    """
    t = check_temperature(temperature)
    if (teacher_logits is None) == (teacher_probs is None):
        raise ValueError("give exactly one of teacher_logits or teacher_probs")
    if teacher_probs is None:
        _check_pair(student_logits, teacher_logits)
        log_p = F.log_softmax(teacher_logits.detach() / t, dim=-1)
        p = log_p.exp()
    else:
        _check_pair(student_logits, teacher_probs, "teacher_probs")
        p = teacher_probs.detach()
        tol = 1e-3 if p.dtype in (torch.float32, torch.float64) else 5e-2
        if bool((p < 0).any()) or not bool(((p.sum(dim=-1) - 1).abs() <= tol).all()):
            raise ValueError("teacher_probs must be probabilities (>= 0, rows summing to 1); "
                             "pass logits as teacher_logits")
        log_p = None
    log_q = F.log_softmax(student_logits / t, dim=-1)
    if kind == "ce":
        per_case = -(p * log_q).sum(dim=-1)
    elif kind == "kl":
        if log_p is None:
            log_p = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        per_case = (p * (log_p - log_q)).sum(dim=-1)
    else:
        raise ValueError(f"kind must be 'ce' or 'kl', got {kind!r}")
    loss = per_case.mean()
    return loss * (t * t) if scale_t2 else loss


@fp32
def logit_matching_loss(student_logits: Tensor, teacher_logits: Tensor, center: bool = True) -> Tensor:
    """Caruana et al.'s logit regression: ``mean_b ½ Σ_i (z_i − v_i)²``.

    With ``center=True`` each case's logits are zero-meaned first, the condition under which
    high-temperature distillation tends to this loss (Hinton et al. 2015, §2.1, Eq. 4).
    """
    _check_pair(student_logits, teacher_logits)
    z, v = student_logits, teacher_logits.detach()
    if center:
        z = z - z.mean(dim=-1, keepdim=True)
        v = v - v.mean(dim=-1, keepdim=True)
    return 0.5 * (z - v).pow(2).sum(dim=-1).mean()


@fp32
def hard_loss(student_logits: Tensor, labels: Tensor) -> Tensor:
    """Ordinary cross-entropy with the true labels at ``T = 1`` (batch mean), with range checks.

    ``labels`` may also be the labels of a mixed batch (mixup / cutmix: anything with a ``cross_entropy(logits)``
    method, :class:`darkknowledge.data.augment.MixedTargets`): then ``mean_i lam_i·CE(z_i, y_a,i) + (1 −
    lam_i)·CE(z_i, y_b,i)`` (Zhang et al. 2018, Eq. 1), the CE against the mixed one-hot targets."""
    check_logits(student_logits, "student_logits")
    if not isinstance(labels, Tensor) and callable(getattr(labels, "cross_entropy", None)):
        return labels.cross_entropy(student_logits)
    check_labels(labels, student_logits.shape[0], student_logits.shape[1])
    return F.cross_entropy(student_logits, labels.long())


@dataclass
class DistillationObjective:
    """``w_soft · distillation_loss(z, v, T) + w_hard · CE(y, z)`` (Hinton et al. 2015, §2).

    Defaults: ``T = 4``, ``w_soft = 1``, ``w_hard = 0.1`` — "a considerably lower weight on the
    second objective". ``kind`` is ``"ce"``, ``"kl"`` or ``"logits"`` (centred logit matching, the
    ``T → ∞`` limit, for which ``T`` is ignored). :meth:`terms` gives the weighted terms a training
    method returns; calling the objective gives ``(total, unweighted terms)``.
    """

    temperature: float = 4.0
    w_soft: float = 1.0
    w_hard: float = 0.1
    kind: str = "ce"

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if self.kind not in ("ce", "kl", "logits"):
            raise ValueError(f"kind must be 'ce', 'kl' or 'logits', got {self.kind!r}")
        for name in ("w_soft", "w_hard"):
            v = getattr(self, name)
            if not (float(v) >= 0 and math.isfinite(float(v))):
                raise ValueError(f"loss weights must be finite and >= 0, got {name}={v!r}")

    def _soft(self, student_logits: Tensor, teacher_logits: Tensor | None, teacher_probs: Tensor | None,
              kind: str) -> Tensor:
        if kind == "logits":
            if teacher_logits is None:
                raise ValueError("logit matching needs teacher logits, not probabilities")
            return logit_matching_loss(student_logits, teacher_logits, center=True)
        return distillation_loss(student_logits, teacher_logits, self.temperature, teacher_probs=teacher_probs,
                                 kind=kind)

    def terms(
        self,
        student_logits: Tensor,
        labels: Tensor | None,
        teacher_logits: Tensor | None = None,
        teacher_probs: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The **weighted** terms ``{"soft": w_soft · L_soft, "hard": w_hard · CE(y, z)}``; their sum is the
        training loss. ``"hard"`` is present whenever labels are given (``0 · CE`` for ``w_hard = 0``), so
        the keys of a run's log are stable; without labels ``w_hard`` must be 0.

        For ``kind="ce"`` the soft term is computed as ``T² · KL(p ‖ q)``: the teacher side is detached,
        so this has exactly the gradient of ``T² · CE(p, q)`` (they differ by the constant
        ``T² · H(p)``), and the logged value goes to 0 as the student matches the teacher instead of
        staying near the teacher's entropy.
        """
        kind = "kl" if self.kind == "ce" else self.kind
        out = {"soft": self.w_soft * self._soft(student_logits, teacher_logits, teacher_probs, kind)}
        if labels is not None:
            out["hard"] = self.w_hard * hard_loss(student_logits, labels)
        elif self.w_hard > 0:
            raise ValueError("w_hard > 0 needs labels")
        return out

    def __call__(
        self,
        student_logits: Tensor,
        labels: Tensor | None,
        teacher_logits: Tensor | None = None,
        teacher_probs: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the total loss and its unweighted named terms ``{"soft": ..., "hard": ...}`` (``"hard"``
        only when ``w_hard > 0``); the soft term is of this objective's ``kind`` (CE for ``"ce"``)."""
        losses: dict[str, Tensor] = {}
        soft = self._soft(student_logits, teacher_logits, teacher_probs, self.kind)
        losses["soft"] = soft
        total = self.w_soft * soft
        if self.w_hard > 0:
            if labels is None:
                raise ValueError("w_hard > 0 needs labels")
            hard = hard_loss(student_logits, labels)
            losses["hard"] = hard
            total = total + self.w_hard * hard
        return total, losses
