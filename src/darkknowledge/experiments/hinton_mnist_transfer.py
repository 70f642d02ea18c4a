"""Stages 6–9 of ``reproduce hinton-mnist``: students of a changed transfer set (Hinton et al. 2015 §3 and §6).

6. ``omit3``       no 3s in the transfer set; the class-3 bias shift chosen on validation;
7. ``only78``      only 7s and 8s in the transfer set; the shift of the 7 and 8 biases chosen on validation;
8. ``regulariser`` 1 %, 3 %, 10 % of the training split, hard labels vs soft targets (the analogue of §6's 3 %);
9. ``jitter``      (beyond the paper) the transfer set shifted by ±2 px, as the teacher's training set was.

:data:`TRANSFER_STAGES` lists them as ``(name, runs, collect)`` for :mod:`.hinton_mnist`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data import load_dataset
from ..engine.jobs import Job, cached_eval
from ..engine.stages import Context, Outcome
from ..metrics import apply_bias_shift, best_bias_shift, predict_logits
from ..models import load_model
from .hinton_mnist_setup import (
    FRACTIONS,
    Runs,
    gap_closed,
    mean,
    mnist_data,
    per_seed,
    rec,
    student_cfg,
    teacher_cfg,
    test_errors,
    val_errors,
    weights_path,
    with_weights,
)

__all__ = ["TRANSFER_STAGES", "omit3_cfg", "only78_cfg", "reg_cfg", "baseline_jitter_cfg", "distilled_jitter_cfg"]


# --------------------------------------------------------------------------- stages 6 and 7


#: Hinton et al. (2015) §3: inputs jittered by up to two pixels
SHIFT2 = [{"name": "shift", "max": 2}]


def omit3_cfg(ctx: Context, seed: int = 0) -> dict[str, Any]:
    s = ctx.settings
    return student_cfg(ctx, "omit3", "omit3", seed, epochs=s.transfer_epochs, data=mnist_data(ctx, exclude_classes=[3]),
                       distil=True, temperature=s.transfer_temperature)


def only78_cfg(ctx: Context, seed: int = 0) -> dict[str, Any]:
    s = ctx.settings
    return student_cfg(ctx, "only78", "only78", seed, epochs=s.transfer_epochs,
                       data=mnist_data(ctx, include_classes=[7, 8]), distil=True, temperature=s.transfer_temperature)


def _bias_shift_eval(path: str, data_dir: str | None, val_size: int, classes: Sequence[int]) -> dict[str, Any]:
    splits = load_dataset("mnist", data_dir, val_size, 0)
    model = load_model(path)
    lv, lt = predict_logits(model, splits.val.x), predict_logits(model, splits.test.x)
    shift, val_err = best_bias_shift(lv, splits.val.y, classes)
    test_shift, test_err = best_bias_shift(lt, splits.test.y, classes)
    return {"val_logits": lv, "test_logits": lt, "val_y": splits.val.y, "test_y": splits.test.y, "shift": shift,
            "val_errors_after": val_err, "val_errors_before": int((lv.argmax(1) != splits.val.y).sum()),
            "test_tuned_shift": test_shift, "test_tuned_errors": test_err}


def _omit3_numbers(e: dict[str, Any]) -> dict[str, Any]:
    y = e["test_y"]
    is3 = y == 3

    def errs(logits: torch.Tensor) -> tuple[int, int]:
        wrong = logits.argmax(1) != y
        return int(wrong.sum()), int(wrong[is3].sum())

    before = errs(e["test_logits"])
    after = errs(apply_bias_shift(e["test_logits"], [3], e["shift"]))
    tuned = errs(apply_bias_shift(e["test_logits"], [3], e["test_tuned_shift"]))
    return {"values": {"omit3_errors_before": before[0], "omit3_errors_on3_before": before[1],
                       "omit3_errors_after": after[0], "omit3_errors_on3_after": after[1],
                       "omit3_bias_shift": e["shift"]},
            "details": {"n_test_3s": int(is3.sum()), "val_errors_before": e["val_errors_before"],
                        "val_errors_after": e["val_errors_after"], "n_val_3s": int((e["val_y"] == 3).sum()),
                        "test_tuned_shift": e["test_tuned_shift"], "test_tuned_errors": tuned[0],
                        "test_tuned_errors_on3": tuned[1]}}


def _only78_numbers(e: dict[str, Any]) -> dict[str, Any]:
    y, n = e["test_y"], len(e["test_y"])

    def rate(logits: torch.Tensor) -> float:
        return 100.0 * int((logits.argmax(1) != y).sum()) / n

    return {"values": {"only78_error_rate_before": rate(e["test_logits"]),
                       "only78_error_rate_after": rate(apply_bias_shift(e["test_logits"], [7, 8], e["shift"]))},
            "details": {"shift": e["shift"], "test_tuned_shift": e["test_tuned_shift"],
                        "test_tuned_error_rate": 100.0 * e["test_tuned_errors"] / n,
                        "val_error_rate_before": 100.0 * e["val_errors_before"] / len(e["val_y"]),
                        "val_error_rate_after": 100.0 * e["val_errors_after"] / len(e["val_y"])}}


def bias_shift_stage(key: str, cfg_fn: Callable[[Context, int], dict[str, Any]], classes: Sequence[int],
                     numbers: Callable[[dict[str, Any]], dict[str, Any]], version: int):
    """The collect of stage 6 or 7: per seed, the student on the restricted transfer set, then the bias shift of
    ``classes`` chosen on validation (cached in ``eval.json``; needs the weights only when the cache is
    missing). Values are lists over seeds; so are the details."""
    def collect(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
        values: dict[str, list[float]] = {}
        details: dict[str, Any] = {}
        for k in ctx.seeds:
            cfg = cfg_fn(ctx, k)

            def compute(cfg: dict[str, Any] = cfg) -> dict[str, Any]:
                with_weights(ctx, [cfg])
                return numbers(_bias_shift_eval(weights_path(cfg), ctx.data_dir, ctx.settings.val_size, classes))

            ev = cached_eval(cfg["out_dir"], f"{key}_bias_shift", compute, version=version)
            r = rec(ctx, cfg)  # after compute(), which may have retrained the run
            for name, v in ev["values"].items():
                values.setdefault(name, []).append(v)
            for name, v in {**ev["details"], "transfer_set_size": r["dataset"]["train"],
                            "selected_epoch": r["final"]["selected_epoch"]}.items():
                details.setdefault(name, []).append(v)
        return Outcome(values, {key: {**details, "seeds": list(ctx.seeds)}})

    return collect


# --------------------------------------------------------------------------- stage 8


def reg_cfg(ctx: Context, pct: int, mode: str, seed: int = 0) -> dict[str, Any]:
    s = ctx.settings
    cfg = student_cfg(ctx, "regulariser", f"{mode}{pct}pct", seed, epochs=s.reg_epochs[pct],
                      data=mnist_data(ctx, fraction=pct / 100), distil=mode == "soft",
                      temperature=s.transfer_temperature)
    return {**cfg, "batch_size": s.reg_batch_size}


def reg_runs(ctx: Context) -> list[Job]:
    return [Job(reg_cfg(ctx, p, mode, k), {"track_train": True, "track_test": True})
            for p in FRACTIONS for mode in ("hard", "soft") for k in ctx.seeds]


def reg_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    """Per fraction and targets, every seed; the curves (train / test accuracy per epoch) are averaged over
    seeds, and the summary values are at each run's validation-selected epoch."""
    values: dict[str, list[float]] = {}
    curves: dict[str, dict[str, Any]] = {}
    for p in FRACTIONS:
        curves[str(p)] = {}
        for mode in ("hard", "soft"):
            per: list[dict[str, Any]] = []
            for k in ctx.seeds:
                r = rec(ctx, reg_cfg(ctx, p, mode, k))
                ep, sel = r["epochs"], r["final"]["selected_epoch"]
                per.append({"train": [100 * e["train"]["accuracy"] for e in ep],
                            "test": [100 * e["test"]["accuracy"] for e in ep],
                            "test_nll": [e["test"]["nll"] for e in ep], "sel": sel})
                values.setdefault(f"reg{p}pct_{mode}_test_acc", []).append(100 * r["final"]["test"]["accuracy"])
                values.setdefault(f"reg{p}pct_{mode}_train_acc", []).append(per[-1]["train"][sel - 1])
            avg = {f: [mean(v) for v in zip(*(x[f] for x in per))] for f in ("train", "test", "test_nll")}
            curves[str(p)][mode] = {
                **avg, "selected_epochs": [x["sel"] for x in per], "n_train": r["dataset"]["train"],
                "final_test": avg["test"][-1], "final_train": avg["train"][-1],
                "best_test": mean([max(x["test"]) for x in per]), "final_test_nll": avg["test_nll"][-1],
                "selected_test_nll": mean([x["test_nll"][x["sel"] - 1] for x in per])}
    return Outcome(values, {"regulariser": {"curves": curves, "seeds": list(ctx.seeds)}})


