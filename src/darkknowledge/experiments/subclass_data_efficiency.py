"""``darkknowledge reproduce subclass-data-efficiency``: subclass distillation with little transfer data.

Our extension (spec §11.1; the paper may not have run it): the MNIST-2x5 teachers of
``subclass-mnist-2x5`` (trained on all 55k training images; reused from
``<results>/subclass-mnist-2x5/runs/`` when present, else trained there) teach fully connected
students that see only 1 %, 5 % or 25 % of the transfer set, with its labels. Students: labels only
(scratch), conventional and subclass distillation, same settings as ``subclass-mnist-2x5`` except the
number of epochs, which grows as the data shrinks so every student gets a comparable number of
optimiser steps (see ``EPOCHS``). The subset is drawn per seed (seed-dependent) and shared by the
three methods. **Claim to test: the advantage of subclass distillation grows as the data shrinks.**

Summary keys: ``<method>_acc_<pct>pct`` (binary test accuracy %), plus ``subclass_minus_<method>_<pct>pct``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.jobs import Job
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..report import Results, markdown_table, render, summarize
from . import register_experiment
from . import subclass_common as sc
from .subclass_common import fmt_pm, pct
from .subclass_figures import data_efficiency_figure

NAME = "subclass-data-efficiency"
STAGES = ("teacher", "students")
PERCENTS = (1, 5, 25)
METHODS = ("scratch", "conventional", "subclass")
#: student epochs per percentage: ≈ 600–1100 optimiser steps each at batch 256 (full data: 12 epochs ≈ 2600)
EPOCHS = {1: 200, 5: 60, 25: 20}
QUICK_EPOCHS = {1: 10, 5: 4, 25: 2}
SUMMARY_KEYS = tuple(f"{m}_acc_{p}pct" for p in PERCENTS for m in METHODS)
GAPS = ("scratch", "conventional")  # subclass − these
ALL_KEYS = (*SUMMARY_KEYS, "teacher_acc", *(f"subclass_minus_{m}_{p}pct" for p in PERCENTS for m in GAPS))

__all__ = ["EXPERIMENT", "NAME", "PERCENTS", "METHODS", "EPOCHS", "SUMMARY_KEYS"]


def teacher_runs(ctx: Context) -> Path:
    return sc.mnist_teacher_dir(ctx.out, ctx.quick)


def epochs(ctx: Context) -> dict[int, int]:
    return QUICK_EPOCHS if ctx.quick else EPOCHS


def n_train(ctx: Context, p: int) -> int:
    """The number of training images a student on ``p`` % of the transfer set sees."""
    return max(1, round(p / 100 * len(sc.mnist_2x5_splits(ctx.data_dir, ctx.quick)[0].train)))


def teachers(ctx: Context) -> list[Job]:
    return [sc.mnist_teacher_job(ctx, teacher_runs(ctx), s) for s in ctx.seeds]


def students(ctx: Context, p: int, seed: int, teacher: Job) -> dict[str, Job]:
    """The students on a seeded ``p`` % subset (drawn per seed, shared by the three methods)."""
    cfgs = sc.student_cfgs(ctx.settings, sc.runs_dir(ctx), sc.teacher_file(teacher), seed, suffix=f"_{p}pct",
                        epochs=epochs(ctx)[p], which=METHODS)
    for cfg in cfgs.values():
        cfg["data"]["fraction"] = p / 100
    return {m: sc.mnist_job(ctx, cfg, subset=(n_train(ctx, p), 1000 * seed + p)) for m, cfg in cfgs.items()}


def teacher_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    return Outcome({"teacher_acc": [pct(r["final"]["test"]["accuracy"]) for r in recs]})


def student_jobs(ctx: Context) -> list[Job]:
    ts = teachers(ctx)
    return ts + [j for p in PERCENTS for s, t in zip(ctx.seeds, ts) for j in students(ctx, p, s, t).values()]


def student_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    v: dict[str, list[float]] = {}
    for p in PERCENTS:
        for s, t in zip(ctx.seeds, teachers(ctx)):
            for m, j in students(ctx, p, s, t).items():
                v.setdefault(f"{m}_acc_{p}pct", []).append(pct(ctx.records[j.out_dir]["final"]["test"]["accuracy"]))
        for m in GAPS:
            v[f"subclass_minus_{m}_{p}pct"] = list(np.asarray(v[f"subclass_acc_{p}pct"]) - np.asarray(v[f"{m}_acc_{p}pct"]))
    return Outcome(v)


def full_data_results(ctx: Context) -> dict[str, list[float]]:
    """The 100 % students of subclass-mnist-2x5, when its runs exist (for the figure and table)."""
    out: dict[str, list[float]] = {}
    for m in METHODS:
        for s in ctx.seeds:
            f = teacher_runs(ctx) / f"{m}_seed{s}" / "run.json"
            if f.exists():
                out.setdefault(m, []).append(pct(json.loads(f.read_text())["final"]["test"]["accuracy"]))
    return {m: v for m, v in out.items() if len(v) == len(ctx.seeds)}


def figures(ctx: Context, res: Results) -> None:
    if all(k in ctx.values for k in ALL_KEYS):
        data_efficiency_figure(res.path("data_efficiency.png"), summarize(ctx.values), full_data_results(ctx),
                               PERCENTS, METHODS)


def report(ctx: Context, summary: dict[str, Any], prov: dict[str, Any]) -> str:
    if not all(k in summary for k in ALL_KEYS):
        return f"# {NAME}\n\nIncomplete: rerun `darkknowledge reproduce {NAME}` without --only.\n"
    ep, full = epochs(ctx), full_data_results(ctx)
    rows = [[f"{p}% ({n_train(ctx, p)} images, {ep[p]} epochs)"] + [fmt_pm(summary[f"{m}_acc_{p}pct"]) for m in METHODS]
            + [fmt_pm(summary[f"subclass_minus_{m}_{p}pct"]) for m in GAPS] for p in PERCENTS]
    if full:
        rows.append(["100% (subclass-mnist-2x5)"] + [fmt_pm(summarize({m: full[m]})[m]) for m in METHODS]
                    + [f"{np.mean(np.asarray(full['subclass']) - np.asarray(full[m])):+.2f}" for m in GAPS])
    table = markdown_table(["transfer set", "labels only (scratch)", "conventional", "subclass",
                            "subclass − scratch", "subclass − conventional"], rows)
    gaps = [summary[f"subclass_minus_conventional_{p}pct"]["mean"] for p in PERCENTS]  # 1, 5, 25 %
    sec = sc.template(NAME.replace("-", "_"))
    verdict = sec["verdict_holds" if gaps[0] > gaps[1] > gaps[2] else
                  "verdict_partly" if gaps[0] > gaps[2] else "verdict_not"]
    return render(sec[""], name=NAME, quick_note=sec["quick_note"] if ctx.quick else "",
                  teacher_acc=fmt_pm(summary["teacher_acc"]), n_seeds=len(ctx.seeds), table=table,
                  gap_txt=", ".join(f"{p}%: {g:+.2f}" for p, g in zip(PERCENTS, gaps)), verdict=verdict, epochs=ep,
                  seeds=ctx.seeds, prov=prov, stages=sc.stage_times(prov),
                  run_min=prov["run_wall_time_total_s"] / 60, runs="runs-quick" if ctx.quick else "runs")


EXPERIMENT = register_experiment(Experiment(
    NAME, settings=sc.mnist_settings, default_seeds=lambda st: 3,
    stages=[Stage("teacher", teachers, teacher_numbers),
            Stage("students", student_jobs, student_numbers, needs=("teacher",))],
    summary_keys=ALL_KEYS, report=report, figures=figures,
    extra_provenance=lambda ctx: sc.run_provenance(
        ctx, epochs_per_percent=epochs(ctx), train_examples_per_percent={p: n_train(ctx, p) for p in PERCENTS},
        teacher_runs=str(teacher_runs(ctx)))))
