"""Subclass distillation (Müller, Kornblith & Hinton 2020, arXiv:2002.03936).

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
  penultimate-layer regression through a learned linear map (our stated form);
* evaluation (§7): matched subclass accuracy (Hungarian matching), NMI, and subclass usage.

No subclass labels are used by any loss; they only enter the evaluation metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .utils import fp32

__all__ = [
    "subclass_to_class_logits",
    "subclass_auxiliary_loss",
    "SubclassHead",
    "subclass_teacher_loss",
    "subclass_distillation_loss",
    "conventional_class_distillation_loss",
    "PenultimateDistillation",
    "subclass_contingency",
    "subclass_recovery",
    "subclass_purity",
    "subclass_nmi",
    "subclass_usage",
    "chance_subclass_recovery",
]

ArrayLike = Tensor | np.ndarray | Sequence[int]


# --------------------------------------------------------------------------------------------------
# checks


def _check_temperature(temperature: float, name: str = "temperature") -> float:
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return t


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return a


def _check_2d(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [batch, logits], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def _check_finite(x: Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise FloatingPointError(f"{name} contain NaN or inf (first bad rows: {bad})")


def _num_subclasses(k: int, num_classes: int, name: str = "subclass_logits") -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if k % num_classes != 0:
        raise ValueError(
            f"{name} has {k} logits, which is not divisible by num_classes={num_classes}; "
            f"a subclass head must have num_classes * subclasses logits"
        )
    return k // int(num_classes)


def _check_labels(labels: Tensor, batch: int, num_classes: int) -> None:
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise ValueError(f"labels must have shape [{batch}], got {tuple(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]"
        )


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
    _check_2d(subclass_logits, "subclass_logits")
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
    t = _check_temperature(temperature, "aux temperature")
    _check_2d(subclass_logits, "subclass_logits")
    m, k = subclass_logits.shape
    if m < 2:
        raise ValueError(f"the auxiliary loss needs a batch of at least 2 examples (negatives), got {m}")
    if k < 2:
        raise ValueError(f"the auxiliary loss needs at least 2 subclass logits per example, got {k}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    _check_finite(subclass_logits, "subclass_logits")
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
) -> tuple[Tensor, dict[str, Tensor]]:
    """Teacher loss of §4: ``L = CE(y, class_logits(z_sub)) + β · L_aux(z_sub)``.

    The class cross-entropy is at T = 1 (never divided by the distillation temperature, §10) and
    uses only the class labels. Returns ``(total, parts)`` where ``parts`` holds detached copies
    of the named terms: ``"ce"`` and, when ``β ≠ 0``, ``"aux"`` (the unweighted ``L_aux``).

    With ``β == 0`` the auxiliary loss is not computed at all (so no batch-size or finiteness
    requirement from it), ``"aux"`` is absent from ``parts``, and ``total`` is exactly the plain
    class cross-entropy. Demo values: β = 1, T_aux = 1.
    """
    beta = float(beta)
    if not (beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    class_logits = subclass_to_class_logits(subclass_logits, num_classes)
    _check_labels(labels, subclass_logits.shape[0], num_classes)
    ce = F.cross_entropy(class_logits, labels.long())
    if beta == 0.0:
        return ce, {"ce": ce.detach()}
    aux = subclass_auxiliary_loss(subclass_logits, temperature=aux_temperature)
    total = ce + beta * aux
    return total, {"ce": ce.detach(), "aux": aux.detach()}


@fp32
def _soft_ce(student_logits: Tensor, teacher_logits: Tensor, t: float) -> Tensor:
    """``T² · mean_b Σ_j −softmax(sg(v)/T)_j · log_softmax(z/T)_j`` (mean over the batch only)."""
    p = F.softmax(teacher_logits.detach() / t, dim=-1)
    log_q = F.log_softmax(student_logits / t, dim=-1)
    return -(p * log_q).sum(dim=-1).mean() * (t * t)


@fp32
def subclass_distillation_loss(
    student_sub: Tensor,
    teacher_sub: Tensor,
    labels: Tensor | None,
    num_classes: int,
    temperature: float = 4.0,
    alpha: float = 0.5,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Student loss of §5 (subclass distillation)::

        L_soft    = T² · mean_b Σ_{j<n·s} −p_bj · log q_bj,   p = softmax(sg(v_sub)/T), q = softmax(z_sub/T)
        L_hard    = CE(y, class_logits(z_sub))                 (T = 1, logsumexp grouping)
        L_student = α · L_soft + (1 − α) · L_hard

    **α weights the soft (distillation) term**, following the official code's convention (the
    paper's notation may differ, §5). Demo: α = 0.5, T = 4. The teacher logits are detached, so
    the teacher never receives gradient; ``∂(α·L_soft)/∂z_sub = α · T · (q − p) / B``.
    ``labels`` may be ``None`` only when ``α == 1`` (pure distillation on unlabelled data).
    Returns ``(total, {"soft": ..., "hard": ...})`` (detached parts; ``"hard"`` absent without labels).
    """
    t = _check_temperature(temperature)
    a = _check_alpha(alpha)
    _check_2d(student_sub, "student_sub")
    _check_2d(teacher_sub, "teacher_sub")
    if student_sub.shape != teacher_sub.shape:
        raise ValueError(
            f"student and teacher subclass logits differ in shape: {tuple(student_sub.shape)} vs "
            f"{tuple(teacher_sub.shape)} (both need num_classes * subclasses logits)"
        )
    _num_subclasses(student_sub.shape[1], num_classes, "student_sub")
    soft = _soft_ce(student_sub, teacher_sub, t)
    parts = {"soft": soft.detach()}
    if labels is None:
        if a != 1.0:
            raise ValueError("labels may be None only when alpha == 1 (no hard-label term)")
        return a * soft, parts
    _check_labels(labels, student_sub.shape[0], num_classes)
    hard = F.cross_entropy(subclass_to_class_logits(student_sub, num_classes), labels.long())
    parts["hard"] = hard.detach()
    return a * soft + (1.0 - a) * hard, parts


