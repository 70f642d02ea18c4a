"""Hinton, Vinyals & Dean (2015) §5 — specialists — and distilling them back into one network:
``darkknowledge reproduce hinton-specialists`` (spec §3, §4.4, §6.1 claim 7).

Two datasets stand in for JFT: CIFAR-10 (the JPEG copy, 10 classes) and Omniglot (242 characters of 8
alphabets, split by drawer; :mod:`darkknowledge.data.omniglot`). For each dataset and seed:

1. ``generalist``  — ``small_cnn`` trained on all the classes, an ordinary job (config only);
2. ``clusters``    — the generalist's predicted distributions on the training (transfer) set → K-means on the
                     columns of their covariance (:func:`~darkknowledge.specialists.confusable_clusters`);
                     Table 2 analogue with class names;
3. ``specialists`` — one per special set, initialised from the generalist (output layer: the set + a dustbin;
                     :func:`~darkknowledge.specialists.make_specialist`), trained on 50/50 data
                     (:func:`~darkknowledge.specialists.specialist_splits`) as pool jobs
                     (``Job(fn="darkknowledge.experiments.hinton_specialists_runs:train_specialist")``), the epoch
                     selected on a 50/50 validation sample; then the dustbin bias correction;
4. ``combination`` — generalist + active specialists (the generalist's top-1 class, n = 1) combined by the
                     batched Eq. 5 solver (:func:`~darkknowledge.specialists.combine`) on the test set: test
                     accuracy, conditional accuracy (Table 3), gain by number of covering specialists (Table 4);
5. ``distilled``   — beyond the paper: the Eq. 5 distributions ``q`` on the training set, computed once, are the
                     soft targets of ONE network of the generalist's architecture trained from scratch
                     (``kd``: soft term at T plus a small hard term); T chosen on validation (seed 0).

**Choices made without the test set.** Epochs of every run: validation accuracy (specialists: on a 50/50
validation sample). The dustbin correction rule — the paper's ``log(0.5/f)`` or the exact prior shift
``log((1 − f)/f)`` — is the one whose combination is more accurate on the validation split. The distillation
temperature: the best mean validation accuracy of the seed-0 students. Two label-free rules on the training set's
predictions fix the clusters: the **clustering temperature** is the smallest T of :data:`CLUSTER_TEMPERATURES`
for which no K-means cluster holds more than twice the average share of classes (a confident generalist's
``T = 1`` distributions give one giant cluster plus singletons: the covariance columns are dominated by their
diagonal); **overlap** on Omniglot: a class also joins every other cluster whose centre is at most
``1 + overlap_ratio`` times as far from its covariance column as its own centre (so coverage varies between
classes, as in the paper's Table 4; the library's ``overlap=r`` gives every class exactly ``1 + r``
specialists). CIFAR-10 uses K = 4 disjoint clusters.

Accuracies in the summary are fractions; ``rel_gain = (specialists_acc − generalist_acc) / generalist_acc``.
The report is written by :mod:`.hinton_specialists_report`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..engine.jobs import Job, run_jobs
from ..report import provenance, write_summary
from ..utils import atomic_write_json
from . import register_experiment
from .runner import cached_eval, finished_record, run_cached

__all__ = ["run", "PAPER", "Settings", "DataSettings", "settings_for", "summary_keys", "SUMMARY_SUFFIXES",
           "train_specialist", "train_distilled", "SpecialistCombination", "data_splits", "class_names",
           "CLUSTER_TEMPERATURES"]

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
    seeds: int
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


def _digest(obj: Any, n: int = 10) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


from ..specialists.teacher import _probs  # noqa: E402
from .hinton_specialists_runs import (  # noqa: E402,F401 (re-exported: tests and the report use them)
    SpecialistCombination,
    _best,
    _load_generalist,
    _load_specialist,
    _tensor_sha,
    class_names,
    data_splits,
    train_distilled,
    train_specialist,
)

# --------------------------------------------------------------------------- configs


@dataclass
class Ctx:
    out: Path
    data_dir: str | None
    s: Settings
    progress: bool
    cpu: dict[str, float] = field(default_factory=dict)

    def log(self, msg: str) -> None:
        if self.progress:
            print(msg, file=sys.stderr, flush=True)

    def run_dir(self, d: DataSettings, seed: int) -> Path:
        return self.out / "runs" / d.key / f"seed{seed}"

    def _base(self, d: DataSettings, name: str, seed: int, epochs: int, lr: float, out_dir: Path,
              num_classes: int | None = None) -> dict[str, Any]:
        args = dict(d.model_args)
        if num_classes is not None:
            args["num_classes"] = num_classes
        return {"name": name, "seed": seed, "epochs": epochs, "batch_size": d.batch_size, "threads": self.s.threads,
                "eval_batch_size": EVAL_BATCH,
                "model": {"name": "small_cnn", "args": args},
                "data": {"dataset": d.dataset, "data_dir": self.data_dir, "val_size": d.val_size,
                         "fraction": d.fraction, "augment_shift": d.augment_shift},
                "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                          "schedule": "cosine"},
                "precision": d.precision, "channels_last": d.channels_last, "out_dir": str(out_dir)}

    def generalist(self, d: DataSettings, seed: int) -> dict[str, Any]:
        return self._base(d, f"{d.key}-generalist", seed, d.epochs, d.lr, self.run_dir(d, seed) / "generalist")

    def specialist(self, d: DataSettings, seed: int, m: int, classes: list[int]) -> Job:
        # the special classes are in the run's name, so a run of another clustering is never reused
        cfg = self._base(d, f"{d.key}-specialist{m}-{_digest(classes, 8)}", seed * 1000 + 100 + m, d.spec_epochs,
                         d.spec_lr, self.run_dir(d, seed) / f"specialist{m}", num_classes=len(classes) + 1)
        return Job(cfg, {"generalist": self.generalist(d, seed), "classes": list(classes)},
                   fn="darkknowledge.experiments.hinton_specialists_runs:train_specialist")

    def specialists(self, d: DataSettings, seed: int, sets: list[list[int]]) -> list[Job]:
        return [self.specialist(d, seed, m, cl) for m, cl in enumerate(sets)]

    def table_path(self, d: DataSettings, seed: int) -> Path:
        return self.run_dir(d, seed) / "combination" / "q_train.safetensors"

    def distilled(self, d: DataSettings, seed: int, t: float, sets: list[list[int]], comb: dict[str, Any]) -> Job:
        cfg = self._base(d, f"{d.key}-distilled-T{t:g}-{comb['table_sha256'][:8]}", seed * 1000 + 500, d.epochs,
                         d.lr, self.run_dir(d, seed) / f"distilled_T{t:g}")
        cfg["distill"] = {"teachers": [], "temperature": t, "w_soft": 1.0, "w_hard": self.s.w_hard, "cache": False}
        # a linear warm-up over the first epoch and clipping: without them a T = 2 student (the soft term is
        # scaled by T²) died in its first epoch on 2 of 6 tries (stuck at chance, "soft term has not moved")
        cfg["optim"].update({"warmup_epochs": 1.0, "grad_clip": 5.0})
        kw = {"generalist": self.generalist(d, seed), "specialists": [j.config for j in self.specialists(d, seed, sets)],
              "classes": sets, "shifts": comb["shifts"], "table": str(self.table_path(d, seed)),
              "table_sha256": comb["table_sha256"], "top_n": self.s.top_n}
        return Job(cfg, kw, fn="darkknowledge.experiments.hinton_specialists_runs:train_distilled")


# --------------------------------------------------------------------------- clusters (stage 2)


def memberships(cl, overlap_ratio: float | None) -> list[list[int]]:
    """The special sets: the library's clusters, or (``overlap_ratio``) each class in every cluster whose centre is
    within ``1 + overlap_ratio`` times the distance to its own centre. Sets holding every class are dropped."""
    if overlap_ratio is None:
        sets = [list(map(int, c)) for c in cl.clusters]
    else:
        n = cl.distances.shape[0]
        own = cl.distances[np.arange(n), cl.labels]
        inside = cl.distances <= own[:, None] * (1 + overlap_ratio) + 1e-12
        sets = [np.flatnonzero(inside[:, j]).tolist() for j in range(inside.shape[1])]
    n_cls = len(cl.labels)
    return [s for s in sets if 0 < len(s) < n_cls]


def _clusters(c: Ctx, d: DataSettings, seed: int) -> dict[str, Any]:
    """Stage 2, cached in the generalist's ``eval.json``: the generalist's distributions on the training set, the
    clustering temperature (rule above), the clusters and special sets, and (seed 0) the covariance for the figure."""
    from ..metrics import predict_logits
    from ..specialists import confusable_clusters

    gen_cfg = c.generalist(d, seed)
    s = c.s
    key = f"clusters-{_digest([d.k, d.overlap, d.overlap_ratio, s.cluster_temperatures, s.max_cluster_share])}"

    def compute() -> dict[str, Any]:
        t0 = time.process_time()
        run_cached(gen_cfg, progress=c.progress, need_weights=True)
        splits = data_splits(gen_cfg["data"])
        z = predict_logits(_load_generalist(gen_cfg), splits.train.x, EVAL_BATCH).double()
        n_cls = z.shape[1]
        tried: dict[str, list[int]] = {}
        chosen = None
        for t in s.cluster_temperatures:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cl = confusable_clusters(torch.softmax(z / t, 1), d.k, overlap=d.overlap, seed=seed)
            sizes = np.bincount(cl.labels, minlength=len(cl.clusters)).tolist()
            tried[f"{t:g}"] = sorted(sizes, reverse=True)
            if max(sizes) <= s.max_cluster_share * n_cls / d.k:
                chosen = (t, cl)
                break
        if chosen is None:
            chosen = (t, cl)
        t, cl = chosen
        sets = memberships(cl, d.overlap_ratio)
        out = {"temperature": t, "sizes_by_temperature": tried, "own_cluster": cl.labels.tolist(),
               "order": cl.order.tolist(), "sets": sets, "train_acc": float((z.argmax(1) == splits.train.y).double().mean()),
               "cpu_s": time.process_time() - t0}
        if seed == 0:  # for the figure: int8-quantised, base64 (C² bytes), to keep eval.json small
            cov = cl.covariance
            scale = float(np.abs(cov).max()) or 1.0
            q8 = np.round(cov / scale * 127).astype(np.int8)
            out["covariance"] = {"scale": scale / 127, "n": int(cov.shape[0]),
                                 "int8_base64": base64.b64encode(q8.tobytes()).decode()}
        return out

    return cached_eval(gen_cfg["out_dir"], key, compute, version=EVAL_VERSION)


# --------------------------------------------------------------------------- combination (stage 4)


def covariance(clusters: dict[str, Any]) -> np.ndarray | None:
    """The (quantised) covariance matrix stored with seed 0's clusters, or ``None``."""
    cov = clusters.get("covariance")
    if not cov:
        return None
    q8 = np.frombuffer(base64.b64decode(cov["int8_base64"]), dtype=np.int8).reshape(cov["n"], cov["n"])
    return q8.astype(np.float64) * cov["scale"]


