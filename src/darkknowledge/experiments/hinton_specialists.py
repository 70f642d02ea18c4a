"""Hinton, Vinyals & Dean (2015) §5 — specialists — and distilling them back into one network:
``darkknowledge reproduce hinton-specialists`` (spec §3, §4.4, §6.1 claim 7).

Two datasets stand in for JFT: CIFAR-10 (the JPEG copy, 10 classes) and Omniglot (242 characters of 8
alphabets, split by drawer; :mod:`darkknowledge.data.omniglot`). The stages (:data:`STAGES`, run by
:mod:`darkknowledge.engine.stages`; every run a job on the pool, ``--workers N``), for each dataset and seed:

1. ``generalists`` — ``small_cnn`` trained on all the classes, an ordinary job (config only);
2. ``clusters``    — the generalist's predicted distributions on the training (transfer) set → K-means on the
                     columns of their covariance at the clustering temperature
                     (:func:`~darkknowledge.specialists.clusters_by_temperature`), the special sets
                     (:func:`~darkknowledge.specialists.special_sets`); Table 2 analogue with class names;
3. ``specialists`` — one per special set, initialised from the generalist, trained on 50/50 data: job kind
                     ``"specialist"`` (:mod:`.hinton_specialists_jobs`), the epoch selected on a 50/50
                     validation sample;
4. ``combination`` — generalist + active specialists (the generalist's top-1 class, n = 1) combined by the
                     batched Eq. 5 solver with the dustbin correction chosen on validation
                     (:func:`~darkknowledge.specialists.evaluate_combination`): test accuracy, conditional accuracy
                     (Table 3), gain by number of covering specialists (Table 4); ``q`` on the training set;
5. ``temperature`` — beyond the paper: ``q``, computed once, is the soft target of ONE network of the generalist's
                     architecture trained from scratch (``kd``: soft term at T plus a small hard term; job kind
                     ``"specialist-distilled"``), seed 0 at every T; T chosen on validation;
6. ``distilled``   — the other seeds at the chosen T;
7. ``consistent``  — the sweep points only: each seed's distilled student again at the chosen T, taught
                     consistently (the live combination answers every augmented training batch);
8. ``sweep``       — the capacity sweep (issue 27): the settings of ``role="sweep"`` (Omniglot, ``small_cnn`` from
                     tiny to comfortable, :data:`SWEEP`) went through stages 1–7 like the others; this stage reads
                     them into ``capacity_sweep``, ``best_rel_gain``, ``coverage_rows`` and ``distilled_back_keeps``
                     (:mod:`.hinton_specialists_sweep`);
9. ``timing``      — the solver benchmark's speed-up and the time spent.

A new stage goes into :data:`STAGES` before ``timing``: its runs' configs and cached evaluations in
:mod:`.hinton_specialists_runs`, what it needs of earlier stages read from ``ctx.details`` (per dataset:
:func:`~.hinton_specialists_runs.dataset_details`), its own findings added with
:func:`~.hinton_specialists_runs.with_dataset_field`.

**Choices made without the test set.** Epochs of every run: validation accuracy (specialists: on a 50/50
validation sample). The dustbin correction rule — the paper's ``log(0.5/f)`` or the exact prior shift
``log((1 − f)/f)`` — is the one whose combination is more accurate on the validation split. The distillation
temperature: the best validation accuracy of the seed-0 students. Two label-free rules on the training set's
predictions fix the clusters: the **clustering temperature** is the smallest T of :data:`CLUSTER_TEMPERATURES`
for which no K-means cluster holds more than twice the average share of classes; **overlap** on Omniglot: a class
also joins every other cluster whose centre is at most ``1 + overlap_ratio`` times as far from its covariance
column as its own centre. CIFAR-10 uses K = 4 disjoint clusters.

Accuracies in the summary are fractions; ``rel_gain = (specialists_acc − generalist_acc) / generalist_acc``.
The report and figures are drawn by :mod:`.hinton_specialists_report` from the summary, ``details`` and
:data:`PAPER`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..engine.jobs import Job, finished_record
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..report import Results
from . import hinton_specialists_report as rep
from . import hinton_specialists_sweep as sweep_
from . import register_experiment
from .hinton_specialists_runs import (
    CLUSTER_TEMPERATURES,
    DataSettings,
    Settings,
    class_names,
    clusters_eval,
    combination_eval,
    covariance,
    dataset_details,
    distilled_job,
    ensure_table,
    ensure_weights,
    generalist,
    specialist_jobs,
    with_dataset_field,
)

__all__ = ["EXPERIMENT", "STAGES", "PAPER", "Settings", "DataSettings", "settings_for", "summary_keys",
           "SUMMARY_SUFFIXES", "CLUSTER_TEMPERATURES"]

NAME = "hinton-specialists"
#: Table 3 (JFT dev set; fractions) and Table 4 (rows: covering, examples, Δ correct, relative change) of the paper
PAPER: dict[str, Any] = {
    "generalist_cond_acc": 0.431, "generalist_acc": 0.250, "specialists_cond_acc": 0.459, "specialists_acc": 0.261,
    "rel_gain": 0.044, "n_specialists": 61, "classes": 15000, "classes_per_specialist": 300,
    "table4": [(0, 350037, 0, 0.0), (1, 141993, 1421, 0.034), (2, 67161, 1572, 0.074), (3, 38801, 1124, 0.088),
               (4, 26298, 835, 0.105), (5, 16474, 561, 0.111), (6, 10682, 362, 0.113), (7, 7376, 232, 0.128),
               (8, 4703, 182, 0.136), (9, 4706, 208, 0.166), (10, 9082, 324, 0.141)],
}
SUMMARY_SUFFIXES = ("generalist_acc", "specialists_acc", "rel_gain", "generalist_cond_acc", "specialists_cond_acc",
                    "distilled_back_acc", "n_specialists")
SOLVER_FILE = Path("results") / "benchmarks" / "specialists_solver.json"


def _cifar(quick: bool) -> DataSettings:
    args = {"in_channels": 3, "image_size": 32, "dropout": 0.3}
    if quick:
        return DataSettings("cifar10", "cifar10-jpeg", args, epochs=2, spec_epochs=1, k=4, val_size=500,
                            fraction=round(3000 / 49500, 6), precision="bf16", channels_last=True,
                            note="quick: 3,000 training / 500 validation images, all 10,000 test images")
    return DataSettings("cifar10", "cifar10-jpeg", args, epochs=10, spec_epochs=3, k=4, precision="bf16",
                        channels_last=True,
                        note="45,000 training / 5,000 validation images (split seed 0), 10,000 test images")


def _omniglot(quick: bool) -> DataSettings:
    args = {"in_channels": 1, "image_size": 28, "dropout": 0.3}
    common = dict(overlap_ratio=0.2, batch_size=64, augment_shift=2, precision="bf16", channels_last=True,
                  note="drawers 1–13 training (3,146 images), 14–15 validation (484), 16–20 test (1,210); "
                       "±2 px random shifts in training")
    if quick:
        return DataSettings("omniglot", "omniglot", args, epochs=5, spec_epochs=2, k=6, **common)
    return DataSettings("omniglot", "omniglot", args, epochs=30, spec_epochs=15, k=16, **common)


#: the capacity sweep (issue 27): small_cnn (width w, hidden h) generalists on Omniglot, from tiny to comfortable
SWEEP = ((2, 32), (4, 32), (8, 64), (16, 128), (32, 128))
SWEEP_SEEDS = 6
SWEEP_QUICK = ((4, 32), (8, 64))


def _sweep(quick: bool) -> tuple[DataSettings, ...]:
    """One Omniglot setting per (width, hidden) of :data:`SWEEP`: one recipe for every size (dropout 0.1, which lets
    the tiny nets train; at 0.3 a width-2 net stayed at chance in a pilot), more epochs than the main run so the
    small nets converge, and wider overlap (ratio 0.4) so that the number of specialists covering a class varies.
    Each point has :data:`SWEEP_SEEDS` seeds of its own (whatever ``--seeds`` says; the gains are small against the
    seed-to-seed spread of small generalists). Smaller nets are not usable generalists: width 2 with hidden 16 stayed
    at chance in a pilot, and width 1 with hidden 32 did in 2 of 6 seeds, so the sweep starts at width 2."""
    out = []
    for w, h in SWEEP_QUICK if quick else SWEEP:
        args = {"in_channels": 1, "image_size": 28, "dropout": 0.1, "width": w, "hidden": h}
        out.append(DataSettings(f"omniglot_w{w}h{h}", "omniglot", args, epochs=3 if quick else 40,
                                spec_epochs=1 if quick else 20, k=6 if quick else 16, overlap_ratio=0.4, batch_size=64,
                                augment_shift=2, precision="bf16", channels_last=True, role="sweep",
                                seeds=None if quick else SWEEP_SEEDS,
                                note=f"capacity sweep: small_cnn width {w}, hidden {h}"))
    return tuple(out)


def settings_for(quick: bool, seeds: int | None = None) -> Settings:
    return Settings(quick, seeds or (1 if quick else 3), (_cifar(quick), _omniglot(quick)) + _sweep(quick))


def summary_keys(s: Settings) -> list[str]:
    return [f"{d.key}_{k}" for d in s.main() for k in SUMMARY_SUFFIXES]


def _used(ctx: Context) -> Settings:
    """The settings with the seeds of this invocation."""
    return dataclasses.replace(ctx.settings, seeds=len(ctx.seeds))


# --------------------------------------------------------------------------- stages


def seeds_of(ctx: Context, d: DataSettings) -> list[int]:
    """The seeds of dataset setting ``d``: its own ``seeds`` (the sweep points), else this invocation's."""
    return list(range(d.seeds)) if d.seeds else list(ctx.seeds)