@fp32
def conventional_class_distillation_loss(
    student_class_logits: Tensor,
    teacher_sub: Tensor,
    labels: Tensor | None,
    num_classes: int,
    temperature: float = 4.0,
    alpha: float = 0.5,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Baseline 2 of §6: conventional distillation on the subclass teacher's class probabilities::

        v_class   = class_logits(sg(v_sub))                   (logsumexp grouping)
        L_soft    = T² · mean_b Σ_{c<n} −softmax(v_class/T)_c · log_softmax(z/T)_c
        L_student = α · L_soft + (1 − α) · CE(y, z)           (z: the student's n class logits)

    The class logits are tempered, as in the official baseline: for T ≠ 1,
    ``softmax(v_class/T)`` is *not* the block sum of the tempered subclass probabilities (§6.2).
    α weights the soft term (official convention). Returns ``(total, {"soft", "hard"})``.
    """
    t = _check_temperature(temperature)
    a = _check_alpha(alpha)
    _check_2d(student_class_logits, "student_class_logits")
    teacher_class = subclass_to_class_logits(teacher_sub.detach(), num_classes)
    if student_class_logits.shape != teacher_class.shape:
        raise ValueError(
            f"student class logits have shape {tuple(student_class_logits.shape)} but the teacher's grouped "
            f"class logits have shape {tuple(teacher_class.shape)}"
        )
    soft = _soft_ce(student_class_logits, teacher_class, t)
    parts = {"soft": soft.detach()}
    if labels is None:
        if a != 1.0:
            raise ValueError("labels may be None only when alpha == 1 (no hard-label term)")
        return a * soft, parts
    _check_labels(labels, student_class_logits.shape[0], num_classes)
    hard = F.cross_entropy(student_class_logits, labels.long())
    parts["hard"] = hard.detach()
    return a * soft + (1.0 - a) * hard, parts


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
        _check_2d(student_features, "student_features")
        _check_2d(teacher_features, "teacher_features")
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
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``CE(y, z) + weight · L_feat``; returns ``(total, {"ce", "feat"})`` (detached parts)."""
        _check_2d(student_class_logits, "student_class_logits")
        _check_labels(labels, student_class_logits.shape[0], student_class_logits.shape[1])
        ce = F.cross_entropy(student_class_logits, labels.long())
        feat = self(student_features, teacher_features)
        return ce + float(weight) * feat, {"ce": ce.detach(), "feat": feat.detach()}


# --------------------------------------------------------------------------------------------------
# evaluation (§7)


def _as_int_array(x: ArrayLike, name: str, allow_logits: bool = False) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if allow_logits and a.ndim == 2:
        a = a.argmax(axis=1)
    if a.ndim != 1:
        what = " or [N, K] logits" if allow_logits else ""
        raise ValueError(f"{name} must be 1-D (one id per example){what}, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer ids, got dtype {a.dtype}")
    if a.min() < 0:
        raise ValueError(f"{name} must hold non-negative ids, got minimum {a.min()}")
    return a.astype(np.int64, copy=False)


def _pair(pred: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _as_int_array(pred, "pred_subclass", allow_logits=True)
    t = _as_int_array(true, "true_fine")
    if p.shape != t.shape:
        raise ValueError(f"pred_subclass has {p.shape[0]} examples but true_fine has {t.shape[0]}")
    return p, t


def subclass_contingency(
    pred_subclass: ArrayLike, true_fine: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency matrix ``C[i, j] = #{pred == p_ids[i] and true == t_ids[j]}``.

    ``pred_subclass`` may be ids ``[N]`` or logits ``[N, K]`` (argmax taken). Returns
    ``(C, p_ids, t_ids)`` over the ids that occur.
    """
    p, t = _pair(pred_subclass, true_fine)
    p_ids, pi = np.unique(p, return_inverse=True)
    t_ids, ti = np.unique(t, return_inverse=True)
    c = np.zeros((p_ids.size, t_ids.size), dtype=np.int64)
    np.add.at(c, (pi, ti), 1)
    return c, p_ids, t_ids


def _lookup(mapping: ArrayLike, ids: np.ndarray, name: str) -> np.ndarray:
    m = _as_int_array(mapping, name)
    if ids.max() >= m.size:
        raise ValueError(f"{name} has {m.size} entries but id {ids.max()} occurs")
    return m[ids]


def subclass_recovery(
    pred_subclass: ArrayLike,
    true_fine: ArrayLike,
    coarse_of_pred: ArrayLike | None = None,
    *,
    within_class: bool = False,
    num_classes: int | None = None,
    subclasses: int | None = None,
    coarse_of_fine: ArrayLike | None = None,
) -> float:
    """Matched subclass accuracy (§7): the accuracy of the predicted subclass against the true fine
    label under the best one-to-one matching of predicted subclasses to fine labels.

    ``pred_subclass``: predicted subclass ids ``[N]`` or subclass logits ``[N, n·s]`` (argmax is
    taken). The matching maximises the matched count of the contingency matrix
    (``scipy.optimize.linear_sum_assignment`` on ``−C``); it may be rectangular (``n·s`` ≠ number of
    fine labels), and examples whose predicted subclass or fine label is left unmatched count as
    errors.

    * **Default, ``within_class=False``: global matching** over all predicted subclasses and all fine
      labels — the protocol of §7 ("the permutation with the highest accuracy").
    * ``within_class=True``: a predicted subclass may only be matched to a fine label of the same
      class (equivalently, a separate matching inside each class). Needs ``coarse_of_fine`` (array:
      fine label → class) and the class of each predicted subclass, given either as
      ``coarse_of_pred`` (array: subclass id → class) or by ``subclasses`` (block layout: class
      ``= id // subclasses``). ``num_classes`` (optional) validates the ids. Within-class recovery is
      never above the global one.
    """
    p, t = _pair(pred_subclass, true_fine)
    if num_classes is not None and subclasses is not None and p.max() >= num_classes * subclasses:
        raise ValueError(
            f"predicted subclass id {p.max()} >= num_classes * subclasses = {num_classes * subclasses}"
        )
    c, p_ids, t_ids = subclass_contingency(p, t)
    if within_class:
        if coarse_of_fine is None:
            raise ValueError("within_class=True needs coarse_of_fine (the class of every fine label)")
        if coarse_of_pred is not None:
            pc = _lookup(coarse_of_pred, p_ids, "coarse_of_pred")
        elif subclasses is not None:
            if subclasses < 1:
                raise ValueError(f"subclasses must be >= 1, got {subclasses}")
            pc = p_ids // subclasses
        else:
            raise ValueError(
                "within_class=True needs coarse_of_pred or subclasses (the class of every subclass)"
            )
        tc = _lookup(coarse_of_fine, t_ids, "coarse_of_fine")
        c = np.where(pc[:, None] == tc[None, :], c, 0)
    elif coarse_of_pred is not None or coarse_of_fine is not None:
        raise ValueError("coarse_of_pred / coarse_of_fine are only used with within_class=True")
    rows, cols = linear_sum_assignment(-c)
    return float(c[rows, cols].sum() / p.size)


def subclass_purity(pred_subclass: ArrayLike, true_fine: ArrayLike) -> float:
    """Many-to-one purity (§7): each predicted subclass is mapped to its majority fine label.

    Purity rises with the number of predicted subclasses (it is 1 with one cluster per example), so
    report it only alongside :func:`subclass_recovery`.
    """
    c, _, _ = subclass_contingency(pred_subclass, true_fine)
    return float(c.max(axis=1).sum() / c.sum())


def subclass_nmi(pred_subclass: ArrayLike, true_fine: ArrayLike) -> float:
    """Normalised mutual information between predicted subclass and true fine label (§7).

    ``sklearn.metrics.normalized_mutual_info_score`` (arithmetic normalisation); invariant to any
    relabelling of either side. ``pred_subclass`` may be ids or ``[N, K]`` logits.
    """
    from sklearn.metrics import normalized_mutual_info_score

    p, t = _pair(pred_subclass, true_fine)
    return float(normalized_mutual_info_score(t, p))


def subclass_usage(
    pred_subclass: ArrayLike, num_classes: int, subclasses: int, threshold: float = 0.01
) -> dict[str, Any]:
    """How the predicted subclasses are used (§7) — detects subclass collapse.

    Returns a dict with

    * ``"counts"``: ``int64 [n·s]`` examples per predicted subclass;
    * ``"fractions"``: the same divided by ``N``;
    * ``"num_used"``: number of subclasses receiving ``≥ threshold`` (default 1%) of all examples;
    * ``"num_used_per_class"``: ``int64 [n]``, the same per class block;
    * ``"entropy_per_class"``: ``float64 [n]``, entropy (nats) of the subclass distribution among
      examples predicted in class ``c``'s block (0 for a class with no predictions);
    * ``"normalized_entropy_per_class"``: the entropy divided by ``log s`` (1 = uniform use, 0 =
      collapse onto one subclass; 0 when ``s = 1``).
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    k = num_classes * subclasses
    if getattr(pred_subclass, "ndim", 1) == 2 and pred_subclass.shape[1] != k:
        raise ValueError(f"pred_subclass logits have {pred_subclass.shape[1]} columns, expected {k}")
    p = _as_int_array(pred_subclass, "pred_subclass", allow_logits=True)
    if p.max() >= k:
        raise ValueError(f"predicted subclass id {p.max()} >= num_classes * subclasses = {k}")
    counts = np.bincount(p, minlength=k).astype(np.int64)
    frac = counts / p.size
    used = frac >= threshold
    block = counts.reshape(num_classes, subclasses).astype(np.float64)
    tot = block.sum(axis=1, keepdims=True)
    probs = np.divide(block, tot, out=np.zeros_like(block), where=tot > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=1)
    norm = ent / math.log(subclasses) if subclasses > 1 else np.zeros_like(ent)
    return {
        "counts": counts,
        "fractions": frac,
        "num_used": int(used.sum()),
        "num_used_per_class": used.reshape(num_classes, subclasses).sum(axis=1).astype(np.int64),
        "entropy_per_class": ent,
        "normalized_entropy_per_class": norm,
    }


def chance_subclass_recovery(
    true_fine: ArrayLike,
    num_subclasses: int | None = None,
    *,
    coarse_of_fine: ArrayLike | None = None,
    method: Literal["random", "majority"] = "random",
    draws: int = 5,
    seed: int = 0,
) -> float:
    """The matched subclass accuracy (global matching, as :func:`subclass_recovery`) of a predictor
    that knows nothing about the fine labels — the floor against which recovery is judged.

    * ``method="random"`` (default): each example's subclass is drawn uniformly from
      ``num_subclasses`` ids (default: the number of distinct fine labels); the result is the mean
      matched accuracy over ``draws`` seeded draws. The matching fits the noise, so this is a bit
      above ``1/max(K, F)``. If ``coarse_of_fine`` (fine label → class) is given, ``num_subclasses``
      must be ``n·s`` and each example's subclass is drawn uniformly from its **true class's**
      block of ``s`` — a predictor that knows the class but guesses the subclass, the fair floor
      for a teacher trained on class labels (≈ ``1/s`` for balanced data).
    * ``method="majority"``: a constant prediction — exactly the majority fine-label rate
      (or, with ``coarse_of_fine``, a constant prediction per class: Σ_c max-fine-count in c / N).
    """
    t = _as_int_array(true_fine, "true_fine")
    f_ids, ti = np.unique(t, return_inverse=True)
    coarse = None
    if coarse_of_fine is not None:
        coarse = _lookup(coarse_of_fine, t, "coarse_of_fine")
    if method == "majority":
        if coarse is None:
            return float(np.bincount(ti).max() / t.size)
        return float(sum(np.bincount(ti[coarse == c]).max() for c in np.unique(coarse)) / t.size)
    if method != "random":
        raise ValueError(f"method must be 'random' or 'majority', got {method!r}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if coarse is not None and num_subclasses is None:
        raise ValueError("with coarse_of_fine, give num_subclasses = num_classes * subclasses")
    k = int(num_subclasses) if num_subclasses is not None else int(f_ids.size)
    if k < 1:
        raise ValueError(f"num_subclasses must be >= 1, got {num_subclasses}")
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(draws):
        if coarse is None:
            pred = rng.integers(0, k, size=t.size)
        else:
            n = int(_as_int_array(coarse_of_fine, "coarse_of_fine").max()) + 1
            if k % n != 0:
                raise ValueError(f"num_subclasses={k} is not a multiple of the number of classes ({n})")
            s = k // n
            pred = coarse * s + rng.integers(0, s, size=t.size)
        accs.append(subclass_recovery(pred, t))
    return float(np.mean(accs))


# --------------------------------------------------------------------------------------------------
# models and training methods (registered by name; used by ``darkknowledge.train`` via ``method: ...``


class SubclassNet(nn.Module):
    """Any registered backbone with ``n·s`` outputs read as subclass logits (§2).

    ``forward(x)`` returns the ``n`` class logits (logsumexp grouping), so every class-level tool
    (metrics, conventional distillation, agreement) works unchanged; ``subclass_logits(x)`` returns the
    ``n·s`` subclass logits and ``forward_features(x)`` the backbone's penultimate features.
    Registered as model ``"subclass"``: ``create_model("subclass", backbone="small_cnn", subclasses=5,
    num_classes=2, in_channels=1)``.
    """

    def __init__(self, backbone: str = "mlp", num_classes: int = 2, subclasses: int = 5, **backbone_args: Any):
        super().__init__()
        from .models import create_model

        if num_classes < 1 or subclasses < 1:
            raise ValueError("num_classes and subclasses must be >= 1")
        self.num_classes, self.subclasses = num_classes, subclasses
        self.backbone = create_model(backbone, num_classes=num_classes * subclasses, **backbone_args)
        self.feature_dim = getattr(self.backbone, "feature_dim", None)

    def subclass_logits(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        return subclass_to_class_logits(self.backbone(x), self.num_classes)


def _register() -> None:
    from .methods import Method, register_method
    from .models import register_model

    register_model("subclass")(lambda **kw: SubclassNet(**kw))

    @register_method("subclass_teacher")
    class SubclassTeacherMethod(Method):
        """Teacher training of §4: ``{"ce": CE(y, class_logits(z_sub)), "aux": β · L_aux(z_sub)}``.

        A final batch of one example has no negatives, so its auxiliary term is skipped."""

        def __init__(self, student, teacher=None, beta: float = 1.0, aux_temperature: float = 1.0):
            super().__init__(student, teacher)
            if not (math.isfinite(beta) and beta >= 0):
                raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
            self.beta, self.aux_temperature = float(beta), _check_temperature(aux_temperature, "aux_temperature")

        def forward(self, x, y, idx=None):
            z_sub = self.student.subclass_logits(x)
            logits = subclass_to_class_logits(z_sub, self.student.num_classes)
            losses = {"ce": F.cross_entropy(logits, y)}
            if self.beta > 0 and z_sub.shape[0] > 1:
                losses["aux"] = self.beta * subclass_auxiliary_loss(z_sub, self.aux_temperature)
            return logits, losses

    @register_method("subclass_kd")
    class SubclassKD(Method):
        """Student training of §5: ``{"soft": α · T² · softCE(v_sub, z_sub), "hard": (1 − α) · CE(y, class(z_sub))}``.

        The teacher serves its subclass logits (``teacher_output = "subclass_logits"``)."""

        needs_teacher = True
        teacher_output = "subclass_logits"

        def __init__(self, student, teacher, temperature: float = 4.0, alpha: float = 0.5):
            super().__init__(student, teacher)
            self.temperature, self.alpha = _check_temperature(temperature), _check_alpha(alpha)

        def forward(self, x, y, idx=None):
            from .losses import distillation_loss

            z_sub = self.student.subclass_logits(x)
            logits = subclass_to_class_logits(z_sub, self.student.num_classes)
            p = self.teacher.soft_targets(x, self.temperature, idx)
            losses = {"soft": self.alpha * distillation_loss(z_sub, teacher_probs=p, temperature=self.temperature)}
            if self.alpha < 1:
                losses["hard"] = (1 - self.alpha) * F.cross_entropy(logits, y)
            return logits, losses

    @register_method("penultimate")
    class PenultimateKD(Method):
        """Penultimate-layer distillation (our form, §6.3): ``{"hard": CE(y, z), "feat": w · ½‖W h_s + c − sg(h_t)‖²}``
        (batch mean), with the learned map ``W, c`` trained alongside the student. The student needs
        ``forward_features`` and ``head``; the teacher serves ``forward_features``."""

        needs_teacher = True
        teacher_output = "forward_features"

        def __init__(self, student, teacher, weight: float = 1.0, teacher_dim: int | None = None):
            super().__init__(student, teacher)
            if teacher_dim is None:
                table = getattr(teacher, "table", None)
                src = getattr(teacher, "model", None) or next(iter(getattr(teacher, "members", [])), None)
                teacher_dim = table.shape[-1] if table is not None else getattr(src, "feature_dim", None)
            if teacher_dim is None or getattr(student, "feature_dim", None) is None:
                raise ValueError("penultimate distillation needs feature_dim on the student and the teacher")
            self.weight = float(weight)
            self.map = PenultimateDistillation(student.feature_dim, int(teacher_dim))

        def forward(self, x, y, idx=None):
            h = self.student.forward_features(x)
            logits = self.student.head(h)
            h_t = self.teacher.member_logits(x, idx).mean(dim=1)
            return logits, {"hard": F.cross_entropy(logits, y), "feat": self.weight * self.map(h, h_t)}


_register()
