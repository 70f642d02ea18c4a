"""``darkknowledge reproduce hinton-mnist``: Hinton, Vinyals & Dean (2015) §3 and §6 on MNIST.

Nine stages, each a thin set of configs over :func:`~darkknowledge.experiments.runner.run_cached`, so
every run caches its checkpoint and record under ``<out>/runs/<stage>/<name>_seed<k>/`` and a rerun
(or a killed run) picks up where it stopped. Every stage runs each seed; a student of seed ``k``
distils from the teacher of seed ``k``.

1. ``teacher``        784-1200-1200-10, dropout, max-norm, ±2 px shifts          [teacher_errors]
                      (the recipe chosen on validation among the seed-0 runs of "base" and ``TEACHER_ALTERNATIVES``)
2. ``baseline``       784-800-800-10 from labels, no regularisation              [baseline_errors]
3. ``distilled``      the same net distilled (+ a small hard term), with the    [distilled_errors, gap_closed]
                      student recipe chosen on validation (``STUDENT_ALTERNATIVES``, mean over seeds), the seed-0
                      student of the other teacher recipe (what the teacher is worth), and where the student
                      departs from its teacher (errors on the transfer set, the same images shifted, the test set)
4. ``logit_matching`` centred logit regression (the T → ∞ limit)                [logit_matching_errors]
5. ``temperature``    widths 800, 300, 30 × T ∈ {1, …, 20}                       [sweep_<w>_T<T>_errors, best_T_<w>]
6. ``omit3``          no 3s in the transfer set; class-3 bias shift              [omit3_*]
7. ``only78``         only 7s and 8s in the transfer set; 7/8 bias shift         [only78_*]
8. ``regulariser``    1 %, 3 %, 10 % of the data, hard labels vs soft targets    [reg<p>pct_*]
9. ``jitter``         (beyond the paper) the transfer set shifted by ±2 px       [*_jitter_errors]

Model selection (epochs, bias shifts, the best temperature, the teacher and student recipes) uses the validation
split carved from the 60k training images; the test set is only evaluated for reporting. Rates and
accuracies in the summary are percentages; errors are counts on the 10,000 test images. The report is
written by :mod:`.hinton_mnist_report`.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import load_dataset
from ..engine.jobs import Job, run_jobs
from ..metrics import apply_bias_shift, best_bias_shift, predict_logits
from ..models import load_model
from ..report import provenance, write_report, write_summary
from ..transforms import random_shift
from ..utils import atomic_write_json
from . import register_experiment
from .hinton_mnist_setup import (
    FRACTIONS,
    PAPER,
    STAGES,
    STUDENT_ALTERNATIVES,
    STUDENT_PROBES,
    T_LIST,
    TEACHER_ALTERNATIVES,
    WIDTHS,
    Ctx,
    MissingRun,
    Settings,
    StageResult,
    settings_for,
    summary_keys,
    t_label,
    test_errors,
    train_seconds,
    val_errors,
    with_recipe,
)
from .runner import cached_eval, finished_record

__all__ = ["run", "STAGES", "PAPER", "T_LIST", "WIDTHS", "FRACTIONS", "TEACHER_ALTERNATIVES",
           "STUDENT_ALTERNATIVES", "Settings",
           "settings_for", "best_bias_shift", "apply_bias_shift", "t_label", "summary_keys"]

# --------------------------------------------------------------------------- stages


def stage_teacher(c: Ctx) -> StageResult:
    recs = []
    for k in c.seeds:
        c.teacher(k)
        recs.append(c.run(c.teacher_cfg(k)))
    r = StageResult(records=recs)
    r.values["teacher_errors"] = [test_errors(x) for x in recs]
    r.details["selected_epochs"] = [x["final"]["selected_epoch"] for x in recs]
    r.details["val_errors"] = [val_errors(x) for x in recs]
    r.details["wall_time_s"] = [x.get("wall_time_s") for x in recs]
    if not c.s.quick:  # the recipe comparison on the seed-0 validation split
        recipes = {}
        for name in ("base", *TEACHER_ALTERNATIVES):
            try:
                recipes[name] = recs[0] if name == c.s.teacher_recipe else c.run(c.teacher_cfg(0, name))
            except MissingRun:
                continue
        r.records += [v for k, v in recipes.items() if k != c.s.teacher_recipe]
        r.details["recipes"] = {k: {"val_errors": val_errors(v), "test_errors": test_errors(v),
                                    "epochs": len(v["epochs"]), "optim": v["config"]["optim"],
                                    "max_norm": v["config"]["model"]["args"].get("max_norm"),
                                    "precision": v["config"].get("precision", "fp32"),
                                    "batch_size": v["config"]["batch_size"],
                                    "val_curve": [e["val"]["errors"] for e in v["epochs"]],
                                    "wall_time_s": v.get("wall_time_s")} for k, v in recipes.items()}
    return r


def _headline(c: Ctx, key: str, cfg_fn: Callable[[Ctx, int], dict[str, Any]]) -> StageResult:
    recs = [c.run(cfg_fn(c, k)) for k in c.seeds]
    r = StageResult(records=recs)
    r.values[key] = [test_errors(x) for x in recs]
    r.details["selected_epochs"] = [x["final"]["selected_epoch"] for x in recs]
    return r


def baseline_cfg(c: Ctx, seed: int) -> dict[str, Any]:
    return c.student_cfg("baseline", "baseline", seed)


def _named(name: str, recipe: str) -> str:
    """Runs of a recipe other than "base" live in folders of their own (``distilled_T4_seed0``)."""
    return name if recipe == "base" else f"{name}_{recipe}"


def distilled_cfg(c: Ctx, seed: int, recipe: str | None = None, teacher_recipe: str | None = None) -> dict[str, Any]:
    recipe = recipe or c.s.student_recipe
    return with_recipe(c.student_cfg("distilled", _named("distilled", recipe), seed, distil=True,
                                     teacher_recipe=teacher_recipe), recipe)


def recipe_cfg(c: Ctx, recipe: str, seed: int = 0) -> dict[str, Any]:
    """The distilled student of ``seed`` of a :data:`STUDENT_ALTERNATIVES` recipe, taught by the seed's teacher of
    ``Settings.recipe_teacher``: in ``runs/distilled/`` for the chosen recipe and for "base", the others in
    ``runs/student_recipes/``."""
    tr = c.s.recipe_teacher
    if recipe in (c.s.student_recipe, "base"):
        return distilled_cfg(c, seed, recipe, tr)
    return with_recipe(c.student_cfg("student_recipes", recipe, seed, distil=True, teacher_recipe=tr), recipe)


def recipe_cfgs(c: Ctx) -> dict[tuple[str, int], dict[str, Any]]:
    """Every run of the student-recipe comparison: each candidate for every seed, each probe for seed 0."""
    return {(name, k): recipe_cfg(c, name, k) for name in STUDENT_ALTERNATIVES
            for k in (c.seeds[:1] if name in STUDENT_PROBES else c.seeds)}


def other_teacher(c: Ctx) -> str:
    """The teacher recipe whose seed-0 teacher also teaches a stage-3 student beside the suite's (what the
    teacher is worth to the student): "base" (200 epochs) when the suite's is another, else ``adam_300ep``."""
    return "adam_300ep" if c.s.teacher_recipe == "base" else "base"


