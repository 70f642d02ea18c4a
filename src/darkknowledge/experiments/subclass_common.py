"""Shared pieces of the subclass-distillation experiments (Müller, Kornblith & Hinton 2020).

* 2×5 splits: a 10-class dataset regrouped into 2 classes (fine labels 0–4 → 0, 5–9 → 1); the fine
  labels are kept aside, **for evaluation only** (subclass recovery, NMI, usage: :mod:`darkknowledge.subclass`);
* the four students of the spec (§6): labels only, conventional distillation on the teacher's
  logsumexp-grouped class logits, penultimate-layer regression (our form), subclass distillation;
* the MNIST-2x5 settings of the official demo (§8), shared by ``subclass-mnist-2x5``,
  ``subclass-data-efficiency`` and ``subclass-ablation`` so the three reuse the same teacher runs;
* the job kind ``subclass-mnist`` (a run on MNIST-2x5 splits built from its keywords), the cached subclass
  evaluation of a finished run, templates and the provenance fields the reports read.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data import Splits, TensorData, load_dataset
from ..engine.jobs import Job, cached_eval, register_job_kind, run_cached, run_jobs
from ..engine.stages import Context
from ..models import load_model
from ..report import fmt
from ..subclass import evaluate_subclasses

__all__ = ["NUM_CLASSES", "SUBCLASSES", "MNIST_REFERENCE", "STUDENTS", "FineLabels", "coarse_2x5", "subsample_train",
           "mnist_2x5_splits", "Settings", "mnist_settings", "teacher_cfg", "student_cfgs", "mnist_teacher_dir",
           "runs_dir", "mnist_job", "mnist_teacher_job", "subclass_logits_of", "subclass_eval", "pct", "fmt_pm",
           "template", "stage_times", "run_provenance"]

NUM_CLASSES, SUBCLASSES = 2, 5
#: the official MNIST-2x5 demo's single-run numbers (binary test accuracy %, spec §8)
MNIST_REFERENCE = {"teacher_acc": 99.35, "subclass_acc": 99.01, "conventional_acc": 98.72, "scratch_acc": 98.53}
#: the students (name → method); "scratch" = labels only
STUDENTS = ("scratch", "conventional", "penultimate", "subclass")


@dataclasses.dataclass
class FineLabels:
    """The true fine labels (digits / CIFAR classes) of each split, kept out of training."""

    train: Tensor
    val: Tensor
    test: Tensor


def coarse_2x5(splits: Splits) -> tuple[Splits, FineLabels]:
    """Regroup a 10-class :class:`Splits` into 2 classes (``y // 5``); return it and the fine labels."""
    def coarse(d: TensorData) -> TensorData:
        return TensorData(d.x, torch.div(d.y, SUBCLASSES, rounding_mode="floor"), d.index)

    fine = FineLabels(splits.train.y.clone(), splits.val.y.clone(), splits.test.y.clone())
    out = dataclasses.replace(splits, train=coarse(splits.train), val=coarse(splits.val), test=coarse(splits.test),
                              num_classes=NUM_CLASSES, name=f"{splits.name}-2x5")
    return out, fine


def subsample_train(splits: Splits, fine: FineLabels, n: int | None, seed: int) -> tuple[Splits, FineLabels]:
    """Keep a seeded random ``n`` of the training split (``None``: all), in dataset order."""
    if n is None or n >= len(splits.train):
        return splits, fine
    keep = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return (dataclasses.replace(splits, train=splits.train.subset(keep)),
            dataclasses.replace(fine, train=fine.train[keep]))


@functools.lru_cache(maxsize=8)
def mnist_2x5_splits(data_dir: str | None, quick: bool, subset: tuple[int, int] | None = None
                     ) -> tuple[Splits, FineLabels]:
    """MNIST-2x5: 55k train / 5k validation (seeded, split_seed 0) / 10k test; quick: 6k train, 2k val, 2k test.
    ``subset = (n, seed)``: a seeded ``n`` of the training split (:func:`subsample_train`). Memoised."""
    if subset is not None:
        return subsample_train(*mnist_2x5_splits(data_dir, quick), subset[0], seed=subset[1])
    s = load_dataset("mnist", data_dir, val_size=5000, split_seed=0)
    s, fine = coarse_2x5(s)
    if quick:
        s, fine = subsample_train(s, fine, 6000, seed=1)
        keep = torch.arange(2000)
        s = dataclasses.replace(s, val=s.val.subset(keep), test=s.test.subset(keep))
        fine = dataclasses.replace(fine, val=fine.val[keep], test=fine.test[keep])
    return s, fine


@register_job_kind("subclass-mnist")
def train_on_mnist_2x5(config: dict[str, Any], *, progress: bool, need_weights: bool, data_dir: str | None = None,
                       quick: bool = False, subset: Sequence[int] | None = None) -> dict[str, Any]:
    """A run on the MNIST-2x5 splits of ``(data_dir, quick, subset)`` (cached and resumable: ``run_cached``)."""
    splits, _ = mnist_2x5_splits(data_dir, quick, tuple(subset) if subset else None)
    return run_cached(config, splits=splits, progress=progress, need_weights=need_weights)


# --------------------------------------------------------------------------------------------------
# configs


@dataclasses.dataclass(frozen=True)
class Settings:
    """Training settings of one experiment family (MNIST: the official demo, §8)."""

    dataset: str
    teacher_model: dict[str, Any]
    student_backbone: dict[str, Any]  # registered name + args of the student backbone (without num_classes)
    epochs: int
    student_epochs: int
    batch_size: int = 256
    lr: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.5
    beta: float = 1.0
    aux_temperature: float = 1.0
    penultimate_weight: float = 1.0
    threads: int = 1
    precision: str = "fp32"  # "bf16": training forward under CPU bf16 autocast (losses and evaluation in fp32)
    channels_last: bool = False
    data_note: str = ""  # informational (the splits are built by the experiment and passed in)
    optim: dict[str, Any] | None = None  # default: Adam(lr), constant


def mnist_settings(quick: bool) -> Settings:
    return Settings(
        dataset="mnist-2x5",
        teacher_model={"name": "subclass", "args": {"backbone": "small_cnn", "subclasses": SUBCLASSES,
                                                     "in_channels": 1, "dropout": 0.5}},
        student_backbone={"name": "mlp", "args": {"in_features": 784, "hidden": [784, 784]}},
        epochs=2 if quick else 12, student_epochs=2 if quick else 12,
        data_note="quick: 6k train / 2k val / 2k test" if quick else "55k train / 5k val / 10k test",
    )


def _base(st: Settings, name: str, out_dir: Path, seed: int, epochs: int) -> dict[str, Any]:
    optim = st.optim or {"name": "adam", "lr": st.lr, "schedule": "constant"}
    return {"name": name, "seed": seed, "epochs": epochs, "batch_size": st.batch_size, "threads": st.threads,
            "eval_batch_size": 1000, "optim": optim, "precision": st.precision, "channels_last": st.channels_last,
            "data": {"dataset": st.dataset},
            "out_dir": str(out_dir)}


def teacher_cfg(st: Settings, out_dir: Path, seed: int, beta: float | None = None) -> dict[str, Any]:
    """The subclass teacher (§4): ``CE(y, class_logits) + β · L_aux`` with ``n = 2``, ``s = 5``."""
    beta = st.beta if beta is None else beta
    cfg = _base(st, f"teacher_beta{beta:g}_seed{seed}", out_dir, seed, st.epochs)
    cfg.update(model=st.teacher_model, method="subclass_teacher",
               method_args={"beta": beta, "aux_temperature": st.aux_temperature})
    return cfg


def student_cfgs(st: Settings, runs: Path, teacher_file: Path, seed: int, suffix: str = "",
                 epochs: int | None = None, which: Sequence[str] = STUDENTS) -> dict[str, dict[str, Any]]:
    """The four students of §6 (same backbone; the subclass student has ``n·s`` outputs).

    * ``scratch``: labels only (plain cross-entropy);
    * ``conventional``: KD on the teacher's grouped class logits, ``α·T²·CE(p_T, q_T) + (1−α)·CE(y, q)``;
    * ``penultimate``: ``CE(y, z) + w · ½‖W h_s + c − sg(h_t)‖²`` (our form, §6.3);
    * ``subclass``: ``α·T²·CE over the n·s tempered subclass distributions + (1−α)·CE(y, class logits)``.
    """
    ep = st.student_epochs if epochs is None else epochs
    back = st.student_backbone
    plain = {"name": back["name"], "args": dict(back["args"])}
    sub = {"name": "subclass", "args": {"backbone": back["name"], "subclasses": SUBCLASSES, **back["args"]}}
    t = [str(teacher_file)]
    out: dict[str, dict[str, Any]] = {}
    for name in which:
        cfg = _base(st, f"{name}{suffix}_seed{seed}", runs / f"{name}{suffix}_seed{seed}", seed, ep)
        if name == "scratch":
            cfg.update(model=plain)
        elif name == "conventional":
            cfg.update(model=plain, distill={"teachers": t, "temperature": st.temperature, "w_soft": st.alpha,
                                             "w_hard": 1 - st.alpha})
        elif name == "penultimate":
            cfg.update(model=plain, distill={"teachers": t}, method="penultimate",
                       method_args={"weight": st.penultimate_weight})
        elif name == "subclass":
            cfg.update(model=sub, distill={"teachers": t}, method="subclass_kd",
                       method_args={"temperature": st.temperature, "alpha": st.alpha})
        else:
            raise ValueError(f"unknown student {name!r}")
        out[name] = cfg
    return out


def runs_dir(ctx: Context) -> Path:
    """``<out>/runs`` (``runs-quick`` in quick mode)."""
    return ctx.out / ("runs-quick" if ctx.quick else "runs")


def mnist_teacher_dir(out: Path, quick: bool) -> Path:
    """Where the MNIST-2x5 teacher runs live: ``<results>/subclass-mnist-2x5/runs[-quick]/`` beside ``out``,
    so ``subclass-data-efficiency`` and ``subclass-ablation`` reuse ``subclass-mnist-2x5``'s teachers."""
    return Path(out).parent / "subclass-mnist-2x5" / ("runs-quick" if quick else "runs")


def mnist_job(ctx: Context, cfg: dict[str, Any], subset: tuple[int, int] | None = None) -> Job:
    """A run on MNIST-2x5 (job kind ``subclass-mnist``)."""
    kw: dict[str, Any] = {"data_dir": ctx.data_dir, "quick": ctx.quick}
    if subset is not None:
        kw["subset"] = list(subset)
    return Job(cfg, kw, kind="subclass-mnist")


def mnist_teacher_job(ctx: Context, runs: Path, seed: int, beta: float | None = None) -> Job:
    """One MNIST-2x5 subclass teacher in ``runs/teacher[_beta<β>]_seed<seed>`` (β: the settings' by default)."""
    st = ctx.settings
    beta = st.beta if beta is None else beta
    tag = "teacher" if beta == st.beta else f"teacher_beta{beta:g}"
    return mnist_job(ctx, teacher_cfg(st, runs / f"{tag}_seed{seed}", seed, beta=beta))


def teacher_file(job: Job) -> Path:
    return Path(job.out_dir) / "best.safetensors"


# --------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def subclass_logits_of(model: torch.nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    model.eval()
    return torch.cat([model.subclass_logits(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def subclass_eval(job: Job, test: TensorData, fine_test: Tensor, progress: bool = True,
                  teachers: Sequence[Job] = ()) -> dict[str, Any]:
    """:func:`~darkknowledge.subclass.evaluate_subclasses` of the run's selected model on the test split,
    cached in its ``eval.json`` (committed results re-render without the weights; a miss retrains the run
    deterministically to get them back, after the ``teachers`` it distils from when it must train)."""

    def compute() -> dict[str, Any]:
        run_jobs([*teachers, dataclasses.replace(job, need_weights=True)], progress=progress)
        z = subclass_logits_of(load_model(teacher_file(job)), test.x)
        return evaluate_subclasses(z, test.y, fine_test, SUBCLASSES)

    return cached_eval(job.out_dir, "subclass_eval_test", compute)


# --------------------------------------------------------------------------------------------------
# reporting


def pct(x: float) -> float:
    return 100.0 * float(x)


def fmt_pm(entry: dict[str, Any] | None, digits: int = 2, scale: float = 1.0) -> str:
    """``mean ± std`` (n shown when > 1): :func:`darkknowledge.report.fmt`."""
    return fmt(entry, digits, scale, show_n="multi")


@functools.cache
def template(name: str) -> dict[str, str]:
    """The sections of the report template ``templates/<name>.md``: the text after a line
    ``<!-- section: KEY -->`` up to the next such line, without the newline that ends it; the text before
    the first marker (the whole file when there is none) is the section ``""``, verbatim."""
    text = (importlib.resources.files("darkknowledge.experiments") / "templates" / f"{name}.md").read_text("utf-8")
    parts = re.split(r"^<!-- section: (\w+) -->\n", text, flags=re.M)
    return {"": parts[0], **{k: v.removesuffix("\n") for k, v in zip(parts[1::2], parts[2::2])}}


def stage_times(prov: dict[str, Any]) -> str:
    """``teacher 501 s, students 195 s``: the stage wall times of a provenance."""
    return ", ".join(f"{k} {v:.0f} s" for k, v in prov["stage_wall_time_s"].items())


def run_provenance(ctx: Context, **extra: Any) -> dict[str, Any]:
    """Provenance fields of the subclass experiments: the training time each run of ``runs_dir(ctx)`` recorded
    (a rerun reuses cached runs, so its own wall time is small), quick mode, torch threads, and ``extra``."""
    per_run = {}
    for f in sorted(runs_dir(ctx).glob("*/*.json")):
        if f.name in ("run.json", "curve.json"):
            per_run[f.parent.name] = round(float(json.loads(f.read_text()).get("wall_time_s", 0.0)), 1)
    return {"run_wall_time_s": per_run, "run_wall_time_total_s": round(sum(per_run.values()), 1),
            "quick": ctx.quick, "torch_threads": torch.get_num_threads(), **extra}
