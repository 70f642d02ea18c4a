"""A generalist and its specialists evaluated on a dataset's splits: Hinton, Vinyals & Dean (2015), §5.2–5.3.

:func:`evaluate_combination` runs the three steps of the paper's inference once per split:

1. **validation** — the dustbin bias correction rule: a specialist trained on 50/50 data saw its special
   classes more often than their natural share ``f`` of the training set, so its dustbin logit is raised by the
   paper's ``log(0.5/f)`` or by the exact prior shift ``log((1 − f)/f)`` (:func:`~.data.dustbin_shift`). The
   rule whose Eq. 5 combination is more accurate on validation is kept (a tie: the paper's);
2. **test** — the Table 3 / Table 4 numbers of the generalist and the combination
   (:func:`~.metrics.combination_metrics`) with the chosen correction;
3. **training** — the combination ``q`` itself, the soft targets to distil the combination back into one network.

Every combination is the batched Eq. 5 solve (:func:`~.combine.combine`, float64) of the generalist and its
active specialists (its ``top_n`` classes).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .combine import combine, specialist_probs
from .data import dustbin_shift, special_fraction
from .metrics import accuracy, combination_metrics

__all__ = ["evaluate_combination", "DUSTBIN_RULES"]

DUSTBIN_RULES = ("paper", "prior")


def evaluate_combination(generalist: nn.Module, specialists: Sequence[nn.Module], classes: Sequence[Sequence[int]],
                         splits: Any, top_n: int = 1, batch_size: int = 256) -> tuple[dict[str, Any], Tensor]:
    """Steps 1–3 of the module docstring on ``splits`` (a :class:`~darkknowledge.data.Splits`: train, val, test).

    ``specialists``: trained, *without* the dustbin correction (it is applied to their outputs here), their
    outputs over ``classes[m]`` + dustbin. Returns ``(info, q_train)``: ``info`` holds ``rule``,
    ``val_acc_by_rule``, ``generalist_val_acc``, ``shifts`` (of the rule), ``shifts_by_rule``,
    ``special_fractions``, the test metrics of :func:`~.metrics.combination_metrics`, ``train_acc_combination``
    and ``solver`` (the solver's info and seconds on test and train); ``q_train`` [N_train, C] (float64).
    """
    from ..metrics import predict_logits

    sets = [list(map(int, cl)) for cl in classes]
    fracs = [special_fraction(splits.train.y, cl) for cl in sets]
    rules = {r: [dustbin_shift(f, rule=r) for f in fracs] for r in DUSTBIN_RULES}
    logits: dict[str, tuple[Tensor, list[Tensor]]] = {}

    def solve(part: str, rule: str) -> tuple[Tensor, Tensor, dict[str, Any], float]:
        if part not in logits:
            x = getattr(splits, part).x
            logits[part] = (predict_logits(generalist, x, batch_size),
                            [predict_logits(sp, x, batch_size) for sp in specialists])
        p_g, p_s = specialist_probs(*logits[part], rules[rule])
        t0 = time.perf_counter()
        q, info = combine(p_g, p_s, sets, top_n=top_n, return_info=True)
        return p_g, q, info, time.perf_counter() - t0

    val = {r: solve("val", r) for r in rules}
    val_acc = {r: accuracy(v[1], splits.val.y) for r, v in val.items()}
    rule = "prior" if val_acc["prior"] > val_acc["paper"] else "paper"
    p_g, q, info, secs = solve("test", rule)
    _, q_train, info_train, secs_train = solve("train", rule)
    out = {"rule": rule, "val_acc_by_rule": val_acc, "generalist_val_acc": accuracy(val[rule][0], splits.val.y),
           "shifts": rules[rule], "shifts_by_rule": rules, "special_fractions": fracs,
           **combination_metrics(p_g, q, splits.test.y, sets, top_n),
           "train_acc_combination": accuracy(q_train, splits.train.y),
           "solver": {"test": {**info, "seconds": secs}, "train": {**info_train, "seconds": secs_train}}}
    return out, q_train
