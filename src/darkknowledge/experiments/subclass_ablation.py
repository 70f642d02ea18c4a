"""``darkknowledge reproduce subclass-ablation``: MNIST-2x5 without the auxiliary loss (β = 0).

The spec (§11) asks to ablate β = 0 to check subclass collapse; reading notes of the paper (§9,
uncertain) say that without the auxiliary loss the teacher recovers the true subclasses much less
well. Same settings as ``subclass-mnist-2x5``, except β = 0 for the teacher: its loss is then the
plain class cross-entropy on the logsumexp-grouped class logits, so nothing pushes it to use more
than one subclass per class. For each seed: the β = 0 teacher, and a subclass-distilled student
from it. The β = 1 teachers and subclass students of ``subclass-mnist-2x5`` (reused from
``<results>/subclass-mnist-2x5/runs/`` when present, else trained there) are the comparison.

Summary keys: ``noaux_teacher_subclass_recovery``, ``noaux_subclass_acc`` (+ usage, NMI, teacher
accuracy, the student's recovery, and the ``aux_*`` counterparts with β = 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine.jobs import Job, finished_record
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..report import Results, markdown_table, render
from ..report.claims import paired_claim
from ..subclass import chance_levels
from . import register_experiment
from .subclass_common import (
    SUBCLASSES,
    fmt_pm,
    mnist_2x5_splits,
    mnist_job,
    mnist_settings,
    mnist_teacher_dir,
    mnist_teacher_job,
    pct,
    run_provenance,
    runs_dir,
    stage_times,
    student_cfgs,
    subclass_eval,
    teacher_file,
    template,
)
from .subclass_figures import ablation_figure, usage_figure

NAME = "subclass-ablation"
STAGES = ("teacher", "students")
SUMMARY_KEYS = ("noaux_teacher_subclass_recovery", "noaux_subclass_acc")
TAGS = ("noaux", "aux")  # β = 0 (runs here), β = 1 (subclass-mnist-2x5's runs)
_KEYS = ("student_subclass_recovery", "subclass_acc", "teacher_acc", "teacher_nmi", "teacher_subclass_recovery",
         "teacher_subclasses_used", "teacher_usage_entropy")
#: every summary key, in summary.json's order (the rest sorted)
ALL_KEYS = (*SUMMARY_KEYS, *sorted({f"{t}_{k}" for t in TAGS for k in _KEYS} - set(SUMMARY_KEYS)
                                   | {"chance_subclass_recovery", "chance_subclass_recovery_blind"}))

__all__ = ["EXPERIMENT", "NAME", "SUMMARY_KEYS"]


def aux_runs(ctx: Context) -> Path:
    return mnist_teacher_dir(ctx.out, ctx.quick)


def teacher(ctx: Context, tag: str, seed: int) -> Job:
    if tag == "noaux":
        return mnist_teacher_job(ctx, runs_dir(ctx), seed, beta=0.0)
    return mnist_teacher_job(ctx, aux_runs(ctx), seed)


def student(ctx: Context, tag: str, seed: int) -> Job:
    """The subclass student of the ``tag`` teacher of ``seed``, beside that teacher's run."""
    where, suffix = (runs_dir(ctx), "_beta0") if tag == "noaux" else (aux_runs(ctx), "")
    cfgs = student_cfgs(ctx.settings, where, teacher_file(teacher(ctx, tag, seed)), seed, suffix=suffix,
                        which=("subclass",))
    return mnist_job(ctx, cfgs["subclass"])


def evaluate(ctx: Context, job: Job, teachers: list[Job] | None = None) -> dict[str, Any]:
    splits, fine = mnist_2x5_splits(ctx.data_dir, ctx.quick)
    return subclass_eval(job, splits.test, fine.test, ctx.progress, teachers or [])


def teachers(ctx: Context) -> list[Job]:
    return [teacher(ctx, tag, s) for s in ctx.seeds for tag in TAGS]


def teacher_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    v: dict[str, list[float]] = {}
    for j, rec in zip(teachers(ctx), recs):
        tag = "noaux" if j.config["method_args"]["beta"] == 0 else "aux"
        ev = evaluate(ctx, j)
        for k, x in (("teacher_acc", pct(rec["final"]["test"]["accuracy"])),
                     ("teacher_subclass_recovery", pct(ev["recovery"])), ("teacher_nmi", ev["nmi"]),
                     ("teacher_subclasses_used", ev["num_used"]), ("teacher_usage_entropy", ev["usage_entropy"])):
            v.setdefault(f"{tag}_{k}", []).append(x)
    return Outcome(v)