def _ensure_specialist_weights(c: Ctx, jobs: list[Job]) -> None:
    for j in jobs:
        train_specialist(j.config, progress=c.progress, need_weights=True, **j.kwargs)


def _combination(c: Ctx, d: DataSettings, seed: int, clus: dict[str, Any]) -> dict[str, Any]:
    """Stage 4: generalist + specialists on the validation split (which dustbin rule), the test split (the
    metrics) and the training split (``q``, written to the table the distilled student learns from)."""
    from safetensors.torch import save

    from ..metrics import predict_logits
    from ..specialists import (
        accuracy,
        active_specialists,
        combine,
        conditional_accuracy,
        coverage_counts,
        dustbin_shift,
        gain_by_coverage,
        shift_dustbin_logits,
        special_fraction,
    )
    from ..utils import atomic_write_bytes

    t0 = time.process_time()
    gen_cfg = c.generalist(d, seed)
    run_cached(gen_cfg, progress=c.progress, need_weights=True)
    sets = clus["sets"]
    jobs = c.specialists(d, seed, sets)
    _ensure_specialist_weights(c, jobs)
    splits = data_splits(gen_cfg["data"])
    gen = _load_generalist(gen_cfg)
    specs = [_load_specialist(gen, j.config, cl) for j, cl in zip(jobs, sets)]  # uncorrected: shifts applied below
    fracs = [special_fraction(splits.train.y, cl) for cl in sets]
    rules = {r: [dustbin_shift(f, rule=r) for f in fracs] for r in ("paper", "prior")}

    logits: dict[str, tuple[Tensor, list[Tensor]]] = {}

    def solve(part: str, rule: str) -> tuple[Tensor, Tensor, dict[str, Any], float]:
        if part not in logits:
            x = getattr(splits, part).x
            logits[part] = (predict_logits(gen, x, EVAL_BATCH), [predict_logits(sp, x, EVAL_BATCH) for sp in specs])
        z_g, z_s = logits[part]
        p_g = _probs(z_g)
        p_s = [_probs(shift_dustbin_logits(z.double(), sh)) for z, sh in zip(z_s, rules[rule])]
        t1 = time.perf_counter()
        q, info = combine(p_g, p_s, sets, top_n=c.s.top_n, return_info=True)
        return p_g, q, info, time.perf_counter() - t1

    val = {r: solve("val", r) for r in rules}
    y_val = splits.val.y
    val_acc = {r: accuracy(v[1], y_val) for r, v in val.items()}
    rule = "prior" if val_acc["prior"] > val_acc["paper"] else "paper"
    p_g, q, info, secs = solve("test", rule)
    y = splits.test.y
    g_acc, s_acc = accuracy(p_g, y), accuracy(q, y)
    act = active_specialists(p_g, sets, c.s.top_n)
    cov = coverage_counts(y, sets, p_g.shape[1])
    g_ok, s_ok = p_g.argmax(1) == y, q.argmax(1) == y
    covered_active = (act & torch.stack([torch.isin(y, torch.tensor(cl)) for cl in sets], 1)).any(1)
    # training split: q for the distilled student (log q in float32, looked up by dataset index)
    _, q_train, info_train, secs_train = solve("train", rule)
    log_q = torch.log(q_train.clamp_min(1e-30)).float().contiguous()
    path = c.table_path(d, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({"log_q": log_q}))
    spec_recs = [finished_record(j.config) for j in jobs]
    return {
        "rule": rule, "val_acc_by_rule": val_acc, "generalist_val_acc": accuracy(val[rule][0], y_val),
        "shifts": rules[rule], "shifts_by_rule": rules, "special_fractions": fracs,
        "generalist_acc": g_acc, "specialists_acc": s_acc, "rel_gain": (s_acc - g_acc) / g_acc if g_acc else float("nan"),
        "generalist_cond_acc": conditional_accuracy(p_g, y, sets), "specialists_cond_acc": conditional_accuracy(q, y, sets),
        "table4": gain_by_coverage(p_g, q, y, sets),
        "n_test": int(len(y)), "fixed": int((~g_ok & s_ok).sum()), "broken": int((g_ok & ~s_ok).sum()),
        "changed": int((p_g.argmax(1) != q.argmax(1)).sum()),
        "share_with_active": float(act.any(1).double().mean()),
        "share_true_class_in_active": float(covered_active.double().mean()),
        "mean_active": float(act.sum(1).double().mean()), "mean_coverage": float(cov.double().mean()),
        "train_acc_combination": accuracy(q_train, splits.train.y),
        "solver": {"test": {**info, "seconds": secs}, "train": {**info_train, "seconds": secs_train}},
        "table_sha256": _tensor_sha(log_q),
        "specialists": [{"classes": cl, "val_acc": (r or {}).get("final", {}).get("val", {}).get("accuracy"),
                         "selected_epoch": (r or {}).get("final", {}).get("selected_epoch"),
                         "test_acc_own_task": (r or {}).get("final", {}).get("test", {}).get("accuracy"),
                         "train_examples": (r or {}).get("dataset", {}).get("train")}
                        for cl, r in zip(sets, spec_recs)],
        "cpu_s": time.process_time() - t0,
    }


