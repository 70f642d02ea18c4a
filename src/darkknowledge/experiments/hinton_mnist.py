"""``darkknowledge reproduce hinton-mnist``: Hinton, Vinyals & Dean (2015) §3 and §6 on MNIST.

Nine stages on the shared stage runner (:mod:`darkknowledge.engine.stages`): each names its runs (configs from
:mod:`.hinton_mnist_setup`, jobs on the pool, cached under ``<out>/runs/<stage>/<name>_seed<k>/`` so a rerun —
or a killed run — picks up where it stopped) and turns their records into numbers. Every stage runs each seed;
a student of seed ``k`` distils from the teacher of seed ``k`` (the teachers a stage's students need are jobs
of that stage too, run first).

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

Stages 6–9 are in :mod:`.hinton_mnist_transfer`. Model selection (epochs, bias shifts, the best temperature,
the teacher and student recipes) uses the validation split carved from the 60k training images; the test set
is only evaluated for reporting. Rates and accuracies in the summary are percentages; errors are counts on the
10,000 test images. The report is written by :mod:`.hinton_mnist_report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..data import load_dataset
from ..data.augment import build_augment
from ..engine.jobs import Job, cached_eval
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..metrics import apply_bias_shift, best_bias_shift, predict_logits
from ..models import load_model
from ..report import Results
from . import hinton_mnist_report as rep
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
    Runs,
    Settings,
    gap_closed,
    mean,
    per_seed,
    rec,
    settings_for,
    stage_jobs,
    student_cfg,
    summary_keys,
    t_label,
    teacher_cfg,
    test_errors,
    val_errors,
    weights_path,
    with_recipe,
    with_weights,
)
from .hinton_mnist_transfer import TRANSFER_STAGES

__all__ = ["EXPERIMENT", "STAGES", "PAPER", "T_LIST", "WIDTHS", "FRACTIONS", "TEACHER_ALTERNATIVES",
           "STUDENT_ALTERNATIVES", "Settings", "settings_for", "best_bias_shift", "apply_bias_shift", "t_label",
           "summary_keys"]

# --------------------------------------------------------------------------- stage 1: the teachers


def teacher_runs(ctx: Context) -> list[Job]:
    """Every seed's teacher of the suite's recipe, then (full runs) the seed-0 teachers of the other recipes."""
    s = ctx.settings
    cfgs = [teacher_cfg(ctx, k) for k in ctx.seeds]
    if not s.quick:
        cfgs += [teacher_cfg(ctx, 0, n) for n in ("base", *TEACHER_ALTERNATIVES) if n != s.teacher_recipe]
    return [Job(c) for c in cfgs]


def teacher_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    s = ctx.settings
    heads = [rec(ctx, teacher_cfg(ctx, k)) for k in ctx.seeds]
    d: dict[str, Any] = {"selected_epochs": [x["final"]["selected_epoch"] for x in heads],
                         "val_errors": [val_errors(x) for x in heads],
                         "wall_time_s": [x.get("wall_time_s") for x in heads]}
    if not s.quick:  # the recipe comparison on the seed-0 validation split
        recipes = {n: rec(ctx, teacher_cfg(ctx, 0, n)) for n in ("base", *TEACHER_ALTERNATIVES)}
        d["recipes"] = {k: {"val_errors": val_errors(v), "test_errors": test_errors(v), "epochs": len(v["epochs"]),
                            "optim": v["config"]["optim"], "max_norm": v["config"]["model"]["args"].get("max_norm"),
                            "precision": v["config"].get("precision", "fp32"),
                            "batch_size": v["config"]["batch_size"],
                            "val_curve": [e["val"]["errors"] for e in v["epochs"]],
                            "wall_time_s": v.get("wall_time_s")} for k, v in recipes.items()}
    return Outcome({"teacher_errors": [test_errors(x) for x in heads]}, {"teacher": {**d, "seeds": list(ctx.seeds)}})


# --------------------------------------------------------------------------- stages 2–4: students of the full set


def baseline_cfg(ctx: Context, seed: int) -> dict[str, Any]:
    return student_cfg(ctx, "baseline", "baseline", seed)


def _named(name: str, recipe: str) -> str:
    """Runs of a recipe other than "base" live in folders of their own (``distilled_T4_seed0``)."""
    return name if recipe == "base" else f"{name}_{recipe}"


def distilled_cfg(ctx: Context, seed: int, recipe: str | None = None,
                  teacher_recipe: str | None = None) -> dict[str, Any]:
    recipe = recipe or ctx.settings.student_recipe
    return with_recipe(student_cfg(ctx, "distilled", _named("distilled", recipe), seed, distil=True,
                                   teacher_recipe=teacher_recipe), recipe)


def recipe_cfg(ctx: Context, recipe: str, seed: int = 0) -> dict[str, Any]:
    """The distilled student of ``seed`` of a :data:`STUDENT_ALTERNATIVES` recipe, taught by the seed's teacher of
    ``Settings.recipe_teacher``: in ``runs/distilled/`` for the chosen recipe and for "base", the others in
    ``runs/student_recipes/``."""
    s = ctx.settings
    if recipe in (s.student_recipe, "base"):
        return distilled_cfg(ctx, seed, recipe, s.recipe_teacher)
    return with_recipe(student_cfg(ctx, "student_recipes", recipe, seed, distil=True,
                                   teacher_recipe=s.recipe_teacher), recipe)


def recipe_cfgs(ctx: Context) -> dict[tuple[str, int], dict[str, Any]]:
    """Every run of the student-recipe comparison: each candidate for every seed, each probe for seed 0."""
    return {(name, k): recipe_cfg(ctx, name, k) for name in STUDENT_ALTERNATIVES
            for k in (ctx.seeds[:1] if name in STUDENT_PROBES else ctx.seeds)}


def other_teacher(ctx: Context) -> str:
    """The teacher recipe whose seed-0 teacher also teaches a stage-3 student beside the suite's (what the
    teacher is worth to the student): "base" (200 epochs) when the suite's is another, else ``adam_300ep``."""
    return "adam_300ep" if ctx.settings.teacher_recipe == "base" else "base"


