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
7. ``timing``      — the solver benchmark's speed-up and the time spent.

A new stage goes into :data:`STAGES` before ``timing``; it reads what earlier stages found in ``ctx.details``
(per dataset: :func:`dataset_details`) and adds its own with :func:`with_dataset_field`.

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

import base64
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.jobs import Job, cached_eval, finished_record
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..report import Results
from . import hinton_specialists_report as rep
from . import register_experiment
from .hinton_specialists_jobs import (
    DISTILLED,
    SPECIALIST,
    data_splits,
    load_generalist,
    load_specialist,
    tensor_sha256,
)

__all__ = ["EXPERIMENT", "STAGES", "PAPER", "Settings", "DataSettings", "settings_for", "summary_keys",
           "SUMMARY_SUFFIXES", "CLUSTER_TEMPERATURES", "class_names", "generalist", "specialist_jobs",
           "dataset_details", "with_dataset_field"]

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
#: candidate temperatures of the clustering (the smallest that gives no oversized cluster is used)
CLUSTER_TEMPERATURES = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
SOLVER_FILE = Path("results") / "benchmarks" / "specialists_solver.json"
#: evaluation batch: on this CPU small_cnn's fp32 forward runs ~5× faster in batches of 128–256 than of 2,000
EVAL_BATCH = 256
EVAL_VERSION = 1


@dataclass(frozen=True)
class DataSettings:
    """One dataset's runs."""

    key: str  # summary prefix: "cifar10" / "omniglot"
    dataset: str
    model_args: dict[str, Any]
    epochs: int  # generalist and distilled student
    spec_epochs: int
    k: int
    overlap: int = 0
    overlap_ratio: float | None = None
    batch_size: int = 128
    lr: float = 0.05
    spec_lr: float = 0.01
    augment_shift: int = 0
    val_size: int | float = 5000
    fraction: float = 1.0
    precision: str = "fp32"
    channels_last: bool = False
    note: str = ""


@dataclass(frozen=True)
class Settings:
    quick: bool
    seeds: int  # the default; details and provenance show the seeds a run used
    data: tuple[DataSettings, ...]
    temperatures: tuple[float, ...] = (1.0, 2.0)  # of the distilled-back student, chosen on validation (seed 0)
    w_hard: float = 0.1
    threads: int = 1
    top_n: int = 1
    cluster_temperatures: tuple[float, ...] = CLUSTER_TEMPERATURES
    max_cluster_share: float = 2.0  # a cluster may hold at most this × C / K classes (the clustering-T rule)

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


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


def settings_for(quick: bool, seeds: int | None = None) -> Settings:
    return Settings(quick, seeds or (1 if quick else 3), (_cifar(quick), _omniglot(quick)))


def summary_keys(s: Settings) -> list[str]:
    return [f"{d.key}_{k}" for d in s.data for k in SUMMARY_SUFFIXES]


def _used(ctx: Context) -> Settings:
    """The settings with the seeds of this invocation."""
    return dataclasses.replace(ctx.settings, seeds=len(ctx.seeds))


def class_names(dataset: str, data_dir: str | None) -> list[str]:
    if dataset.startswith("cifar10"):
        from ..data.cifar import CIFAR10_CLASSES

        return list(CIFAR10_CLASSES)
    if dataset == "omniglot":
        from ..data.omniglot import omniglot_class_names

        return omniglot_class_names(data_dir)
    raise KeyError(dataset)