def _combination_key(c: Ctx, d: DataSettings, seed: int, clus: dict[str, Any]) -> str:
    """Tied to the record of every specialist (and, through ``cached_eval``, to the generalist's)."""
    shas = [hashlib.sha256((Path(j.out_dir) / "run.json").read_bytes()).hexdigest()
            for j in c.specialists(d, seed, clus["sets"])]
    return f"combination-{_digest([shas, c.s.top_n])}"


def combination_eval(c: Ctx, d: DataSettings, seed: int, clus: dict[str, Any]) -> dict[str, Any]:
    gen_dir = c.generalist(d, seed)["out_dir"]
    return cached_eval(gen_dir, _combination_key(c, d, seed, clus), lambda: _combination(c, d, seed, clus),
                       version=EVAL_VERSION)


def _ensure_table(c: Ctx, d: DataSettings, seed: int, clus: dict[str, Any], comb: dict[str, Any]) -> None:
    """Before a distilled student trains: its table and its teachers' weights (a fresh clone has records only)."""
    from safetensors.torch import load_file

    path = c.table_path(d, seed)
    ok = path.exists() and _tensor_sha(load_file(str(path))["log_q"]) == comb["table_sha256"]
    if not ok:
        again = _combination(c, d, seed, clus)
        if again["table_sha256"] != comb["table_sha256"]:
            raise RuntimeError(f"{path}: the recomputed combination differs from the cached one; delete the "
                               f"'combination-*' entries of {c.generalist(d, seed)['out_dir']}/eval.json and rerun")
    run_cached(c.generalist(d, seed), progress=c.progress, need_weights=True)
    _ensure_specialist_weights(c, c.specialists(d, seed, clus["sets"]))