def student_jobs(ctx: Context) -> list[Job]:
    return teachers(ctx) + [student(ctx, tag, s) for s in ctx.seeds for tag in TAGS]


def student_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    v: dict[str, list[float]] = {}
    for s in ctx.seeds:
        for tag in TAGS:
            j = student(ctx, tag, s)
            ev = evaluate(ctx, j, [teacher(ctx, tag, s)])
            rec = finished_record(j.config) or ctx.records[j.out_dir]
            v.setdefault(f"{tag}_subclass_acc", []).append(pct(rec["final"]["test"]["accuracy"]))
            v.setdefault(f"{tag}_student_subclass_recovery", []).append(pct(ev["recovery"]))
    chance = chance_levels(mnist_2x5_splits(ctx.data_dir, ctx.quick)[1].test, SUBCLASSES)
    v["chance_subclass_recovery"] = [pct(chance["class_aware"])]
    v["chance_subclass_recovery_blind"] = [pct(chance["blind"])]
    return Outcome(v)


def figures(ctx: Context, res: Results) -> None:
    if "noaux_subclass_acc" not in ctx.values:
        return  # the students' runs are not all finished (--only)
    s = ctx.seeds[0]
    aux, noaux = evaluate(ctx, teacher(ctx, "aux", s)), evaluate(ctx, teacher(ctx, "noaux", s))
    ablation_figure(res.path("ablation.png"), aux, noaux)
    usage_figure(res.path("usage.png"), [("teacher β = 1", aux), ("teacher β = 0", noaux),
                                         ("student of β = 0 teacher", evaluate(ctx, student(ctx, "noaux", s)))],
                 "Subclass usage on the test set, with and without L_aux (first seed)")


ROWS = (("teacher binary test accuracy %", "teacher_acc", 2),
        ("teacher subclass recovery % (global matching)", "teacher_subclass_recovery", 2),
        ("teacher NMI with digit", "teacher_nmi", 3),
        ("teacher subclasses used (≥1% of test)", "teacher_subclasses_used", 2),
        ("teacher normalised usage entropy per class", "teacher_usage_entropy", 3),
        ("subclass student binary test accuracy %", "subclass_acc", 2),
        ("subclass student subclass recovery %", "student_subclass_recovery", 2))


def report(ctx: Context, summary: dict[str, Any], prov: dict[str, Any]) -> str:
    if not all(k in summary for k in ALL_KEYS):
        return f"# {NAME}\n\nIncomplete: rerun `darkknowledge reproduce {NAME}` without --only.\n"
    values = ctx.values
    table = markdown_table(["", "β = 1 (subclass-mnist-2x5)", "β = 0 (no auxiliary loss)"],
                           [[label, fmt_pm(summary[f"aux_{k}"], d), fmt_pm(summary[f"noaux_{k}"], d)]
                            for label, k, d in ROWS])
    chance = chance_levels(mnist_2x5_splits(ctx.data_dir, ctx.quick)[1].test, SUBCLASSES)
    drop = summary["aux_teacher_subclass_recovery"]["mean"] > summary["noaux_teacher_subclass_recovery"]["mean"]
    sec = template(NAME.replace("-", "_"))
    return render(
        sec[""], name=NAME, quick_note=sec["quick_note"] if ctx.quick else "", n_seeds=len(ctx.seeds), table=table,
        chance={k: pct(v) for k, v in chance.items()}, holds="It holds" if drop else "It does NOT hold",
        c_rec=paired_claim("β = 1", "β = 0", values["aux_teacher_subclass_recovery"],
                           values["noaux_teacher_subclass_recovery"]),
        c_acc=paired_claim("the student of the β = 1 teacher", "the student of the β = 0 teacher",
                           values["aux_subclass_acc"], values["noaux_subclass_acc"]),
        seeds=ctx.seeds, prov=prov, stages=stage_times(prov),
        run_min=prov["run_wall_time_total_s"] / 60, runs="runs-quick" if ctx.quick else "runs")


EXPERIMENT = register_experiment(Experiment(
    NAME, settings=mnist_settings, default_seeds=lambda st: 3,
    stages=[Stage("teacher", teachers, teacher_numbers),
            Stage("students", student_jobs, student_numbers, needs=("teacher",))],
    summary_keys=ALL_KEYS, report=report, figures=figures,
    extra_provenance=lambda ctx: run_provenance(ctx, aux_runs=str(aux_runs(ctx)))))
