"""Evaluating a generalist with specialists: Hinton, Vinyals & Dean (2015), §5.3, Tables 3 and 4.

* :func:`accuracy`: top-1 test accuracy ("Test accuracy", Table 3).
* :func:`conditional_accuracy`: "the accuracy when only considering examples belonging to the specialist
  classes, and restricting our predictions to that subset of classes" ("Conditional test accuracy",
  Table 3; spec §4.4).
* :func:`gain_by_coverage`: the change in top-1 correct examples grouped by how many specialists cover
  the true class (Table 4); :func:`pooled_gain_by_coverage`: its rows summed over runs (seeds).
* :func:`combination_metrics`: all of these for a generalist and its combination with the specialists, and
  what an active set (n = ``top_n``) can fix.

``probs`` may be probabilities or logits ``[N, C]`` (only the argmax is used; ties go to the lowest
class id); class subsets are lists of class ids or an ``[M, C]`` boolean membership matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .combine import active_specialists, membership_matrix

__all__ = ["accuracy", "covered_classes", "coverage_counts", "conditional_accuracy", "gain_by_coverage",
           "pooled_gain_by_coverage", "combination_metrics"]


def _pair(probs: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    probs, y = torch.as_tensor(probs), torch.as_tensor(y).long().to(torch.as_tensor(probs).device)
    if probs.ndim != 2 or y.ndim != 1 or probs.shape[0] != y.shape[0]:
        raise ValueError(f"need probs [N, C] and labels [N], got {tuple(probs.shape)} and {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= probs.shape[1]):
        raise ValueError(f"labels out of range 0..{probs.shape[1] - 1}")
    return probs, y


def accuracy(probs: Tensor, y: Tensor) -> float:
    """Fraction of examples whose argmax is the true class."""
    probs, y = _pair(probs, y)
    if y.numel() == 0:
        raise ValueError("no examples")
    return float((probs.argmax(1) == y).double().mean())


def covered_classes(memberships: Tensor | Sequence[Sequence[int]], num_classes: int) -> Tensor:
    """The sorted ids of the classes in at least one specialist's set (the union of the ``S^m``)."""
    return membership_matrix(memberships, num_classes).any(0).nonzero().flatten()


def coverage_counts(y: Tensor, memberships: Tensor | Sequence[Sequence[int]], num_classes: int) -> Tensor:
    """For every example, the number of specialists whose set ``S^m`` contains its true class ``y``."""
    per_class = membership_matrix(memberships, num_classes).sum(0)
    return per_class.to(torch.as_tensor(y).device)[torch.as_tensor(y).long()]


def conditional_accuracy(probs: Tensor, y: Tensor, memberships: Tensor | Sequence[Sequence[int]]) -> float:
    """Conditional test accuracy (Table 3): let ``U = ∪_m S^m`` be the classes covered by at least one
    specialist. Over the examples whose true class is in ``U`` only, the fraction for which
    ``argmax_{c ∈ U} probs_c`` (the prediction restricted to ``U``) is the true class. Computed the same
    way for the generalist alone and for the combination, so the two are comparable. ``nan`` if no
    example has a covered class.
    """
    probs, y = _pair(probs, y)
    u = covered_classes(memberships, probs.shape[1]).to(probs.device)
    keep = torch.isin(y, u)
    if not bool(keep.any()):
        return float("nan")
    pred = u[probs[keep][:, u].argmax(1)]
    return float((pred == y[keep]).double().mean())