def _distilled_eval(job: Job) -> dict[str, Any]:
    rec = finished_record(job.config)
    assert rec is not None
    f = rec["final"]
    return {"val_acc": f["val"]["accuracy"], "test_acc": f["test"]["accuracy"],
            "teacher_test_acc": (f.get("teacher_test") or {}).get("accuracy"),
            "agreement": f["test"].get("agreement"), "selected_epoch": f["selected_epoch"],
            "out_dir": job.out_dir}


# --------------------------------------------------------------------------- the experiment


def _solver_speedup(out: Path) -> float | None:
    for p in (out.parent / "benchmarks" / SOLVER_FILE.name, Path(__file__).resolve().parents[3] / SOLVER_FILE):
        try:
            v = json.loads(p.read_text()).get("solver_speedup")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if isinstance(v, (int, float)):
            return float(v)
    return None


class _Pool:
    """One executor for all the stages (created when a stage has work), so the workers load the data once."""

    def __init__(self, pool: dict[str, Any] | None, progress: bool):
        self.pool, self.progress, self.ex = dict(pool or {}), progress, None

    def run(self, jobs: list[Job]) -> list[dict[str, Any]]:
        if all(finished_record(j.config) is not None for j in jobs):
            return run_jobs(jobs, progress=self.progress)  # nothing to train: no workers started
        if self.ex is None:
            from ..engine.jobs import make_executor

            rest = {k: v for k, v in self.pool.items() if k not in ("executor", "workers")}
            self.ex = make_executor(self.pool.get("executor", "local"), self.pool.get("workers", 1), **rest)
        return run_jobs(jobs, self.ex, progress=self.progress)

    def close(self) -> None:
        if self.ex is not None:
            self.ex.close()


