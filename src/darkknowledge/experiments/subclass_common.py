"""Shared pieces of the subclass-distillation experiments (Müller, Kornblith & Hinton 2020).

* 2×5 splits: a 10-class dataset regrouped into 2 classes (fine labels 0–4 → 0, 5–9 → 1); the fine
  labels are kept aside, **for evaluation only** (subclass recovery, NMI, usage);
* the four students of the spec (§6): labels only, conventional distillation on the teacher's
  logsumexp-grouped class logits, penultimate-layer regression (our form), subclass distillation;
* subclass evaluation of a trained model on the test set (§7);
* the MNIST-2x5 settings of the official demo (§8), shared by ``subclass-mnist-2x5``,
  ``subclass-data-efficiency`` and ``subclass-ablation`` so the three reuse the same teacher runs;
* report helpers (a "reference | ours" table, mean ± std over seeds, provenance with stage times).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import Splits, TensorData, load_dataset
from ..models import load_model
from ..report import fmt, provenance
from ..subclass import chance_subclass_recovery, subclass_nmi, subclass_recovery, subclass_usage
from ..utils import atomic_write_json
from .runner import cached_eval, run_cached

__all__ = ["register_teacher", "ensure_teachers", "run_student", "cached_subclass_eval", "usage_figure",
           "NUM_CLASSES", "SUBCLASSES", "FineLabels", "coarse_2x5", "mnist_2x5_splits", "teacher_cfg",
           "student_cfgs", "STUDENTS", "subclass_logits_of", "subclass_eval", "chance_levels", "mnist_settings",
           "mnist_teacher_dir", "pct", "fmt_pm", "write_provenance", "ensure_dir", "MNIST_REFERENCE"]

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


def mnist_2x5_splits(data_dir: str | None, quick: bool) -> tuple[Splits, FineLabels]:
    """MNIST-2x5: 55k train / 5k validation (seeded, split_seed 0) / 10k test; quick: 6k train, 2k val, 2k test."""
    s = load_dataset("mnist", data_dir, val_size=5000, split_seed=0)
    s, fine = coarse_2x5(s)
    if quick:
        s, fine = subsample_train(s, fine, 6000, seed=1)
        keep = torch.arange(2000)
        s = dataclasses.replace(s, val=s.val.subset(keep), test=s.test.subset(keep))
        fine = dataclasses.replace(fine, val=fine.val[keep], test=fine.test[keep])
    return s, fine


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


# Teachers whose records may be committed without their weights: a student that has to train first
# materialises its teachers' weights (deterministic retraining); cached students never touch them.
_TEACHERS: dict[str, tuple[dict[str, Any], Any]] = {}


def register_teacher(cfg: dict[str, Any], splits: Any) -> Path:
    """Remember how to rebuild ``<out_dir>/best.safetensors``; returns that path."""
    path = Path(cfg["out_dir"]) / "best.safetensors"
    _TEACHERS[str(path)] = (cfg, splits)
    return path


def ensure_teachers(cfg: dict[str, Any], progress: bool = True) -> None:
    """Make sure every registered teacher ``cfg`` distils from has its weights on disk."""
    for t in (cfg.get("distill") or {}).get("teachers", []):
        if Path(t).exists():
            continue
        if t not in _TEACHERS:
            raise FileNotFoundError(f"{cfg['out_dir']}: its teacher's weights {t} are missing and no teacher run "
                                    "is registered to rebuild them")
        tcfg, tsplits = _TEACHERS[t]
        run_cached(tcfg, splits=tsplits, progress=progress, need_weights=True)


def run_student(cfg: dict[str, Any], splits: Any, progress: bool = True, need_weights: bool = False) -> dict[str, Any]:
    """``run_cached`` for a run that may distil from registered teachers."""
    return run_cached(cfg, splits=splits, progress=progress, need_weights=need_weights,
                      before_train=lambda: ensure_teachers(cfg, progress))


def cached_subclass_eval(cfg: dict[str, Any], splits: Any, fine: Any, progress: bool = True) -> dict[str, Any]:
    """:func:`subclass_eval` of the run's selected model on the test split, cached in its ``eval.json``
    (so committed results re-render without the weights; a miss retrains the run deterministically)."""

    def compute() -> dict[str, Any]:
        run_student(cfg, splits, progress, need_weights=True)
        return subclass_eval(Path(cfg["out_dir"]) / "best.safetensors", splits.test.x, splits.test.y, fine.test)

    return cached_eval(cfg["out_dir"], "subclass_eval_test", compute)


def mnist_teacher_dir(out: Path, quick: bool) -> Path:
    """Where the MNIST-2x5 teacher runs live: ``<results>/subclass-mnist-2x5/runs[-quick]/`` beside ``out``,
    so ``subclass-data-efficiency`` and ``subclass-ablation`` reuse ``subclass-mnist-2x5``'s teachers."""
    return Path(out).parent / "subclass-mnist-2x5" / ("runs-quick" if quick else "runs")