def other_teacher_student_cfg(ctx: Context) -> dict[str, Any]:
    return distilled_cfg(ctx, 0, teacher_recipe=other_teacher(ctx))


def logits_cfg(ctx: Context, seed: int) -> dict[str, Any]:
    # w_soft = 1/N: the gradient of ½‖z − v‖² (centred) is N times the T → ∞ limit of the T²-scaled soft term;
    # the optimiser and epochs of stage 3's recipe (its temperature does not enter logit matching)
    s = ctx.settings
    recipe = "base" if set(STUDENT_ALTERNATIVES[s.student_recipe]) <= {"distill"} else s.student_recipe
    cfg = with_recipe(student_cfg(ctx, "logit_matching", _named("logits", recipe), seed, distil=True, kind="logits",
                                  w_soft=0.1), recipe)
    return {**cfg, "distill": {**cfg["distill"], "temperature": s.temperature}}


def headline(key: str, stage: str, cfg_fn: Callable[[Context, int], dict[str, Any]]):
    """The collect of a stage of one run per seed: its test errors under ``key``, its selected epochs."""
    def numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
        rs = [rec(ctx, cfg_fn(ctx, k)) for k in ctx.seeds]
        return Outcome({key: [test_errors(x) for x in rs]},
                       {stage: {"selected_epochs": [x["final"]["selected_epoch"] for x in rs],
                                "seeds": list(ctx.seeds)}})

    return numbers


def distilled_runs(ctx: Context) -> list[Job]:
    """The headline students, then (full runs) the student-recipe comparison and the other teacher's student."""
    cfgs = [distilled_cfg(ctx, k) for k in ctx.seeds]
    if not ctx.settings.quick:
        cfgs += [c for c in recipe_cfgs(ctx).values() if c["out_dir"] not in {x["out_dir"] for x in cfgs}]
        cfgs += [other_teacher_student_cfg(ctx)]
    return [Job(c) for c in cfgs]