def _record_seconds(cfgs: list[dict[str, Any]]) -> dict[str, float]:
    wall = cpu = 0.0
    for cfg in cfgs:
        rec = finished_record(cfg)
        if rec:
            wall += float(rec.get("wall_time_s") or 0.0)
            cpu += float(rec.get("cpu_time_s") or 0.0)
    return {"wall_s": wall, "cpu_s": cpu}


def _stages(c: Ctx, seeds_: list[int], workers: _Pool):
    """Stages 1–5 (every run on the pool); returns what the summary and report need."""
    s = c.s
    t0 = time.perf_counter()
    # 1. generalists
    gens = [c.generalist(d, k) for d in s.data for k in seeds_]
    c.log(f"{NAME}: {len(gens)} generalists ({', '.join(d.key for d in s.data)} × {s.seeds} seeds)")
    workers.run([Job(g) for g in gens])
    # 2. clusters
    c.log(f"{NAME}: clusters ({time.perf_counter() - t0:.0f} s)")
    clus = {(d.key, k): _clusters(c, d, k) for d in s.data for k in seeds_}
    # 3. specialists (the generalist's weights first, for a clone that holds only the records)
    spec_jobs: list[Job] = []
    for d in s.data:
        for k in seeds_:
            jobs = c.specialists(d, k, clus[d.key, k]["sets"])
            if any(finished_record(j.config) is None for j in jobs):
                run_cached(c.generalist(d, k), progress=c.progress, need_weights=True)
            spec_jobs += jobs
    c.log(f"{NAME}: {len(spec_jobs)} specialists")
    workers.run(spec_jobs)
    # 4. combination (Eq. 5)
    c.log(f"{NAME}: Eq. 5 combinations ({time.perf_counter() - t0:.0f} s)")
    comb = {(d.key, k): combination_eval(c, d, k, clus[d.key, k]) for d in s.data for k in seeds_}

    # 5. distilled back into one network: T chosen on seed 0's validation accuracy, then the other seeds
    def distilled_jobs(pairs: list[tuple[DataSettings, int, float]]) -> list[Job]:
        jobs = [c.distilled(d, k, t, clus[d.key, k]["sets"], comb[d.key, k]) for d, k, t in pairs]
        for (d, k, _), j in zip(pairs, jobs):
            if finished_record(j.config) is None:
                _ensure_table(c, d, k, clus[d.key, k], comb[d.key, k])
        workers.run(jobs)
        return jobs

    c.log(f"{NAME}: distilled students ({time.perf_counter() - t0:.0f} s)")
    first = distilled_jobs([(d, 0, t) for d in s.data for t in s.temperatures])
    by_t = {(j.config["name"].split("-")[0], j.config["distill"]["temperature"]): _distilled_eval(j) for j in first}
    best_t = {d.key: max(s.temperatures, key=lambda t, d=d: (by_t[d.key, t]["val_acc"], -t)) for d in s.data}
    rest = distilled_jobs([(d, k, best_t[d.key]) for d in s.data for k in seeds_[1:]])
    dist = {(d.key, 0): by_t[d.key, best_t[d.key]] for d in s.data}
    for j in rest:
        key = j.config["name"].split("-")[0]
        dist[key, int(Path(j.out_dir).parent.name.removeprefix("seed"))] = _distilled_eval(j)
    return clus, comb, spec_jobs, first, rest, best_t, by_t, dist, gens