def other_teacher_student_cfg(c: Ctx) -> dict[str, Any]:
    return distilled_cfg(c, 0, teacher_recipe=other_teacher(c))


def _other_teacher(c: Ctx) -> dict[str, Any] | None:
    """The finished record of the seed-0 :func:`other_teacher` run (trained by stage 1), or None."""
    return None if c.s.quick else finished_record(c.teacher_cfg(0, other_teacher(c)))


def logits_cfg(c: Ctx, seed: int) -> dict[str, Any]:
    # w_soft = 1/N: the gradient of ½‖z − v‖² (centred) is N times the T → ∞ limit of the T²-scaled soft term;
    # the optimiser and epochs of stage 3's recipe (its temperature does not enter logit matching)
    alt = STUDENT_ALTERNATIVES[c.s.student_recipe]
    recipe = "base" if set(alt) <= {"distill"} else c.s.student_recipe
    cfg = with_recipe(c.student_cfg("logit_matching", _named("logits", recipe), seed, distil=True, kind="logits",
                                    w_soft=0.1), recipe)
    return {**cfg, "distill": {**cfg["distill"], "temperature": c.s.temperature}}


def stage_baseline(c: Ctx) -> StageResult:
    return _headline(c, "baseline_errors", baseline_cfg)


def _recipe_details(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One recipe's runs of the comparison (one per seed, in seed order)."""
    v = recs[0]
    return {"seeds": [x["seed"] for x in recs], "val_errors": [val_errors(x) for x in recs],
            "test_errors": [test_errors(x) for x in recs], "epochs": len(v["epochs"]),
            "selected_epoch": [x["final"]["selected_epoch"] for x in recs], "optim": v["config"]["optim"],
            "batch_size": v["config"]["batch_size"], "temperature": v["config"]["distill"]["temperature"],
            "w_hard": v["config"]["distill"]["w_hard"], "val_curve": [e["val"]["errors"] for e in v["epochs"]],
            "wall_time_s": [x.get("wall_time_s") for x in recs]}


def stage_distilled(c: Ctx) -> StageResult:
    r = _headline(c, "distilled_errors", distilled_cfg)
    r.details["recipe"] = c.s.student_recipe
    try:
        r.details["shift_knowledge"] = [shift_knowledge(c, k) for k in c.seeds]
    except MissingRun:  # rendering without training, and a baseline run is missing
        pass
    if not c.s.quick:  # the recipe comparison on the validation split of every seed
        recipes: dict[str, list[dict[str, Any]]] = {}
        for (name, _), cfg in recipe_cfgs(c).items():
            try:
                recipes.setdefault(name, []).append(c.run(cfg))
            except MissingRun:
                continue
        seen = {x["config"]["out_dir"] for x in r.records}
        r.records += [v for vs in recipes.values() for v in vs if v["config"]["out_dir"] not in seen]
        t_rec = _other_teacher(c)
        if t_rec is not None:  # the chosen recipe's seed-0 student of the other teacher recipe
            try:
                x = c.run(other_teacher_student_cfg(c))
            except MissingRun:
                x = None
            if x is not None:
                r.records += [x] if x["config"]["out_dir"] not in {y["config"]["out_dir"] for y in r.records} else []
                r.details["other_teacher"] = {"recipe": other_teacher(c), "teacher_val_errors": val_errors(t_rec),
                                               "teacher_test_errors": test_errors(t_rec),
                                               "student_val_errors": val_errors(x), "student_test_errors": test_errors(x)}
                r.details["seed0_student"] = {"val_errors": val_errors(r.records[0]),
                                              "test_errors": test_errors(r.records[0])}
        r.details["recipes"] = {k: _recipe_details(vs) for k, vs in recipes.items()}
    heads = r.records[:len(c.seeds)]  # the headline students
    r.details["agreement"] = [x["final"]["test"].get("agreement") for x in heads]
    # mean change of validation errors over the last 5 epochs (negative: still improving)
    late = [x["epochs"][-1]["val"]["errors"] - x["epochs"][-6]["val"]["errors"] for x in heads
            if len(x["epochs"]) > 5]
    r.details["late_val_improvement"] = sum(late) / len(late) if late else None
    return r


def _shift_eval(paths: dict[str, str], data_dir: str | None, val_size: int) -> dict[str, Any]:
    """Errors of each model and its disagreements with the teacher on the transfer set (the 55,000 unshifted
    training images), on the same images shifted by up to ±2 px (one fixed random shift each, as the teacher
    saw them in training) and on the test set."""
    splits = load_dataset("mnist", data_dir, val_size, 0)
    sets = {"transfer": (splits.train.x, splits.train.y),
            "transfer_shifted": (random_shift(splits.train.x, 2, torch.Generator().manual_seed(1234)), splits.train.y),
            "test": (splits.test.x, splits.test.y)}
    preds = {m: {k: predict_logits(load_model(p).eval(), x).argmax(1) for k, (x, _) in sets.items()}
             for m, p in paths.items()}
    return {m: {k: {"errors": int((preds[m][k] != y).sum()), "disagree_teacher": int((preds[m][k] !=
                                                                                     preds["teacher"][k]).sum())}
                for k, (_, y) in sets.items()} for m in paths}


def shift_knowledge(c: Ctx, seed: int) -> dict[str, Any]:
    """:func:`_shift_eval` of the seed's teacher, baseline and stage-3 student (cached beside the student, tied
    to the teacher's and baseline's records too): how much of what the teacher learnt from shifted images the
    soft targets of unshifted ones carry over (Hinton et al. 2015 §3: "including the knowledge about how to
    generalize that is learned from translated training data")."""
    cfgs = {"teacher": c.teacher_cfg(seed), "baseline": baseline_cfg(c, seed), "distilled": distilled_cfg(c, seed)}
    for cfg in cfgs.values():  # their records (a missing one is trained when training is allowed)
        c.run(cfg)
    tie = hashlib.sha256(b"".join((Path(cfgs[m]["out_dir"]) / "run.json").read_bytes()
                                  for m in ("teacher", "baseline"))).hexdigest()[:16]

    def compute() -> dict[str, Any]:
        for cfg in cfgs.values():
            c.run(cfg, need_weights=True)
        return _shift_eval({m: str(Path(cfg["out_dir"]) / "best.safetensors") for m, cfg in cfgs.items()},
                           c.data_dir, c.s.val_size)

    return cached_eval(cfgs["distilled"]["out_dir"], f"shift_knowledge_{tie}", compute)


def stage_logit_matching(c: Ctx) -> StageResult:
    return _headline(c, "logit_matching_errors", logits_cfg)


def sweep_cfg(c: Ctx, width: int, t: float, seed: int = 0) -> dict[str, Any]:
    if width == 800 and t == c.s.temperature and c.s.sweep_epochs == c.s.student_epochs \
            and c.s.student_recipe == "base":
        return distilled_cfg(c, seed)  # the same run as stage 3's: shared, not retrained
    return c.student_cfg("temperature", f"w{width}_T{t_label(t)}", seed, width=width, epochs=c.s.sweep_epochs,
                         distil=True, temperature=t)


def _mean(v: Sequence[float]) -> float:
    return sum(v) / len(v)


def stage_temperature(c: Ctx) -> StageResult:
    """Every (width, T) cell for every seed. ``best_T_<w>`` holds each seed's validation-best T; the
    details hold the T with the fewest validation errors averaged over seeds (ties: the lower T)."""
    r = StageResult()
    curves: dict[str, dict[str, Any]] = {}
    for w in WIDTHS:
        test: list[list[int]] = []
        val: list[list[int]] = []
        for t in T_LIST:
            recs = [c.run(sweep_cfg(c, w, t, k)) for k in c.seeds]
            r.records += recs
            r.values[f"sweep_{w}_T{t_label(t)}_errors"] = [test_errors(x) for x in recs]
            test.append([test_errors(x) for x in recs])
            val.append([val_errors(x) for x in recs])
        n = len(c.seeds)
        per_seed = [T_LIST[min(range(len(T_LIST)), key=lambda i: (val[i][k], T_LIST[i]))] for k in range(n)]
        r.values[f"best_T_{w}"] = per_seed
        vm, tm = [_mean(v) for v in val], [_mean(v) for v in test]
        curves[str(w)] = {"test": test, "val": val, "test_mean": tm, "val_mean": vm, "best_T_per_seed": per_seed,
                          "best_T_val_mean": T_LIST[min(range(len(T_LIST)), key=lambda i: (vm[i], T_LIST[i]))],
                          "best_T_test_mean": T_LIST[min(range(len(T_LIST)), key=lambda i: (tm[i], T_LIST[i]))]}
    r.details["curves"] = curves
    return r


# ---- stages 6 and 7: a restricted transfer set and a bias shift chosen on validation


def omit3_cfg(c: Ctx, seed: int = 0) -> dict[str, Any]:
    return c.student_cfg("omit3", "omit3", seed, epochs=c.s.transfer_epochs, data=c.data(exclude_classes=[3]),
                         distil=True, temperature=c.s.transfer_temperature)


def only78_cfg(c: Ctx, seed: int = 0) -> dict[str, Any]:
    return c.student_cfg("only78", "only78", seed, epochs=c.s.transfer_epochs, data=c.data(include_classes=[7, 8]),
                         distil=True, temperature=c.s.transfer_temperature)


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


def _transfer_stage(c: Ctx, key: str, cfg_fn: Callable[[Ctx, int], dict[str, Any]], classes: Sequence[int],
                    numbers: Callable[[dict[str, Any]], dict[str, Any]], version: int) -> StageResult:
    """Per seed: the student on the restricted transfer set, then the bias shift of ``classes`` chosen on
    validation (cached in ``eval.json``; needs the weights only when the cache is missing). Values are
    lists over seeds; so are the details."""
    r = StageResult()
    for k in c.seeds:
        cfg = cfg_fn(c, k)
        rec = c.run(cfg)

        def compute(cfg: dict[str, Any] = cfg) -> dict[str, Any]:
            c.run(cfg, need_weights=True)
            e = _bias_shift_eval(str(Path(cfg["out_dir"]) / "best.safetensors"), c.data_dir, c.s.val_size, classes)
            return numbers(e)

        ev = cached_eval(cfg["out_dir"], f"{key}_bias_shift", compute, version=version)
        rec = finished_record(cfg) or rec  # compute() may have retrained the run
        r.records.append(rec)
        for name, v in ev["values"].items():
            r.values.setdefault(name, []).append(v)
        for name, v in {**ev["details"], "transfer_set_size": rec["dataset"]["train"],
                        "selected_epoch": rec["final"]["selected_epoch"]}.items():
            r.details.setdefault(name, []).append(v)
    return r


def stage_omit3(c: Ctx) -> StageResult:
    return _transfer_stage(c, "omit3", omit3_cfg, [3], _omit3_numbers, version=2)


def stage_only78(c: Ctx) -> StageResult:
    return _transfer_stage(c, "only78", only78_cfg, [7, 8], _only78_numbers, version=2)


# ---- stage 8


def reg_cfg(c: Ctx, pct: int, mode: str, seed: int = 0) -> dict[str, Any]:
    data = c.data(fraction=pct / 100)
    cfg = c.student_cfg("regulariser", f"{mode}{pct}pct", seed, epochs=c.s.reg_epochs[pct], data=data,
                        distil=mode == "soft", temperature=c.s.transfer_temperature)
    return {**cfg, "batch_size": c.s.reg_batch_size}


def stage_regulariser(c: Ctx) -> StageResult:
    """Per fraction and targets, every seed; the curves (train / test accuracy per epoch) are averaged over
    seeds, and the summary values are at each run's validation-selected epoch."""
    r = StageResult()
    curves: dict[str, dict[str, Any]] = {}
    for p in FRACTIONS:
        curves[str(p)] = {}
        for mode in ("hard", "soft"):
            per: list[dict[str, Any]] = []
            for k in c.seeds:
                rec = c.run(reg_cfg(c, p, mode, k), track_train=True, track_test=True)
                r.records.append(rec)
                ep, sel = rec["epochs"], rec["final"]["selected_epoch"]
                per.append({"train": [100 * e["train"]["accuracy"] for e in ep],
                            "test": [100 * e["test"]["accuracy"] for e in ep],
                            "test_nll": [e["test"]["nll"] for e in ep], "sel": sel})
                r.values.setdefault(f"reg{p}pct_{mode}_test_acc", []).append(100 * rec["final"]["test"]["accuracy"])
                r.values.setdefault(f"reg{p}pct_{mode}_train_acc", []).append(per[-1]["train"][sel - 1])
            avg = {f: [_mean(v) for v in zip(*(x[f] for x in per))] for f in ("train", "test", "test_nll")}
            curves[str(p)][mode] = {
                **avg, "selected_epochs": [x["sel"] for x in per], "n_train": rec["dataset"]["train"],
                "final_test": avg["test"][-1], "final_train": avg["train"][-1],
                "best_test": _mean([max(x["test"]) for x in per]), "final_test_nll": avg["test_nll"][-1],
                "selected_test_nll": _mean([x["test_nll"][x["sel"] - 1] for x in per])}
    r.details["curves"] = curves
    return r


# ---- stage 9 (beyond the paper): the transfer set shifted as the teacher's training set was


def baseline_jitter_cfg(c: Ctx, seed: int) -> dict[str, Any]:
    return c.student_cfg("jitter", "baseline_jitter", seed, epochs=c.s.jitter_epochs, data=c.data(augment_shift=2))


def distilled_jitter_cfg(c: Ctx, seed: int) -> dict[str, Any]:
    return c.student_cfg("jitter", "distilled_jitter", seed, epochs=c.s.jitter_epochs, data=c.data(augment_shift=2),
                         distil=True, temperature=c.s.jitter_temperature, teacher_recipe=c.s.jitter_teacher)


def stage_jitter(c: Ctx) -> StageResult:
    """Per seed: the 2×800 student trained on labels with ±2 px shifts (the control: what the shifts alone
    give) and distilled from the teacher's outputs on the shifted images (a live teacher, a new transfer
    example every step)."""
    base = [c.run(baseline_jitter_cfg(c, k)) for k in c.seeds]
    dist = [c.run(distilled_jitter_cfg(c, k)) for k in c.seeds]
    r = StageResult(records=base + dist)
    r.values["baseline_jitter_errors"] = [test_errors(x) for x in base]
    r.values["distilled_jitter_errors"] = [test_errors(x) for x in dist]
    r.details["selected_epochs"] = {"baseline": [x["final"]["selected_epoch"] for x in base],
                                    "distilled": [x["final"]["selected_epoch"] for x in dist]}
    r.details["val_errors"] = {"baseline": [val_errors(x) for x in base], "distilled": [val_errors(x) for x in dist]}
    r.details["temperature"] = c.s.jitter_temperature
    r.details["epochs"] = c.s.jitter_epochs
    # the teachers of these students (Settings.jitter_teacher), for the gap they close
    r.details["teacher_recipe"] = c.s.jitter_teacher or c.s.teacher_recipe
    r.details["teacher_errors"] = [test_errors(c.run(c.teacher_cfg(k, c.s.jitter_teacher))) for k in c.seeds]
    return r


def stage_jobs(c: Ctx, stage: str) -> list[Job]:
    """The runs of ``stage`` for every seed, as jobs for the pool (:mod:`darkknowledge.engine.jobs`); the stage
    functions above then find them finished and only read them."""
    seeds = c.seeds
    if stage == "teacher":
        cfgs = [c.teacher_cfg(k) for k in seeds] + \
            ([c.teacher_cfg(k, c.s.jitter_teacher) for k in seeds] if c.s.jitter_teacher else []) + \
            ([c.teacher_cfg(0, name) for name in ("base", *TEACHER_ALTERNATIVES)] if not c.s.quick else [])
    elif stage in ("baseline", "distilled", "logit_matching"):
        fn = {"baseline": baseline_cfg, "distilled": distilled_cfg, "logit_matching": logits_cfg}[stage]
        cfgs = [fn(c, k) for k in seeds]
        if stage == "distilled" and not c.s.quick:
            cfgs += list(recipe_cfgs(c).values())
            cfgs += [other_teacher_student_cfg(c)] if _other_teacher(c) is not None else []
    elif stage == "temperature":
        cfgs = [sweep_cfg(c, w, t, k) for w in WIDTHS for t in T_LIST for k in seeds]
    elif stage == "jitter":
        cfgs = [f(c, k) for f in (baseline_jitter_cfg, distilled_jitter_cfg) for k in seeds]
    elif stage in ("omit3", "only78"):
        cfgs = [(omit3_cfg if stage == "omit3" else only78_cfg)(c, k) for k in seeds]
    else:
        return [Job(reg_cfg(c, p, mode, k), {"track_train": True, "track_test": True})
                for p in FRACTIONS for mode in ("hard", "soft") for k in seeds]
    return [Job(cfg) for cfg in cfgs]


def run_stage_jobs(c: Ctx, only: str | None, pool: dict[str, Any]) -> None:
    """Train every run of the stages to be run (all, or ``only`` and the teachers it needs) on the pool."""
    jobs: dict[str, Job] = {}
    c.planning = True
    try:
        for st in STAGES:
            if only is None or st in (only, "teacher"):
                for j in stage_jobs(c, st):
                    jobs.setdefault(j.out_dir, j)  # a run shared by two stages is one job
    finally:
        c.planning = False
    run_jobs(list(jobs.values()), progress=c.progress, **pool)


STAGE_FUNCS: dict[str, Callable[[Ctx], StageResult]] = {
    "teacher": stage_teacher, "baseline": stage_baseline, "distilled": stage_distilled,
    "logit_matching": stage_logit_matching, "temperature": stage_temperature, "omit3": stage_omit3,
    "only78": stage_only78, "regulariser": stage_regulariser, "jitter": stage_jitter,
}


# --------------------------------------------------------------------------- the experiment


def stage_train_times(results: dict[str, StageResult]) -> dict[str, float]:
    """Training seconds per stage from the run records; a run shared by stages counts once (teachers
    under stage 1)."""
    seen: set[str] = set()
    times = {}
    for st in STAGES:
        if st not in results:
            continue
        recs = results[st].records
        if st != "teacher":  # teachers count under stage 1
            recs = [r for r in recs if not r["name"].startswith("teacher")]
        uniq = [r for r in recs if r["config"]["out_dir"] not in seen]
        seen.update(r["config"]["out_dir"] for r in uniq)
        times[st] = train_seconds(uniq)
    return times


@register_experiment("hinton-mnist")
def run(out: str | Path = "results/hinton-mnist", data_dir: str | None = None, quick: bool = False,
        seeds: int | None = None, only: str | None = None, progress: bool = True,
        pool: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) the suite; write ``summary.json``, ``provenance.json``, figures and ``report.md``.

    ``seeds``: seeds of every stage (default 3; 1 with ``quick``). ``only``: run just this stage
    (the teacher trains implicitly when needed); the summary and report still include every other
    stage whose runs are already finished. ``pool``: train the runs on the job pool first (``{"workers":
    2}``, ``{"executor": "ray", "workers": 4, "address": ...}``); the summary does not depend on it.
    """
    from .hinton_mnist_report import build_report, write_figures

    t0 = time.perf_counter()
    if only is not None and only not in STAGES:
        raise ValueError(f"unknown stage {only!r}; stages: {', '.join(STAGES)}")
    n_seeds = seeds if seeds is not None else (1 if quick else 3)
    if n_seeds < 1:
        raise ValueError("seeds must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = Ctx(out=out, data_dir=data_dir, s=settings_for(quick), seeds=list(range(n_seeds)), progress=progress)
    c.log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    if pool:
        run_stage_jobs(c, only, pool)
    results: dict[str, StageResult] = {}
    invocation: dict[str, float] = {}
    all_seeds = list(c.seeds)
    for st in STAGES:
        c.allow_train = only is None or st == only
        ts = time.perf_counter()
        if c.allow_train:
            print(f"== stage {st}", file=sys.stderr, flush=True)
        # a stage not being trained now is reported with the first seeds whose runs have all finished
        for n in range(len(all_seeds), 0 if not c.allow_train else len(all_seeds) - 1, -1):
            c.seeds = all_seeds[:n]
            try:
                results[st] = STAGE_FUNCS[st](c)
                results[st].details["seeds"] = list(c.seeds)
                break
            except MissingRun:
                continue
        c.seeds = all_seeds
        invocation[st] = time.perf_counter() - ts
        if st not in results:
            continue
        if c.allow_train:
            print(f"   stage {st} done in {invocation[st]:.0f} s", file=sys.stderr, flush=True)

    values: dict[str, list[float]] = {}
    for r in results.values():
        values.update(r.values)
    if all(k in values for k in ("teacher_errors", "baseline_errors", "distilled_errors")):
        n = min(len(values["teacher_errors"]), len(values["baseline_errors"]), len(values["distilled_errors"]))
        values["gap_closed"] = [(b - d) / (b - t) if b != t else float("nan") for t, b, d in zip(
            values["teacher_errors"][:n], values["baseline_errors"][:n], values["distilled_errors"][:n])]
    if all(k in values for k in ("baseline_errors", "distilled_jitter_errors")):  # against stage 9's own teachers
        tj = results["jitter"].details["teacher_errors"]
        n = min(len(tj), len(values["baseline_errors"]), len(values["distilled_jitter_errors"]))
        values["gap_closed_jitter"] = [(b - d) / (b - t) if b != t else float("nan") for t, b, d in zip(
            tj[:n], values["baseline_errors"][:n], values["distilled_jitter_errors"][:n])]
    ordered = {k: values[k] for k in summary_keys() if k in values}
    summary = write_summary(out, ordered)
    details = {k: r.details for k, r in results.items()}
    atomic_write_json(out / "details.json", details)
    times = {"train": stage_train_times(results), "invocation": {k: v for k, v in invocation.items() if k in results}}
    uniq = {r["config"]["out_dir"]: r for res in results.values() for r in res.records}
    times["single_seed"] = train_seconds([r for r in uniq.values() if r["seed"] == 0])
    wall = time.perf_counter() - t0
    cmd = "darkknowledge reproduce hinton-mnist" + (" --quick" if quick else "") + \
          (f" --seeds {seeds}" if seeds is not None else "") + (f" --only {only}" if only else "") + \
        (f" --workers {pool.get('workers', 1)}" if pool else "")
    prov = provenance(cmd, wall, c.seeds)
    prov["stage_wall_time_s"] = times
    prov["stages_present"] = list(results)
    prov["settings"] = {k: v for k, v in c.s.__dict__.items()}
    atomic_write_json(out / "provenance.json", prov)
    write_figures(out, details)
    write_report(out, build_report(out, summary, details, c, times, prov))
    missing = [k for k in summary_keys() if k not in summary]
    print(f"hinton-mnist: {len(results)}/{len(STAGES)} stages in {out}/ (this invocation {wall:.0f} s)"
          + (f"; missing keys: {len(missing)}" if missing else ""), flush=True)
    return summary