def _recipe_details(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One recipe's runs of the comparison (one per seed, in seed order)."""
    v = recs[0]
    kd = TrainConfig.model_validate(v["config"]).method_args  # kd's settings, in records of either form
    return {"seeds": [x["seed"] for x in recs], "val_errors": [val_errors(x) for x in recs],
            "test_errors": [test_errors(x) for x in recs], "epochs": len(v["epochs"]),
            "selected_epoch": [x["final"]["selected_epoch"] for x in recs], "optim": v["config"]["optim"],
            "batch_size": v["config"]["batch_size"], "temperature": kd["temperature"],
            "w_hard": kd["w_hard"], "val_curve": [e["val"]["errors"] for e in v["epochs"]],
            "wall_time_s": [x.get("wall_time_s") for x in recs]}


def distilled_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    s = ctx.settings
    heads = [rec(ctx, distilled_cfg(ctx, k)) for k in ctx.seeds]
    values = {"distilled_errors": [test_errors(x) for x in heads]}
    if "teacher_errors" in ctx.values and "baseline_errors" in ctx.values:
        values["gap_closed"] = gap_closed(ctx.values["teacher_errors"], ctx.values["baseline_errors"],
                                          values["distilled_errors"])
    d: dict[str, Any] = {"selected_epochs": [x["final"]["selected_epoch"] for x in heads], "recipe": s.student_recipe,
                         "shift_knowledge": [shift_knowledge(ctx, k) for k in ctx.seeds]}
    if not s.quick:  # the recipe comparison on the validation split of every seed
        recipes: dict[str, list[dict[str, Any]]] = {}
        for (name, _), cfg in recipe_cfgs(ctx).items():
            recipes.setdefault(name, []).append(rec(ctx, cfg))
        t_rec, x = rec(ctx, teacher_cfg(ctx, 0, other_teacher(ctx))), rec(ctx, other_teacher_student_cfg(ctx))
        d["other_teacher"] = {"recipe": other_teacher(ctx), "teacher_val_errors": val_errors(t_rec),
                              "teacher_test_errors": test_errors(t_rec), "student_val_errors": val_errors(x),
                              "student_test_errors": test_errors(x)}
        d["seed0_student"] = {"val_errors": val_errors(heads[0]), "test_errors": test_errors(heads[0])}
        d["recipes"] = {k: _recipe_details(vs) for k, vs in recipes.items()}
    d["agreement"] = [x["final"]["test"].get("agreement") for x in heads]
    # mean change of validation errors over the last 5 epochs (negative: still improving)
    late = [x["epochs"][-1]["val"]["errors"] - x["epochs"][-6]["val"]["errors"] for x in heads if len(x["epochs"]) > 5]
    d["late_val_improvement"] = sum(late) / len(late) if late else None
    return Outcome(values, {"distilled": {**d, "seeds": list(ctx.seeds)}})


def _shift_eval(paths: dict[str, str], data_dir: str | None, val_size: int) -> dict[str, Any]:
    """Errors of each model and its disagreements with the teacher on the transfer set (the 55,000 unshifted
    training images), on the same images shifted by up to ±2 px (one fixed random shift each, as the teacher
    saw them in training) and on the test set."""

    splits = load_dataset("mnist", data_dir, val_size, 0)
    shift = build_augment([{"name": "shift", "max": 2}], (1, 28, 28))
    sets = {"transfer": (splits.train.x, splits.train.y),
            "transfer_shifted": (shift(splits.train.x, None, seed=1234)[0], splits.train.y),
            "test": (splits.test.x, splits.test.y)}
    preds = {m: {k: predict_logits(load_model(p).eval(), x).argmax(1) for k, (x, _) in sets.items()}
             for m, p in paths.items()}
    return {m: {k: {"errors": int((preds[m][k] != y).sum()),
                    "disagree_teacher": int((preds[m][k] != preds["teacher"][k]).sum())}
                for k, (_, y) in sets.items()} for m in paths}


def shift_knowledge(ctx: Context, seed: int) -> dict[str, Any]:
    """:func:`_shift_eval` of the seed's teacher, baseline and stage-3 student (cached beside the student, tied
    to the teacher's and baseline's records too): how much of what the teacher learnt from shifted images the
    soft targets of unshifted ones carry over (Hinton et al. 2015 §3: "including the knowledge about how to
    generalize that is learned from translated training data")."""
    cfgs = {"teacher": teacher_cfg(ctx, seed), "baseline": baseline_cfg(ctx, seed), "distilled": distilled_cfg(ctx, seed)}
    tie = hashlib.sha256(b"".join((Path(cfgs[m]["out_dir"]) / "run.json").read_bytes()
                                  for m in ("teacher", "baseline"))).hexdigest()[:16]

    def compute() -> dict[str, Any]:
        with_weights(ctx, list(cfgs.values()))
        return _shift_eval({m: weights_path(c) for m, c in cfgs.items()}, ctx.data_dir, ctx.settings.val_size)

    return cached_eval(cfgs["distilled"]["out_dir"], f"shift_knowledge_{tie}", compute)


# --------------------------------------------------------------------------- stage 5: temperature vs size


def sweep_cfg(ctx: Context, width: int, t: float, seed: int = 0) -> dict[str, Any]:
    s = ctx.settings
    if width == 800 and t == s.temperature and s.sweep_epochs == s.student_epochs and s.student_recipe == "base":
        return distilled_cfg(ctx, seed)  # the same run as stage 3's: shared, not retrained
    return student_cfg(ctx, "temperature", f"w{width}_T{t_label(t)}", seed, width=width, epochs=s.sweep_epochs,
                       distil=True, temperature=t)


def sweep_runs(ctx: Context) -> list[Job]:
    return [Job(sweep_cfg(ctx, w, t, k)) for w in WIDTHS for t in T_LIST for k in ctx.seeds]


def _argmin_t(errors: Sequence[float]) -> float:
    """The T of the fewest ``errors`` (one per T of :data:`T_LIST`); ties: the lower T."""
    return T_LIST[min(range(len(T_LIST)), key=lambda i: (errors[i], T_LIST[i]))]


def sweep_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    """Every (width, T) cell for every seed. ``best_T_<w>`` holds each seed's validation-best T; the
    details hold the T with the fewest validation errors averaged over seeds (ties: the lower T)."""
    values: dict[str, list[float]] = {}
    curves: dict[str, dict[str, Any]] = {}
    for w in WIDTHS:
        test: list[list[int]] = []
        val: list[list[int]] = []
        for t in T_LIST:
            rs = [rec(ctx, sweep_cfg(ctx, w, t, k)) for k in ctx.seeds]
            values[f"sweep_{w}_T{t_label(t)}_errors"] = [test_errors(x) for x in rs]
            test.append([test_errors(x) for x in rs])
            val.append([val_errors(x) for x in rs])
        per = [_argmin_t([v[k] for v in val]) for k in range(len(ctx.seeds))]
        values[f"best_T_{w}"] = per
        vm, tm = [mean(v) for v in val], [mean(v) for v in test]
        curves[str(w)] = {"test": test, "val": val, "test_mean": tm, "val_mean": vm, "best_T_per_seed": per,
                          "best_T_val_mean": _argmin_t(vm), "best_T_test_mean": _argmin_t(tm)}
    return Outcome(values, {"temperature": {"curves": curves, "seeds": list(ctx.seeds)}})


# --------------------------------------------------------------------------- the experiment

OWN_RUNS: dict[str, Runs] = {"teacher": teacher_runs, "baseline": per_seed(baseline_cfg),
                             "distilled": distilled_runs, "logit_matching": per_seed(logits_cfg),
                             "temperature": sweep_runs}


def _stages() -> list[Stage]:
    """The nine stages; every one's runs depend on the settings only, so all run in the first batch."""
    mine = [Stage("teacher", stage_jobs(teacher_runs), teacher_numbers, upfront=True),
            Stage("baseline", stage_jobs(OWN_RUNS["baseline"]),
                  headline("baseline_errors", "baseline", baseline_cfg), upfront=True),
            Stage("distilled", stage_jobs(distilled_runs, per_seed(baseline_cfg)), distilled_numbers, upfront=True),
            Stage("logit_matching", stage_jobs(OWN_RUNS["logit_matching"]),
                  headline("logit_matching_errors", "logit_matching", logits_cfg), upfront=True),
            Stage("temperature", stage_jobs(sweep_runs), sweep_numbers, upfront=True)]
    return mine + [Stage(name, stage_jobs(own), numbers, upfront=True) for name, own, numbers in TRANSFER_STAGES]


def stage_train_times(ctx: Context) -> dict[str, Any]:
    """Training seconds per stage present from its own run records (a run shared by stages counts once, under
    the first; the teachers under stage 1), and of the single-seed suite (every seed-0 run)."""
    own = {**OWN_RUNS, **{name: runs for name, runs, _ in TRANSFER_STAGES}}
    seen: dict[str, dict[str, Any]] = {}
    times = {}
    for st in STAGES:
        if st not in ctx.details:
            continue
        jobs = own[st](dataclasses.replace(ctx, seeds=ctx.details[st]["seeds"]))
        uniq = [ctx.records[j.out_dir] for j in jobs if j.out_dir in ctx.records and j.out_dir not in seen]
        seen.update((r["config"]["out_dir"], r) for r in uniq)
        times[st] = float(sum(r.get("wall_time_s", 0.0) for r in uniq))
    single = float(sum(r.get("wall_time_s", 0.0) for r in seen.values() if r["seed"] == 0))
    return {"train": times, "invocation": {k: v for k, v in ctx.times.items() if k in times}, "single_seed": single}


def _provenance(ctx: Context) -> dict[str, Any]:
    return {"stage_wall_time_s": stage_train_times(ctx), "stages_present": [st for st in STAGES if st in ctx.details],
            "settings": dict(ctx.settings.__dict__)}


def _figures(ctx: Context, res: Results) -> None:
    rep.write_figures(res, ctx.details)


def _report(ctx: Context, summary: dict[str, Any], prov: dict[str, Any]) -> str:
    return rep.build_report(summary, ctx.details, ctx.settings, ctx.seeds, prov, ctx.results.exists)


EXPERIMENT = register_experiment(Experiment(
    "hinton-mnist", settings=settings_for, stages=_stages(), report=_report, figures=_figures,
    summary_keys=summary_keys(), default_seeds=lambda s: 1 if s.quick else 3, extra_provenance=_provenance))