@register_experiment(NAME)
def run(out: str | Path = f"results/{NAME}", data_dir: str | None = None, quick: bool = False,
        seeds: int | None = None, progress: bool = True, pool: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or reuse) every run on the pool, evaluate, write ``summary.json``, ``details.json``,
    ``provenance.json``, figures and ``report.md``."""
    from ..report import write_report
    from .hinton_specialists_report import build_report, write_figures

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = settings_for(quick, seeds)
    c = Ctx(out, data_dir, s, progress)
    seeds_ = list(range(s.seeds))
    workers = _Pool(pool, progress)
    try:
        clus, comb, spec_jobs, first, rest, best_t, by_t, dist, gens = _stages(c, seeds_, workers)
    finally:
        workers.close()

    # summary and details
    v: dict[str, list[float]] = {}
    details: dict[str, Any] = {"settings": s.as_dict(), "datasets": {}}
    train_cfgs = gens + [j.config for j in spec_jobs + first + rest]
    for d in s.data:
        rows = [comb[d.key, k] for k in seeds_]
        for suffix in ("generalist_acc", "specialists_acc", "rel_gain", "generalist_cond_acc", "specialists_cond_acc"):
            v[f"{d.key}_{suffix}"] = [r[suffix] for r in rows]
        v[f"{d.key}_distilled_back_acc"] = [dist[d.key, k]["test_acc"] for k in seeds_]
        v[f"{d.key}_n_specialists"] = [float(len(clus[d.key, k]["sets"])) for k in seeds_]
        names = class_names(d.dataset, data_dir)
        gen_recs = [finished_record(c.generalist(d, k)) for k in seeds_]
        details["datasets"][d.key] = {
            "settings": dataclasses.asdict(d), "class_names": names,
            "generalists": [{"val_acc": r["final"]["val"]["accuracy"], "test_acc": r["final"]["test"]["accuracy"],
                             "selected_epoch": r["final"]["selected_epoch"], "train": r["dataset"]["train"],
                             "val": r["dataset"]["val"], "test": r["dataset"]["test"],
                             "samples_per_s": [e["samples_per_s"] for e in r["epochs"]],
                             "wall_time_s": r["wall_time_s"], "cpu_time_s": r["cpu_time_s"]} for r in gen_recs],
            "clusters": [{kk: vv for kk, vv in clus[d.key, k].items() if kk != "covariance"} for k in seeds_],
            "combination": rows,
            "distilled": {"best_T": best_t[d.key],
                          "by_T_seed0": {f"{t:g}": by_t[d.key, t] for t in s.temperatures},
                          "seeds": [dist[d.key, k] for k in seeds_]},
        }
    speed = _solver_speedup(out)
    if speed is not None:
        v["solver_speedup"] = [speed]
    details["solver_speedup"] = speed
    main_cpu = sum(clus[kk].get("cpu_s", 0.0) + comb[kk].get("cpu_s", 0.0) for kk in clus)
    details["time"] = {**_record_seconds(train_cfgs), "main_cpu_s": main_cpu,
                       "by_dataset": {d.key: _record_seconds([cf for cf in train_cfgs
                                                              if Path(cf["out_dir"]).parts[-3] == d.key])
                                      for d in s.data}}
    keys = summary_keys(s) + (["solver_speedup"] if speed is not None else [])
    summary = write_summary(out, {k: v[k] for k in keys})
    atomic_write_json(out / "details.json", details)
    wall = time.perf_counter() - t0
    cmd = f"darkknowledge reproduce {NAME}" + (" --quick" if quick else "") + \
        (f" --seeds {seeds}" if seeds else "") + (f" --workers {pool.get('workers', 1)}" if pool else "")
    prov = provenance(cmd, wall, seeds_)
    prov["settings"] = s.as_dict()
    atomic_write_json(out / "provenance.json", prov)
    write_figures(out, details, {d.key: covariance(clus[d.key, 0]) for d in s.data})
    write_report(out, build_report(s, summary, details, prov))
    c.log(f"{NAME}: done in {wall:.0f} s; {out}/report.md")
    return summary