def _each(ctx: Context) -> list[tuple[DataSettings, int]]:
    return [(d, k) for d in ctx.settings.data for k in seeds_of(ctx, d)]


def generalist_jobs(ctx: Context) -> list[Job]:
    return [Job(generalist(ctx, d, k)) for d, k in _each(ctx)]


def generalists(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    def row(r: dict[str, Any]) -> dict[str, Any]:
        f = r["final"]
        return {"val_acc": f["val"]["accuracy"], "test_acc": f["test"]["accuracy"], "selected_epoch": f["selected_epoch"],
                "train": r["dataset"]["train"], "val": r["dataset"]["val"], "test": r["dataset"]["test"],
                "samples_per_s": [e["samples_per_s"] for e in r["epochs"]], "wall_time_s": r["wall_time_s"],
                "cpu_time_s": r["cpu_time_s"]}

    datasets = {d.key: {"settings": dataclasses.asdict(d), "class_names": class_names(d.dataset, ctx.data_dir),
                        "generalists": [row(ctx.records[generalist(ctx, d, k)["out_dir"]]) for k in seeds_of(ctx, d)]}
                for d in ctx.settings.data}
    return Outcome(details={"settings": _used(ctx).as_dict(), "datasets": datasets})


def clusters(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    found = {d.key: [clusters_eval(ctx, d, k) for k in seeds_of(ctx, d)] for d in ctx.settings.data}
    values = {f"{key}_n_specialists": [float(len(c["sets"])) for c in cs] for key, cs in found.items()}
    no_cov = {key: [{k: v for k, v in c.items() if k != "covariance"} for c in cs] for key, cs in found.items()}
    return Outcome(values, with_dataset_field(ctx, "clusters", no_cov))


def all_specialist_jobs(ctx: Context) -> list[Job]:
    """Every specialist; a generalist's weights first (in this process) where one of its specialists has to train."""
    jobs = []
    for d, k in _each(ctx):
        js = specialist_jobs(ctx, d, k)
        if ctx.allow_train and any(finished_record(j.config) is None for j in js):
            ensure_weights(ctx, [Job(generalist(ctx, d, k))])
        jobs += js
    return jobs


def combination(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    rows = {d.key: [combination_eval(ctx, d, k) for k in seeds_of(ctx, d)] for d in ctx.settings.data}
    values = {f"{key}_{m}": [r[m] for r in rs] for key, rs in rows.items()
              for m in ("generalist_acc", "specialists_acc", "rel_gain", "generalist_cond_acc", "specialists_cond_acc")}
    return Outcome(values, with_dataset_field(ctx, "combination", rows))


def _distilled_jobs(ctx: Context, runs: list[tuple[DataSettings, int, float]], consistent: bool = False) -> list[Job]:
    jobs = [distilled_job(ctx, d, k, t, consistent) for d, k, t in runs]
    for (d, k, _), j in zip(runs, jobs):
        if ctx.allow_train and finished_record(j.config) is None:
            ensure_table(ctx, d, k)
    return jobs


def _distilled_eval(rec: dict[str, Any], job: Job) -> dict[str, Any]:
    f = rec["final"]
    return {"val_acc": f["val"]["accuracy"], "test_acc": f["test"]["accuracy"],
            "teacher_test_acc": (f.get("teacher_test") or {}).get("accuracy"),
            "agreement": f["test"].get("agreement"), "selected_epoch": f["selected_epoch"], "out_dir": job.out_dir}


def temperature_jobs(ctx: Context) -> list[Job]:
    return _distilled_jobs(ctx, [(d, 0, t) for d in ctx.settings.data for t in ctx.settings.temperatures])


def temperature(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    """T chosen on seed 0's validation accuracy (ties: the lower T)."""
    temps, by_t = ctx.settings.temperatures, iter(zip(recs, temperature_jobs(ctx)))
    chosen = {}
    for d in ctx.settings.data:
        rows = {f"{t:g}": _distilled_eval(*next(by_t)) for t in temps}
        best = max(temps, key=lambda t, rows=rows: (rows[f"{t:g}"]["val_acc"], -t))
        chosen[d.key] = {"best_T": best, "by_T_seed0": rows}
    return Outcome(details=with_dataset_field(ctx, "distilled", chosen))


def distilled_jobs(ctx: Context) -> list[Job]:
    """Every seed at the chosen T (seed 0's ran in ``temperature``)."""
    return _distilled_jobs(ctx, [(d, k, dataset_details(ctx, d)["distilled"]["best_T"]) for d, k in _each(ctx)])


def distilled(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    rows: dict[str, list[dict[str, Any]]] = {d.key: [] for d in ctx.settings.data}
    for (d, _), rec, job in zip(_each(ctx), recs, distilled_jobs(ctx)):
        rows[d.key].append(_distilled_eval(rec, job))
    values = {f"{key}_distilled_back_acc": [r["test_acc"] for r in rs] for key, rs in rows.items()}
    return Outcome(values, with_dataset_field(ctx, "distilled", {
        d.key: {**dataset_details(ctx, d)["distilled"], "seeds": rows[d.key]} for d in ctx.settings.data}))


def _sweep_each(ctx: Context) -> list[tuple[DataSettings, int]]:
    return [(d, k) for d in ctx.settings.sweep() for k in seeds_of(ctx, d)]


def consistent_jobs(ctx: Context) -> list[Job]:
    """Sweep points: every seed's student once more at the chosen T, taught consistently (the live combination on
    each augmented batch; :func:`~.hinton_specialists_runs.distilled_job`)."""
    return _distilled_jobs(ctx, [(d, k, dataset_details(ctx, d)["distilled"]["best_T"]) for d, k in _sweep_each(ctx)],
                           consistent=True)


def consistent(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    rows: dict[str, list[dict[str, Any]]] = {d.key: [] for d in ctx.settings.sweep()}
    for (d, _), rec, job in zip(_sweep_each(ctx), recs, consistent_jobs(ctx)):
        rows[d.key].append(_distilled_eval(rec, job))
    ds = ctx.details["datasets"]
    return Outcome(details={"datasets": {k: ({**v, "distilled": {**v["distilled"], "consistent": rows[k]}}
                                             if k in rows else v) for k, v in ds.items()}})


def _solver_speedup(out: Path) -> float | None:
    for p in (out.parent / "benchmarks" / SOLVER_FILE.name, Path(__file__).resolve().parents[3] / SOLVER_FILE):
        try:
            v = json.loads(p.read_text()).get("solver_speedup")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _seconds(recs: list[dict[str, Any]]) -> dict[str, float]:
    wall = cpu = 0.0
    for rec in recs:
        wall += float(rec.get("wall_time_s") or 0.0)
        cpu += float(rec.get("cpu_time_s") or 0.0)
    return {"wall_s": wall, "cpu_s": cpu}


def timing(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    """The solver benchmark's speed-up (when it has been run) and the time spent: training summed over every run
    (in the order they were made), and the clustering and Eq. 5 inference in this process."""
    speed = _solver_speedup(ctx.out)
    runs = list(ctx.records.values())
    ds = ctx.details["datasets"]
    main_cpu = sum(ds[d.key]["clusters"][i].get("cpu_s", 0.0) + ds[d.key]["combination"][i].get("cpu_s", 0.0)
                   for d in ctx.settings.data for i in range(len(seeds_of(ctx, d))))
    time_ = {**_seconds(runs), "main_cpu_s": main_cpu,
             "by_dataset": {d.key: _seconds([r for r in runs if Path(r["config"]["out_dir"]).parts[-3] == d.key])
                            for d in ctx.settings.data}}
    return Outcome({"solver_speedup": [speed]} if speed is not None else {},
                   {"solver_speedup": speed, "time": time_})


STAGES = [
    Stage("generalists", generalist_jobs, generalists),
    Stage("clusters", collect=clusters),
    Stage("specialists", all_specialist_jobs),
    Stage("combination", collect=combination),
    Stage("temperature", temperature_jobs, temperature),
    Stage("distilled", distilled_jobs, distilled),
    Stage("consistent", consistent_jobs, consistent),
    Stage("sweep", collect=sweep_.sweep),
    Stage("timing", collect=timing),
]


# --------------------------------------------------------------------------- report


def _figures(ctx: Context, res: Results) -> None:
    rep.figures(res, ctx.details, {d.key: covariance(clusters_eval(ctx, d, 0)) for d in ctx.settings.main()}, PAPER)
    sweep_.figure(res, ctx.values.get("capacity_sweep") or [])


EXPERIMENT = register_experiment(Experiment(
    NAME, settings=settings_for, stages=STAGES, default_seeds=lambda s: s.seeds,
    options=frozenset({"seeds", "workers", "only"}),
    summary_keys=summary_keys(settings_for(False)) + ["solver_speedup"] + sweep_.SWEEP_KEYS,
    report=lambda ctx, summary, prov: rep.report(summary, ctx.details, prov, PAPER), figures=_figures,
    extra_provenance=lambda ctx: {"settings": _used(ctx).as_dict()}))