def gain_by_coverage(base_probs: Tensor, new_probs: Tensor, y: Tensor,
                     memberships: Tensor | Sequence[Sequence[int]], max_count: int = 10) -> list[dict[str, Any]]:
    """Table 4: the top-1 improvement of ``new_probs`` (generalist + specialists) over ``base_probs``
    (generalist) by the number ``n`` of specialists covering the correct class.

    One row per ``n = 0, 1, …`` up to the largest ``n`` that occurs, the examples with ``n ≥ max_count``
    pooled in a last row (``"10 or more"``). Each row: ``covering`` (``n``, the lower bound for the pooled
    row), ``label``, ``examples``, ``base_correct``, ``new_correct``, ``delta_correct`` (new − base),
    ``relative_change`` (``delta_correct / base_correct``: the relative accuracy change, e.g. +3.4% for
    +1,421 on 141,993 examples; ``nan`` when the base gets none right), ``base_accuracy``, ``new_accuracy``.
    """
    base_probs, y = _pair(base_probs, y)
    new_probs, _ = _pair(new_probs, y)
    if base_probs.shape != new_probs.shape:
        raise ValueError(f"base {tuple(base_probs.shape)} and new {tuple(new_probs.shape)} probabilities differ")
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    n = coverage_counts(y, memberships, base_probs.shape[1]).to(y.device).clamp(max=max_count)
    base_ok, new_ok = base_probs.argmax(1) == y, new_probs.argmax(1) == y
    rows = []
    for k in range(int(n.max()) + 1 if n.numel() else 0):
        sel = n == k
        cnt, b, w = int(sel.sum()), int(base_ok[sel].sum()), int(new_ok[sel].sum())
        rows.append({
            "covering": k, "label": f"{k} or more" if k == max_count else str(k), "examples": cnt,
            "base_correct": b, "new_correct": w, "delta_correct": w - b,
            "relative_change": (w - b) / b if b else float("nan"),
            "base_accuracy": b / cnt if cnt else float("nan"), "new_accuracy": w / cnt if cnt else float("nan"),
        })
    return rows


def pooled_gain_by_coverage(rows_by_run: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Table 4 rows of several runs (e.g. seeds) summed by ``covering``: ``examples``, ``base_correct``,
    ``new_correct``, then ``delta_correct`` and ``relative_change = delta_correct / base_correct`` (``nan`` when
    the base gets none right) of the sums, ordered by ``covering``."""
    acc: dict[int, dict[str, Any]] = {}
    for rows in rows_by_run:
        for r in rows:
            a = acc.setdefault(r["covering"], {"covering": r["covering"], "label": r["label"], "examples": 0,
                                               "base_correct": 0, "new_correct": 0})
            for k in ("examples", "base_correct", "new_correct"):
                a[k] += r[k]
    out = []
    for k in sorted(acc):
        a = acc[k]
        a["delta_correct"] = a["new_correct"] - a["base_correct"]
        a["relative_change"] = a["delta_correct"] / a["base_correct"] if a["base_correct"] else float("nan")
        out.append(a)
    return out


def combination_metrics(p_g: Tensor, q: Tensor, y: Tensor, memberships: Tensor | Sequence[Sequence[int]],
                        top_n: int = 1) -> dict[str, Any]:
    """The generalist ``p_g`` and the combination ``q`` (Eq. 5) on labelled examples ``y``: ``generalist_acc``,
    ``specialists_acc``, ``rel_gain = (specialists_acc − generalist_acc) / generalist_acc`` (Table 3's relative
    gain), both conditional accuracies, ``table4`` (:func:`gain_by_coverage`), ``n_test`` (examples), ``fixed`` /
    ``broken`` (top-1 wrong → right / right → wrong), ``changed`` (top-1 differs), ``share_with_active``
    (examples with an active specialist, n = ``top_n``), ``share_true_class_in_active`` (examples whose true
    class an active specialist covers: the only ones the combination can fix), ``mean_active`` and
    ``mean_coverage`` (specialists covering the true class), per example."""
    p_g, y = _pair(p_g, y)
    q, _ = _pair(q, y)
    g_acc, s_acc = accuracy(p_g, y), accuracy(q, y)
    act = active_specialists(p_g, memberships, top_n)
    mb = membership_matrix(memberships, p_g.shape[1]).to(y.device)
    g_ok, s_ok = p_g.argmax(1) == y, q.argmax(1) == y
    return {
        "generalist_acc": g_acc, "specialists_acc": s_acc,
        "rel_gain": (s_acc - g_acc) / g_acc if g_acc else float("nan"),
        "generalist_cond_acc": conditional_accuracy(p_g, y, memberships),
        "specialists_cond_acc": conditional_accuracy(q, y, memberships),
        "table4": gain_by_coverage(p_g, q, y, memberships),
        "n_test": int(len(y)), "fixed": int((~g_ok & s_ok).sum()), "broken": int((g_ok & ~s_ok).sum()),
        "changed": int((p_g.argmax(1) != q.argmax(1)).sum()),
        "share_with_active": float(act.any(1).double().mean()),
        "share_true_class_in_active": float((act & mb[:, y].T).any(1).double().mean()),
        "mean_active": float(act.sum(1).double().mean()),
        "mean_coverage": float(coverage_counts(y, memberships, p_g.shape[1]).double().mean()),
    }
