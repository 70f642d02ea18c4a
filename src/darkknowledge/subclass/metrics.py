"""Evaluation of subclass distillation (Müller, Kornblith & Hinton 2020, §7): contingency, matched
recovery (Hungarian), purity, NMI, subclass usage and chance levels.

No subclass labels are used by any loss; they only enter these metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = [
    "subclass_contingency",
    "subclass_recovery",
    "subclass_purity",
    "subclass_nmi",
    "subclass_usage",
    "chance_subclass_recovery",
    "evaluate_subclasses",
    "chance_levels",
]

ArrayLike = Tensor | np.ndarray | Sequence[int]


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


def evaluate_subclasses(subclass_logits: Tensor, y: Tensor, fine: Tensor, subclasses: int) -> dict[str, Any]:
    """Class accuracy and the §7 subclass metrics of a model's ``[N, n·s]`` subclass logits on ``(y, fine)``.

    The class prediction is the argmax of the logsumexp-grouped class logits ``log Σ_j exp z_{c,j}``
    (§2); ``recovery``: global Hungarian matching of the ``n·s`` predicted subclasses (argmax) to the
    fine labels; ``recovery_within``: matching restricted to each class's own block (fine label ``f``
    belongs to class ``f // s``); ``nmi``; ``num_used`` (subclasses with ≥ 1 % of the examples),
    ``usage_entropy`` (mean normalised usage entropy per class), ``counts`` per subclass and the full
    ``[n·s, F]`` contingency table ``C[predicted subclass, fine label]``."""
    import torch

    z = subclass_logits.float()
    n = z.shape[1] // subclasses
    pred = z.argmax(1).numpy()
    class_pred = torch.logsumexp(z.view(-1, n, subclasses), -1).argmax(1)
    f = _as_int_array(fine, "fine")
    coarse_of_fine = np.arange(int(f.max()) + 1) // subclasses
    usage = subclass_usage(pred, n, subclasses)
    contingency = np.zeros((n * subclasses, int(f.max()) + 1), dtype=np.int64)
    np.add.at(contingency, (pred, f), 1)
    return {
        "accuracy": float((class_pred == y).float().mean()),
        "recovery": subclass_recovery(pred, f),
        "recovery_within": subclass_recovery(pred, f, within_class=True, subclasses=subclasses,
                                             coarse_of_fine=coarse_of_fine),
        "nmi": subclass_nmi(pred, f),
        "num_used": usage["num_used"],
        "usage_entropy": float(np.mean(usage["normalized_entropy_per_class"])),
        "counts": usage["counts"].tolist(),
        "contingency": contingency.tolist(),
    }


def chance_levels(fine: ArrayLike, subclasses: int) -> dict[str, float]:
    """Floors for the recovery of ``n·s`` subclasses against fine labels ``f`` of class ``f // s``
    (:func:`chance_subclass_recovery`): a predictor that knows the class but guesses the subclass
    uniformly (``class_aware``, the fair floor for a teacher trained on class labels), one that guesses
    among all ``n·s`` ids (``blind``), and the majority fine label per class (``majority``)."""
    f = _as_int_array(fine, "fine")
    n_fine = int(f.max()) + 1
    coarse_of_fine = np.arange(n_fine) // subclasses
    k = (n_fine // subclasses) * subclasses
    return {
        "class_aware": chance_subclass_recovery(f, k, coarse_of_fine=coarse_of_fine),
        "blind": chance_subclass_recovery(f, k),
        "majority": chance_subclass_recovery(f, k, coarse_of_fine=coarse_of_fine, method="majority"),
    }
