"""The runs of :mod:`.hinton_specialists` and what is measured of them: the settings' types, the configs of every
run (generalists, specialists — job kind ``"specialist"`` —, students distilled from the combination — job kind
``"specialist-distilled"``; :mod:`.hinton_specialists_jobs`) and the evaluations of finished runs, cached in the
generalist's ``eval.json`` (:func:`~darkknowledge.engine.jobs.cached_eval`) so that a fresh clone, which holds the
records and these caches but no weights, re-renders the report without training.

A stage reads what earlier stages found in ``ctx.details`` (per dataset: :func:`dataset_details`) and adds its own
with :func:`with_dataset_field`."""

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
from ..engine.stages import Context
from .hinton_specialists_jobs import (
    DISTILLED,
    SPECIALIST,
    data_splits,
    load_generalist,
    load_specialist,
    tensor_sha256,
)

__all__ = ["DataSettings", "Settings", "CLUSTER_TEMPERATURES", "EVAL_BATCH", "class_names", "run_dir", "generalist",
           "specialist_jobs", "distilled_job", "dataset_details", "with_dataset_field", "clusters_eval",
           "combination_eval", "covariance", "ensure_weights", "ensure_table"]

#: candidate temperatures of the clustering (the smallest that gives no oversized cluster is used)
CLUSTER_TEMPERATURES = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
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
    #: "main": the paper's protocol on the dataset (its own summary keys); "sweep": a point of the capacity sweep
    role: str = "main"
    seeds: int | None = None  # its own number of seeds (the sweep points); None: the invocation's


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

    def main(self) -> tuple[DataSettings, ...]:
        return tuple(d for d in self.data if d.role == "main")

    def sweep(self) -> tuple[DataSettings, ...]:
        return tuple(d for d in self.data if d.role == "sweep")

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


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
                     "fraction": d.fraction, "augment": [{"name": "shift", "max": d.augment_shift}] * bool(d.augment_shift)},
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


def distilled_job(ctx: Context, d: DataSettings, seed: int, t: float, consistent: bool = False) -> Job:
    """The student distilled from ``seed``'s combination at temperature ``t`` (job kind ``"specialist-distilled"``);
    ``consistent``: the same run with the live combination on every augmented training batch instead of the table
    of the clean images (the same seed, recipe and data: only the teacher's answers differ)."""
    comb = dataset_details(ctx, d)["combination"][seed]
    tag = "-consistent" * consistent
    cfg = _cfg(ctx, d, f"{d.key}-distilled-T{t:g}-{comb['table_sha256'][:8]}{tag}", seed * 1000 + 500, d.epochs,
               d.lr, run_dir(ctx, d, seed) / f"distilled_T{t:g}{tag.replace('-', '_')}")
    cfg["distill"] = {"teachers": [], "temperature": t, "w_soft": 1.0, "w_hard": ctx.settings.w_hard, "cache": False}
    # a linear warm-up over the first epoch and clipping: without them a T = 2 student (the soft term is
    # scaled by T²) died in its first epoch on 2 of 6 tries (stuck at chance, "soft term has not moved")
    cfg["optim"].update({"warmup_epochs": 1.0, "grad_clip": 5.0})
    kw = {"generalist": generalist(ctx, d, seed), "specialists": [j.config for j in specialist_jobs(ctx, d, seed)],
          "classes": dataset_details(ctx, d)["clusters"][seed]["sets"], "shifts": comb["shifts"],
          "table": str(_table_path(ctx, d, seed)), "table_sha256": comb["table_sha256"], "top_n": ctx.settings.top_n}
    if consistent:
        kw["consistent"] = True
    return Job(cfg, kw, kind=DISTILLED)


def ensure_weights(ctx: Context, jobs: list[Job]) -> None:
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
        ensure_weights(ctx, [Job(gen_cfg)])
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
    ensure_weights(ctx, [Job(gen_cfg)] + jobs)
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


def ensure_table(ctx: Context, d: DataSettings, seed: int) -> None:
    """Before a distilled student trains: its table and its teachers' weights (a fresh clone has records only)."""
    from safetensors.torch import load_file

    comb, path = dataset_details(ctx, d)["combination"][seed], _table_path(ctx, d, seed)
    if not (path.exists() and tensor_sha256(load_file(str(path))["log_q"]) == comb["table_sha256"]):
        if _combination(ctx, d, seed)["table_sha256"] != comb["table_sha256"]:
            raise RuntimeError(f"{path}: the recomputed combination differs from the cached one; delete the "
                               f"'combination-*' entries of {generalist(ctx, d, seed)['out_dir']}/eval.json and rerun")
    ensure_weights(ctx, [Job(generalist(ctx, d, seed))] + specialist_jobs(ctx, d, seed))