# --------------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def subclass_logits_of(model: torch.nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    model.eval()
    return torch.cat([model.subclass_logits(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def subclass_eval(model_or_path: torch.nn.Module | str | Path, x: Tensor, y: Tensor, fine: Tensor,
                  subclasses: int = SUBCLASSES) -> dict[str, Any]:
    """Class accuracy and the §7 subclass metrics of a subclass model on ``(x, y, fine)``.

    ``recovery``: global Hungarian matching of the ``n·s`` predicted subclasses to the fine labels;
    ``recovery_within``: matching restricted to each class's own block; ``nmi``; usage (number of
    subclasses with ≥ 1 % of the examples, mean normalised usage entropy per class)."""
    model = load_model(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path
    z = subclass_logits_of(model, x)
    n = z.shape[1] // subclasses
    pred = z.argmax(1).numpy()
    class_pred = torch.logsumexp(z.view(-1, n, subclasses), -1).argmax(1)
    f = fine.numpy()
    coarse_of_fine = np.arange(int(f.max()) + 1) // subclasses
    usage = subclass_usage(pred, n, subclasses)
    return {
        "accuracy": float((class_pred == y).float().mean()),
        "recovery": subclass_recovery(pred, f),
        "recovery_within": subclass_recovery(pred, f, within_class=True, subclasses=subclasses,
                                             coarse_of_fine=coarse_of_fine),
        "nmi": subclass_nmi(pred, f),
        "num_used": usage["num_used"],
        "usage_entropy": float(np.mean(usage["normalized_entropy_per_class"])),
        "counts": usage["counts"].tolist(),
        "contingency": _contingency(pred, f, n * subclasses),
    }


def _contingency(pred: np.ndarray, fine: np.ndarray, k: int) -> list[list[int]]:
    c = np.zeros((k, int(fine.max()) + 1), dtype=np.int64)
    np.add.at(c, (pred, fine), 1)
    return c.tolist()


def chance_levels(fine: Tensor, subclasses: int = SUBCLASSES) -> dict[str, float]:
    """Floors for the recovery: a predictor that knows the class but guesses the subclass uniformly
    (``class_aware``, the fair floor for a teacher trained on class labels), one that guesses among all
    ``n·s`` ids (``blind``), and the majority fine label per class (``majority``)."""
    f = fine.numpy()
    n_fine = int(f.max()) + 1
    coarse_of_fine = np.arange(n_fine) // subclasses
    k = (n_fine // subclasses) * subclasses
    return {
        "class_aware": chance_subclass_recovery(f, k, coarse_of_fine=coarse_of_fine),
        "blind": chance_subclass_recovery(f, k),
        "majority": chance_subclass_recovery(f, k, coarse_of_fine=coarse_of_fine, method="majority"),
    }


# --------------------------------------------------------------------------------------------------
# reporting


def pct(x: float) -> float:
    return 100.0 * float(x)


def fmt_pm(entry: dict[str, Any] | None, digits: int = 2, scale: float = 1.0) -> str:
    """``mean ± std`` (n shown when > 1): :func:`darkknowledge.report.fmt`."""
    return fmt(entry, digits, scale, show_n="multi")


@dataclasses.dataclass
class Opening:
    """What every MNIST-2x5-based experiment starts from (see :func:`open_mnist_experiment`)."""

    t0: float
    out: Path
    runs: Path
    st: Settings
    splits: Any
    fine: Any
    seeds: list[int]


def open_mnist_experiment(out: str | Path, data_dir: str | None, quick: bool, seeds: int, only: str | None,
                          stages: Sequence[str]) -> Opening:
    """Check ``only`` and ``seeds``, create the results folder, load MNIST-2x5 and the settings."""
    t0 = time.perf_counter()
    if only is not None and only not in stages:
        raise ValueError(f"unknown stage {only!r}; stages: {', '.join(stages)}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    st = mnist_settings(quick)
    splits, fine = mnist_2x5_splits(data_dir, quick)
    out = ensure_dir(out)
    return Opening(t0, out, out / ("runs-quick" if quick else "runs"), st, splits, fine, list(range(seeds)))


def ensure_dir(p: str | Path) -> Path:
    p = Path(p)
    p.mkdir(parents=True, exist_ok=True)
    return p


def write_provenance(out: Path, name: str, quick: bool, seeds: Sequence[int], t0: float,
                     stage_times: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    cmd = f"darkknowledge reproduce {name} --seeds {len(seeds)}" + (" --quick" if quick else "")
    prov = provenance(cmd, time.perf_counter() - t0, list(seeds))
    prov["stage_wall_time_s"] = dict(stage_times)
    # the training time recorded by each run (a rerun reuses cached runs, so its own wall time is small)
    import json

    per_run = {}
    for f in sorted((out / ("runs-quick" if quick else "runs")).glob("*/*.json")):
        if f.name in ("run.json", "curve.json"):
            per_run[f.parent.name] = round(float(json.loads(f.read_text()).get("wall_time_s", 0.0)), 1)
    prov["run_wall_time_s"] = per_run
    prov["run_wall_time_total_s"] = round(sum(per_run.values()), 1)
    prov["quick"] = quick
    prov["torch_threads"] = torch.get_num_threads()
    if extra:
        prov.update(extra)
    atomic_write_json(out / "provenance.json", prov)
    return prov


def plt():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def usage_figure(path: Path, evals: Sequence[tuple[str, dict[str, Any]]], title: str,
                 subclasses: int = SUBCLASSES) -> None:
    """Subclass-usage histogram: the share of test examples whose argmax is each of the ``n·s``
    subclasses, one bar group per model (``evals``: ``(label, subclass_eval result)``)."""
    pyplot = plt()
    k = len(evals[0][1]["counts"])
    width = 0.8 / len(evals)
    fig, ax = pyplot.subplots(figsize=(7, 3.4))
    for i, (label, ev) in enumerate(evals):
        c = np.asarray(ev["counts"], dtype=float)
        ax.bar(np.arange(k) + (i - (len(evals) - 1) / 2) * width, 100 * c / max(c.sum(), 1), width,
               label=f"{label} ({ev['num_used']} used)")
    ax.axhline(100 / k, color="grey", ls=":", lw=1, label="uniform")
    for b in range(subclasses, k, subclasses):
        ax.axvline(b - 0.5, color="k", lw=0.8)
    ax.set_xticks(range(k))
    ax.set_xlabel(f"predicted subclass (blocks of {subclasses} per class)")
    ax.set_ylabel("% of test examples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot.close(fig)