def _digest(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


# --------------------------------------------------------------------------- the runs (configs)


def run_dir(ctx: Context, d: DataSettings, seed: int) -> Path:
    return ctx.out / "runs" / d.key / f"seed{seed}"


def _cfg(ctx: Context, d: DataSettings, name: str, seed: int, epochs: int, lr: float, out_dir: Path,
         num_classes: int | None = None) -> dict[str, Any]:
    args = dict(d.model_args)
    if num_classes is not None:
        args["num_classes"] = num_classes
    return {"name": name, "seed": seed, "epochs": epochs, "batch_size": d.batch_size, "threads": ctx.settings.threads,
            "eval_batch_size": EVAL_BATCH,
            "model": {"name": "small_cnn", "args": args},
            "data": {"dataset": d.dataset, "data_dir": ctx.data_dir, "val_size": d.val_size,
                     "fraction": d.fraction, "augment_shift": d.augment_shift},
            "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                      "schedule": "cosine"},
            "precision": d.precision, "channels_last": d.channels_last, "out_dir": str(out_dir)}


def generalist(ctx: Context, d: DataSettings, seed: int) -> dict[str, Any]:
    return _cfg(ctx, d, f"{d.key}-generalist", seed, d.epochs, d.lr, run_dir(ctx, d, seed) / "generalist")


def dataset_details(ctx: Context, d: DataSettings) -> dict[str, Any]:
    """What the stages so far found for dataset ``d`` (``details.json``'s ``datasets[d.key]``)."""
    return ctx.details["datasets"][d.key]


def with_dataset_field(ctx: Context, name: str, by_key: dict[str, Any]) -> dict[str, Any]:
    """``details`` with the field ``name`` added to each dataset's entry (``by_key``: dataset key → value)."""
    return {"datasets": {k: {**v, name: by_key[k]} for k, v in ctx.details["datasets"].items()}}


def specialist_jobs(ctx: Context, d: DataSettings, seed: int) -> list[Job]:
    """One ``"specialist"`` job per special set of ``seed``'s clusters."""
    gen = generalist(ctx, d, seed)
    jobs = []
    for m, classes in enumerate(dataset_details(ctx, d)["clusters"][seed]["sets"]):
        # the special classes are in the run's name, so a run of another clustering is never reused
        cfg = _cfg(ctx, d, f"{d.key}-specialist{m}-{_digest(classes, 8)}", seed * 1000 + 100 + m, d.spec_epochs,
                   d.spec_lr, run_dir(ctx, d, seed) / f"specialist{m}", num_classes=len(classes) + 1)
        jobs.append(Job(cfg, {"generalist": gen, "classes": list(classes)}, kind=SPECIALIST))
    return jobs


def _table_path(ctx: Context, d: DataSettings, seed: int) -> Path:
    return run_dir(ctx, d, seed) / "combination" / "q_train.safetensors"


def distilled_job(ctx: Context, d: DataSettings, seed: int, t: float) -> Job:
    """The student distilled from ``seed``'s combination at temperature ``t`` (job kind ``"specialist-distilled"``)."""
    comb = dataset_details(ctx, d)["combination"][seed]
    cfg = _cfg(ctx, d, f"{d.key}-distilled-T{t:g}-{comb['table_sha256'][:8]}", seed * 1000 + 500, d.epochs, d.lr,
               run_dir(ctx, d, seed) / f"distilled_T{t:g}")
    cfg["distill"] = {"teachers": [], "temperature": t, "w_soft": 1.0, "w_hard": ctx.settings.w_hard, "cache": False}
    # a linear warm-up over the first epoch and clipping: without them a T = 2 student (the soft term is
    # scaled by T²) died in its first epoch on 2 of 6 tries (stuck at chance, "soft term has not moved")
    cfg["optim"].update({"warmup_epochs": 1.0, "grad_clip": 5.0})
    kw = {"generalist": generalist(ctx, d, seed), "specialists": [j.config for j in specialist_jobs(ctx, d, seed)],
          "classes": dataset_details(ctx, d)["clusters"][seed]["sets"], "shifts": comb["shifts"],
          "table": str(_table_path(ctx, d, seed)), "table_sha256": comb["table_sha256"], "top_n": ctx.settings.top_n}
    return Job(cfg, kw, kind=DISTILLED)


def _with_weights(ctx: Context, jobs: list[Job]) -> None:
    """Make sure the weights of finished runs are on disk (a fresh clone holds the records only)."""
    ctx.run([dataclasses.replace(j, need_weights=True) for j in jobs])


# --------------------------------------------------------------------------- evaluations (cached in eval.json)


def _pack(m: np.ndarray) -> dict[str, Any]:
    """A matrix for the figure, int8-quantised and base64 (C² bytes), to keep eval.json small."""
    scale = float(np.abs(m).max()) or 1.0
    q8 = np.round(m / scale * 127).astype(np.int8)
    return {"scale": scale / 127, "n": int(m.shape[0]), "int8_base64": base64.b64encode(q8.tobytes()).decode()}


def covariance(clusters: dict[str, Any]) -> np.ndarray | None:
    """The (quantised) covariance matrix stored with seed 0's clusters, or ``None``."""
    cov = clusters.get("covariance")
    if not cov:
        return None
    q8 = np.frombuffer(base64.b64decode(cov["int8_base64"]), dtype=np.int8).reshape(cov["n"], cov["n"])
    return q8.astype(np.float64) * cov["scale"]


def clusters_eval(ctx: Context, d: DataSettings, seed: int) -> dict[str, Any]:
    """The generalist's distributions on the training set, the clustering temperature, the clusters and special
    sets, and (seed 0) the covariance for the figure; cached in the generalist's ``eval.json``."""
    from ..metrics import predict_logits
    from ..specialists import clusters_by_temperature, special_sets

    gen_cfg, s = generalist(ctx, d, seed), ctx.settings
    key = f"clusters-{_digest([d.k, d.overlap, d.overlap_ratio, s.cluster_temperatures, s.max_cluster_share])}"

    def compute() -> dict[str, Any]:
        t0 = time.process_time()
        _with_weights(ctx, [Job(gen_cfg)])
        splits = data_splits(gen_cfg["data"])
        z = predict_logits(load_generalist(gen_cfg), splits.train.x, EVAL_BATCH).double()
        t, cl, tried = clusters_by_temperature(z, d.k, s.cluster_temperatures, s.max_cluster_share, d.overlap, seed)
        out = {"temperature": t, "sizes_by_temperature": tried, "own_cluster": cl.labels.tolist(),
               "order": cl.order.tolist(), "sets": special_sets(cl, d.overlap_ratio),
               "train_acc": float((z.argmax(1) == splits.train.y).double().mean()), "cpu_s": time.process_time() - t0}
        if seed == 0:
            out["covariance"] = _pack(cl.covariance)
        return out

    return cached_eval(gen_cfg["out_dir"], key, compute, version=EVAL_VERSION)


def _combination(ctx: Context, d: DataSettings, seed: int) -> dict[str, Any]:
    """Generalist + specialists on validation, test and training (:func:`~darkknowledge.specialists.
    evaluate_combination`); ``q`` of the training set written to the table the distilled students learn from."""
    from safetensors.torch import save

    from ..specialists import evaluate_combination
    from ..utils import atomic_write_bytes

    t0 = time.process_time()
    gen_cfg, jobs = generalist(ctx, d, seed), specialist_jobs(ctx, d, seed)
    sets = [j.kwargs["classes"] for j in jobs]
    _with_weights(ctx, [Job(gen_cfg)] + jobs)
    gen = load_generalist(gen_cfg)
    specs = [load_specialist(gen, j.config, cl) for j, cl in zip(jobs, sets)]  # uncorrected: shifted outputs
    out, q_train = evaluate_combination(gen, specs, sets, data_splits(gen_cfg["data"]), ctx.settings.top_n, EVAL_BATCH)
    log_q = torch.log(q_train.clamp_min(1e-30)).float().contiguous()
    path = _table_path(ctx, d, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({"log_q": log_q}))
    recs = [finished_record(j.config) or {} for j in jobs]
    return {**out, "table_sha256": tensor_sha256(log_q),
            "specialists": [{"classes": cl, "val_acc": r.get("final", {}).get("val", {}).get("accuracy"),
                             "selected_epoch": r.get("final", {}).get("selected_epoch"),
                             "test_acc_own_task": r.get("final", {}).get("test", {}).get("accuracy"),
                             "train_examples": r.get("dataset", {}).get("train")} for cl, r in zip(sets, recs)],
            "cpu_s": time.process_time() - t0}


def combination_eval(ctx: Context, d: DataSettings, seed: int) -> dict[str, Any]:
    """:func:`_combination`, cached in the generalist's ``eval.json`` and tied to the record of every specialist."""
    shas = [hashlib.sha256((Path(j.out_dir) / "run.json").read_bytes()).hexdigest()
            for j in specialist_jobs(ctx, d, seed)]
    return cached_eval(generalist(ctx, d, seed)["out_dir"], f"combination-{_digest([shas, ctx.settings.top_n])}",
                       lambda: _combination(ctx, d, seed), version=EVAL_VERSION)


def _ensure_table(ctx: Context, d: DataSettings, seed: int) -> None:
    """Before a distilled student trains: its table and its teachers' weights (a fresh clone has records only)."""
    from safetensors.torch import load_file

    comb, path = dataset_details(ctx, d)["combination"][seed], _table_path(ctx, d, seed)
    if not (path.exists() and tensor_sha256(load_file(str(path))["log_q"]) == comb["table_sha256"]):
        if _combination(ctx, d, seed)["table_sha256"] != comb["table_sha256"]:
            raise RuntimeError(f"{path}: the recomputed combination differs from the cached one; delete the "
                               f"'combination-*' entries of {generalist(ctx, d, seed)['out_dir']}/eval.json and rerun")
    _with_weights(ctx, [Job(generalist(ctx, d, seed))] + specialist_jobs(ctx, d, seed))


# --------------------------------------------------------------------------- stages


def _each(ctx: Context) -> list[tuple[DataSettings, int]]:
    return [(d, k) for d in ctx.settings.data for k in ctx.seeds]


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
                        "generalists": [row(ctx.records[generalist(ctx, d, k)["out_dir"]]) for k in ctx.seeds]}
                for d in ctx.settings.data}
    return Outcome(details={"settings": _used(ctx).as_dict(), "datasets": datasets})


