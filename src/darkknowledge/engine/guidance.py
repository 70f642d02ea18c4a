"""Warnings, with numbers, for the two usual reasons distillation does not help (Hinton et al. 2015 §2-3):
a teacher that is not clearly better than its student, and a soft term that stops moving (so the student is
not learning from the teacher: a learning rate too small for the T²-scaled term, a temperature so high that
the targets are uniform, or a schedule that has already annealed)."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["teacher_margin_warning", "soft_term_warning"]

log = logging.getLogger("darkknowledge")


def teacher_margin_warning(teacher_val: dict[str, Any] | None, student_val: dict[str, Any] | None,
                           min_ratio: float = 0.9) -> str | None:
    """A warning when the teacher's validation errors are not below ``min_ratio`` × the student's."""
    if not teacher_val or not student_val:
        return None
    t, s = teacher_val["errors"], student_val["errors"]
    if t <= min_ratio * s:
        return None
    msg = (f"the teacher is not clearly better than the student on validation ({t} vs {s} errors, accuracy "
           f"{100 * teacher_val['accuracy']:.2f}% vs {100 * student_val['accuracy']:.2f}%): distillation can "
           "only pass on what the teacher knows beyond the labels — use a stronger teacher or expect little gain")
    log.warning(msg)
    return msg


def soft_term_warning(history: list[dict[str, Any]], epochs: int = 3, min_change: float = 0.01) -> str | None:
    """A warning when the logged soft term (``T²·KL``, 0 when the student matches the teacher) changed by
    less than ``min_change`` (relative) over the first ``epochs`` epochs."""
    if len(history) != epochs:
        return None
    first, last = history[0]["train_loss"].get("soft"), history[-1]["train_loss"].get("soft")
    if first is None or last is None or first <= 0:
        return None
    change = (first - last) / first
    if change >= min_change:
        return None
    msg = (f"the soft term has not moved in the first {epochs} epochs ({first:.4g} → {last:.4g}, "
           f"{100 * change:+.1f}%): the student is not learning from the teacher — try a larger learning rate "
           "(the term scales with T²), a lower temperature, or a schedule that has not annealed yet")
    log.warning(msg)
    return msg
