"""``darkknowledge reproduce subclass-mnist-2x5``: the official subclass-distillation MNIST demo (spec §8).

MNIST digits 0–4 → class 0, 5–9 → class 1. A CNN teacher (conv32-pool-conv64-pool-dropout-FC128-
dropout) with a 2 × 5 subclass head, trained with ``CE + β·L_aux`` (β = 1, T_aux = 1) on the class
labels only; fully connected 784-784-784 students from labels, by conventional distillation on the
teacher's grouped class logits, by penultimate-layer regression (our form) and by subclass
distillation (α = 0.5 on the soft term, T = 4). Batch 256, 12 epochs, Adam 1e-3, as the demo.

Stages (each run cached and resumable under ``<out>/runs/``):

1. ``teacher``   one subclass teacher per seed                 [teacher_acc, teacher_subclass_recovery, teacher_nmi]
2. ``students``  the four students per seed                    [scratch_acc, conventional_acc, penultimate_acc,
                                                                 subclass_acc, student_subclass_recovery]

Model selection: the epoch with the best validation accuracy (5k images carved from the 60k
training set); the test set (10k) is only used for reporting. The true digits are never used in
training — only for the recovery metrics. Accuracies and recoveries in the summary are percentages.

:func:`two_by_five` builds this experiment and ``subclass-cifar-2x5`` (same stages, report and figures).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..engine.jobs import Job, finished_record
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..report import Results, markdown_table, render, summarize
from ..report.claims import paired_claim
from ..subclass import chance_levels
from . import register_experiment
from . import subclass_figures as figs
from .subclass_common import (
    MNIST_REFERENCE,
    SUBCLASSES,
    fmt_pm,
    mnist_2x5_splits,
    mnist_job,
    mnist_settings,
    pct,
    run_provenance,
    runs_dir,
    stage_times,
    student_cfgs,
    subclass_eval,
    teacher_cfg,
    teacher_file,
    template,
)

NAME = "subclass-mnist-2x5"
STAGES = ("teacher", "students")
SUMMARY_KEYS = ("teacher_acc", "scratch_acc", "conventional_acc", "subclass_acc", "penultimate_acc",
                "teacher_subclass_recovery", "student_subclass_recovery", "teacher_nmi")
#: every summary key, in summary.json's order
ALL_KEYS = (*SUMMARY_KEYS, "teacher_subclass_recovery_within_class", "teacher_subclasses_used",
            "teacher_usage_entropy", "conventional_agreement", "penultimate_agreement", "subclass_agreement",
            "student_nmi", "student_subclasses_used", "chance_subclass_recovery", "chance_subclass_recovery_blind")
MODELS = ("teacher", "scratch", "conventional", "penultimate", "subclass")

__all__ = ["EXPERIMENT", "NAME", "STAGES", "SUMMARY_KEYS", "two_by_five"]


def _no_fields(st: Any) -> dict[str, Any]:
    return {}


def two_by_five(name: str, settings: Callable[[bool], Any], job: Callable[[Context, dict[str, Any]], Job],
                data: Callable[[Context], Any], texts: dict[str, Any], default_seeds: int) -> Experiment:
    """A 2×5 experiment: a subclass teacher and the four students per seed on ``data(ctx) -> (splits, fine)``
    (trained as ``job(ctx, config)``); ``texts``: its title, labels, reference numbers, the name of its
    template sections (intro, quick_note, settings, ref_note, demo_note) and ``fields(settings) -> dict``, more
    fields for them."""

    def teachers(ctx: Context) -> list[Job]:
        return [job(ctx, teacher_cfg(ctx.settings, runs_dir(ctx) / f"teacher_seed{s}", s)) for s in ctx.seeds]

    def students(ctx: Context, seed: int, teacher: Job) -> dict[str, Job]:
        cfgs = student_cfgs(ctx.settings, runs_dir(ctx), teacher_file(teacher), seed)
        return {n: job(ctx, c) for n, c in cfgs.items()}

    def teacher_eval(ctx: Context, t: Job) -> dict[str, Any]:
        splits, fine = data(ctx)
        return subclass_eval(t, splits.test, fine.test, ctx.progress)

    def student_eval(ctx: Context, seed: int, t: Job) -> dict[str, Any]:
        splits, fine = data(ctx)
        return subclass_eval(students(ctx, seed, t)["subclass"], splits.test, fine.test, ctx.progress, [t])

    def teacher_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
        v: dict[str, list[float]] = {}
        for t, rec in zip(teachers(ctx), recs):
            ev = teacher_eval(ctx, t)
            rec = finished_record(t.config) or rec  # the eval may have retrained it (deterministically)
            for k, x in (("teacher_acc", pct(rec["final"]["test"]["accuracy"])),
                         ("teacher_subclass_recovery", pct(ev["recovery"])), ("teacher_nmi", ev["nmi"]),
                         ("teacher_subclass_recovery_within_class", pct(ev["recovery_within"])),
                         ("teacher_subclasses_used", ev["num_used"]), ("teacher_usage_entropy", ev["usage_entropy"])):
                v.setdefault(k, []).append(x)
        return Outcome(v)

    def student_jobs(ctx: Context) -> list[Job]:
        ts = teachers(ctx)
        return ts + [j for s, t in zip(ctx.seeds, ts) for j in students(ctx, s, t).values()]

    def student_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
        v: dict[str, list[float]] = {}
        for s, t in zip(ctx.seeds, teachers(ctx)):
            for n, j in students(ctx, s, t).items():
                rec = ctx.records[j.out_dir]
                if n == "subclass":
                    ev = student_eval(ctx, s, t)
                    rec = finished_record(j.config) or rec
                v.setdefault(f"{n}_acc", []).append(pct(rec["final"]["test"]["accuracy"]))
                if "agreement" in rec["final"]["test"]:
                    v.setdefault(f"{n}_agreement", []).append(pct(rec["final"]["test"]["agreement"]))
                if n == "subclass":
                    v.setdefault("student_subclass_recovery", []).append(pct(ev["recovery"]))
                    v.setdefault("student_nmi", []).append(ev["nmi"])
                    v.setdefault("student_subclasses_used", []).append(ev["num_used"])
        chance = chance_levels(data(ctx)[1].test, SUBCLASSES)
        v["chance_subclass_recovery"] = [pct(chance["class_aware"])]
        v["chance_subclass_recovery_blind"] = [pct(chance["blind"])]
        return Outcome(v)

    def figures(ctx: Context, res: Results) -> None:
        if not all(f"{n}_acc" in ctx.values for n in MODELS):
            return  # a stage's runs are not all finished (--only)
        summary = summarize({f"{n}_acc": ctx.values[f"{n}_acc"] for n in MODELS})
        t0 = teachers(ctx)[0]
        t_ev, s_ev = teacher_eval(ctx, t0), student_eval(ctx, ctx.seeds[0], t0)
        figs.accuracy_figure(res.path("accuracy.png"), summary, MODELS, texts["reference"], texts["title"])
        figs.subclasses_figure(res.path("subclasses.png"), t_ev, s_ev, texts["fine_name"])
        figs.usage_figure(res.path("usage.png"), [("teacher", t_ev), ("subclass student", s_ev)],
                          "Subclass usage on the test set (first seed)")
        recs = {"teacher": teachers(ctx)}
        for n in MODELS[1:]:
            recs[n] = [students(ctx, s, t)[n] for s, t in zip(ctx.seeds, teachers(ctx))]
        figs.curves_figure(res.path("curves.png"), {n: [ctx.records[j.out_dir] for j in js] for n, js in recs.items()})

    def report(ctx: Context, summary: dict[str, Any], prov: dict[str, Any]) -> str:
        if not all(k in summary for k in ALL_KEYS[:8]):
            return f"# {texts['title']}\n\nIncomplete: rerun `darkknowledge reproduce {name}` without --only.\n"
        st, values, seeds = ctx.settings, ctx.values, ctx.seeds
        sec = template(texts["template"])
        chance = chance_levels(data(ctx)[1].test, SUBCLASSES)
        sk, ref = texts["student_kind"], texts["reference"]
        fields = {"st": st, "n_seeds": len(seeds), **texts.get("fields", _no_fields)(st)}
        labels = {"teacher_acc": render(texts["teacher_label"], **fields), "subclass_acc": f"{sk}, subclass distillation",
                  "conventional_acc": f"{sk}, conventional distillation",
                  "penultimate_acc": f"{sk}, penultimate-layer distillation (our form)",
                  "scratch_acc": f"{sk}, labels only (scratch)"}
        acc_table = markdown_table(
            ["model", texts["reference_header"], f"ours: binary test accuracy % (mean ± std, {len(seeds)} seeds)"],
            [[lab, "–" if ref.get(k) is None else f"{ref[k]:.2f}", fmt_pm(summary[k])] for k, lab in labels.items()])
        fn = texts["fine_name"]
        rec_table = markdown_table(
            ["", "subclass recovery % (Hungarian, global)", "within-class matching %", f"NMI with {fn}",
             "subclasses used (≥1% of test)"],
            [["teacher", fmt_pm(summary["teacher_subclass_recovery"]),
              fmt_pm(summary["teacher_subclass_recovery_within_class"]), fmt_pm(summary["teacher_nmi"], 3),
              fmt_pm(summary["teacher_subclasses_used"], 1)],
             ["subclass student", fmt_pm(summary["student_subclass_recovery"]), "–", fmt_pm(summary["student_nmi"], 3),
              fmt_pm(summary["student_subclasses_used"], 1)],
             ["chance: knows the class, guesses the subclass", f"{pct(chance['class_aware']):.2f}", "", "0", ""],
             ["chance: guesses among all 10 subclasses", f"{pct(chance['blind']):.2f}", "", "0", ""],
             [f"constant subclass per class (majority {fn})", f"{pct(chance['majority']):.2f}", "", "0", ""]])
        claims = [paired_claim(a, b, values[ka], values[kb]) for a, b, ka, kb in (
            ("subclass", "labels-only (scratch)", "subclass_acc", "scratch_acc"),
            ("subclass", "conventional", "subclass_acc", "conventional_acc"),
            ("subclass", "penultimate", "subclass_acc", "penultimate_acc"),
            ("conventional", "labels-only (scratch)", "conventional_acc", "scratch_acc"))]
        holds = all(np.mean(values["subclass_acc"]) > np.mean(values[k]) for k in ("scratch_acc", "conventional_acc"))
        per_seed = markdown_table(
            ["seed", "teacher", "scratch", "conventional", "penultimate", "subclass", "teacher recovery",
             "student recovery"],
            [[s] + [f"{values[k][i]:.2f}" for k in ("teacher_acc", "scratch_acc", "conventional_acc", "penultimate_acc",
                                                     "subclass_acc", "teacher_subclass_recovery",
                                                     "student_subclass_recovery")] for i, s in enumerate(seeds)])
        part = {k: render(v, **fields) for k, v in sec.items() if k}
        return render(template("subclass_2x5")[""], title=texts["title"], name=name,
                      quick_note=part["quick_note"] if ctx.quick else "", intro=part["intro"], acc_table=acc_table,
                      per_seed=per_seed, holds="It holds in our runs" if holds else "It does NOT hold in our runs",
                      n_seeds=len(seeds), claims=claims, ref_note=part["ref_note"], fn=fn, rec_table=rec_table,
                      demo_note=part["demo_note"], ev0=teacher_eval(ctx, teachers(ctx)[0]),
                      settings=part["settings"], seeds=seeds, st=st, prov=prov,
                      stages=stage_times(prov),
                      run_min=prov["run_wall_time_total_s"] / 60, machine=prov["machine"],
                      runs="runs-quick" if ctx.quick else "runs")

    return Experiment(
        name, settings=settings, default_seeds=lambda st: default_seeds,
        stages=[Stage("teacher", teachers, teacher_numbers),
                Stage("students", student_jobs, student_numbers, needs=("teacher",))],
        summary_keys=ALL_KEYS, report=report, figures=figures,
        extra_provenance=lambda ctx: run_provenance(
            ctx, settings=ctx.settings.__dict__ | {"teacher_model": ctx.settings.teacher_model}))


EXPERIMENT = register_experiment(two_by_five(
    NAME, mnist_settings, mnist_job, lambda ctx: mnist_2x5_splits(ctx.data_dir, ctx.quick),
    {"template": "subclass_mnist_2x5", "title": "Subclass distillation on MNIST-2x5", "reference": MNIST_REFERENCE,
     "reference_header": "reference: official demo (1 run, after epoch 12)",
     "teacher_label": "teacher CNN (subclass head + aux loss)", "student_kind": "FC student", "fine_name": "digit"},
    default_seeds=3))