def clusters(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    found = {d.key: [clusters_eval(ctx, d, k) for k in ctx.seeds] for d in ctx.settings.data}
    values = {f"{key}_n_specialists": [float(len(c["sets"])) for c in cs] for key, cs in found.items()}
    no_cov = {key: [{k: v for k, v in c.items() if k != "covariance"} for c in cs] for key, cs in found.items()}
    return Outcome(values, with_dataset_field(ctx, "clusters", no_cov))


def all_specialist_jobs(ctx: Context) -> list[Job]:
    """Every specialist; a generalist's weights first (in this process) where one of its specialists has to train."""
    jobs = []
    for d, k in _each(ctx):
        js = specialist_jobs(ctx, d, k)
        if ctx.allow_train and any(finished_record(j.config) is None for j in js):
            _with_weights(ctx, [Job(generalist(ctx, d, k))])
        jobs += js
    return jobs


def combination(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    rows = {d.key: [combination_eval(ctx, d, k) for k in ctx.seeds] for d in ctx.settings.data}
    values = {f"{key}_{m}": [r[m] for r in rs] for key, rs in rows.items()
              for m in ("generalist_acc", "specialists_acc", "rel_gain", "generalist_cond_acc", "specialists_cond_acc")}
    return Outcome(values, with_dataset_field(ctx, "combination", rows))


def _distilled_jobs(ctx: Context, runs: list[tuple[DataSettings, int, float]]) -> list[Job]:
    jobs = [distilled_job(ctx, d, k, t) for d, k, t in runs]
    for (d, k, _), j in zip(runs, jobs):
        if ctx.allow_train and finished_record(j.config) is None:
            _ensure_table(ctx, d, k)
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
                   for d in ctx.settings.data for i in range(len(ctx.seeds)))
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
    Stage("timing", collect=timing),
]


# --------------------------------------------------------------------------- report


def _figures(ctx: Context, res: Results) -> None:
    rep.figures(res, ctx.details, {d.key: covariance(clusters_eval(ctx, d, 0)) for d in ctx.settings.data}, PAPER)


EXPERIMENT = register_experiment(Experiment(
    NAME, settings=settings_for, stages=STAGES, default_seeds=lambda s: s.seeds,
    options=frozenset({"seeds", "workers"}),
    summary_keys=summary_keys(settings_for(False)) + ["solver_speedup"],
    report=lambda ctx, summary, prov: rep.report(summary, ctx.details, prov, PAPER), figures=_figures,
    extra_provenance=lambda ctx: {"settings": _used(ctx).as_dict()}))