# --------------------------------------------------------------------------- stage 9 (beyond the paper)


def baseline_jitter_cfg(ctx: Context, seed: int) -> dict[str, Any]:
    s = ctx.settings
    return student_cfg(ctx, "jitter", "baseline_jitter", seed, epochs=s.jitter_epochs,
                       data=mnist_data(ctx, augment=SHIFT2))


def distilled_jitter_cfg(ctx: Context, seed: int) -> dict[str, Any]:
    s = ctx.settings
    return student_cfg(ctx, "jitter", "distilled_jitter", seed, epochs=s.jitter_epochs,
                       data=mnist_data(ctx, augment=SHIFT2), distil=True, temperature=s.jitter_temperature,
                       teacher_recipe=s.jitter_teacher)


def jitter_runs(ctx: Context) -> list[Job]:
    return per_seed(baseline_jitter_cfg)(ctx) + per_seed(distilled_jitter_cfg)(ctx)


def jitter_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    """Per seed: the 2×800 student trained on labels with ±2 px shifts (the control: what the shifts alone
    give) and distilled from the teacher's outputs on the shifted images (a live teacher, a new transfer
    example every step); the gap closed against these students' own teachers (``Settings.jitter_teacher``)."""
    s = ctx.settings
    base = [rec(ctx, baseline_jitter_cfg(ctx, k)) for k in ctx.seeds]
    dist = [rec(ctx, distilled_jitter_cfg(ctx, k)) for k in ctx.seeds]
    teachers = [test_errors(rec(ctx, teacher_cfg(ctx, k, s.jitter_teacher))) for k in ctx.seeds]
    values = {"baseline_jitter_errors": [test_errors(x) for x in base],
              "distilled_jitter_errors": [test_errors(x) for x in dist]}
    if "baseline_errors" in ctx.values:
        values["gap_closed_jitter"] = gap_closed(teachers, ctx.values["baseline_errors"],
                                                 values["distilled_jitter_errors"])
    d = {"selected_epochs": {"baseline": [x["final"]["selected_epoch"] for x in base],
                             "distilled": [x["final"]["selected_epoch"] for x in dist]},
         "val_errors": {"baseline": [val_errors(x) for x in base], "distilled": [val_errors(x) for x in dist]},
         "temperature": s.jitter_temperature, "epochs": s.jitter_epochs,
         "teacher_recipe": s.jitter_teacher or s.teacher_recipe, "teacher_errors": teachers, "seeds": list(ctx.seeds)}
    return Outcome(values, {"jitter": d})


TRANSFER_STAGES: list[tuple[str, Runs, Callable[[Context, list[dict[str, Any]]], Outcome]]] = [
    ("omit3", per_seed(omit3_cfg), bias_shift_stage("omit3", omit3_cfg, [3], _omit3_numbers, version=2)),
    ("only78", per_seed(only78_cfg), bias_shift_stage("only78", only78_cfg, [7, 8], _only78_numbers, version=2)),
    ("regulariser", reg_runs, reg_numbers),
    ("jitter", jitter_runs, jitter_numbers),
]
