"""``darkknowledge reproduce hinton-mnist``: Hinton, Vinyals & Dean (2015) §3 and §6 on MNIST.

Eight stages, each a thin set of configs over :func:`~darkknowledge.experiments.runner.run_cached`, so
every run caches its checkpoint and record under ``<out>/runs/<stage>/<name>_seed<k>/`` and a rerun
(or a killed run) picks up where it stopped:

1. ``teacher``        784-1200-1200-10, dropout, max-norm, ±2 px shifts          [teacher_errors]
2. ``baseline``       784-800-800-10 from labels, no regularisation              [baseline_errors]
3. ``distilled``      the same net distilled at T = 20 (+ a small hard term)    [distilled_errors, gap_closed]
4. ``logit_matching`` centred logit regression (the T → ∞ limit)                [logit_matching_errors]
5. ``temperature``    widths 800, 300, 30 × T ∈ {1, …, 20}                       [sweep_<w>_T<T>_errors, best_T_<w>]
6. ``omit3``          no 3s in the transfer set; class-3 bias shift              [omit3_*]
7. ``only78``         only 7s and 8s in the transfer set; 7/8 bias shift         [only78_*]
8. ``regulariser``    1 %, 3 %, 10 % of the data, hard labels vs soft targets    [reg<p>pct_*]

Model selection (epochs, bias shifts, the best temperature) uses the validation split carved from
the 60k training images; the test set is only evaluated for reporting. Rates and accuracies in the
summary are percentages; errors are counts on the 10,000 test images.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import same_config, validate
from ..data import load_dataset
from ..metrics import predict_logits
from ..models import load_model
from ..report import fmt, markdown_table, provenance, write_report, write_summary
from ..utils import atomic_write_json
from . import register_experiment
from .runner import cached_eval, finished_record, run_cached

__all__ = ["run", "STAGES", "PAPER", "T_LIST", "WIDTHS", "FRACTIONS", "Settings", "settings_for",
           "best_bias_shift", "apply_bias_shift", "t_label", "summary_keys"]

STAGES = ("teacher", "baseline", "distilled", "logit_matching", "temperature", "omit3", "only78", "regulariser")
T_LIST = (1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 8.0, 10.0, 20.0)
WIDTHS = (800, 300, 30)
FRACTIONS = (1, 3, 10)  # percent of the training split for stage 8

#: the paper's numbers (Hinton et al. 2015 §3, §6; speech numbers are frame accuracies of Table 5)
PAPER: dict[str, Any] = {
    "teacher_errors": 67, "baseline_errors": 146, "distilled_errors": 74,
    "gap_closed": (146 - 74) / (146 - 67),
    "omit3_errors_before": 206, "omit3_errors_on3_before": 133, "omit3_errors_after": 109,
    "omit3_errors_on3_after": 14, "omit3_bias_shift": 3.5,
    "only78_error_rate_before": 47.3, "only78_error_rate_after": 13.2, "only78_bias_shift": -7.6,
    "reg3pct_hard_test_acc": 44.5, "reg3pct_soft_test_acc": 57.0, "reg3pct_hard_train_acc": 67.3,
    "reg3pct_soft_train_acc": 65.4, "reg_full_test_acc": 58.9, "reg_full_train_acc": 63.4,
}

SHIFT_GRID = torch.round(torch.arange(-150, 151) * 1.0) / 10  # −15.0 … 15.0 in steps of 0.1


def t_label(t: float) -> str:
    """``2.5 → "2.5"``, ``20.0 → "20"`` (the summary-key spelling)."""
    return f"{t:g}"


def summary_keys(widths: Sequence[int] = WIDTHS, temps: Sequence[float] = T_LIST,
                 fractions: Sequence[int] = FRACTIONS) -> list[str]:
    """Every key the issue asks ``summary.json`` to hold."""
    keys = ["teacher_errors", "baseline_errors", "distilled_errors", "gap_closed", "logit_matching_errors"]
    keys += [f"sweep_{w}_T{t_label(t)}_errors" for w in widths for t in temps]
    keys += [f"best_T_{w}" for w in widths]
    keys += ["omit3_errors_before", "omit3_errors_on3_before", "omit3_errors_after", "omit3_errors_on3_after",
             "omit3_bias_shift", "only78_error_rate_before", "only78_error_rate_after"]
    keys += [f"reg{p}pct_{m}_{s}_acc" for p in fractions for m in ("hard", "soft") for s in ("test", "train")]
    return keys


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Schedules of the full run and of ``--quick`` (chosen on the validation split, see the report)."""

    quick: bool
    #: fraction of the 55k training split used by stages 1–7 (``--quick`` uses ~10k images)
    train_fraction: float
    teacher_epochs: int
    teacher_lr: float
    teacher_max_norm: float
    student_epochs: int
    student_lr: float
    sweep_epochs: int
    transfer_epochs: int  # stages 6 and 7
    reg_epochs: dict[int, int] = field(default_factory=dict)  # stage 8, per percentage
    reg_batch_size: int = 64  # stage 8: smaller batches, more steps per epoch on the tiny training sets
    #: linear LR warm-up of every student (at T = 20 the soft term pulls the logits towards the teacher's
    #: large logits; without warm-up two of three distilled students at lr 0.1 diverged in epoch 1)
    student_warmup: float = 1.0
    #: "adam" (β = 0.9, 0.999) or "sgd" (momentum 0.9); both with a cosine schedule
    teacher_optim: str = "adam"
    #: SGD teacher only: Nesterov momentum and a linear warm-up (epochs) before the cosine decay
    teacher_nesterov: bool = False
    teacher_warmup: float = 0.0
    temperature: float = 20.0
    w_soft: float = 1.0
    w_hard: float = 0.1
    batch_size: int = 128
    val_size: int = 5000
    #: torch threads per run: 1 (on a shared 2-core machine two threads per process oversubscribe badly)
    threads: int | None = 1


def settings_for(quick: bool) -> Settings:
    if quick:
        return Settings(quick=True, train_fraction=10_000 / 55_000, teacher_epochs=3, teacher_lr=1e-3,
                        teacher_max_norm=15.0, student_epochs=3, student_lr=0.05, sweep_epochs=1,
                        transfer_epochs=3, reg_epochs={1: 6, 3: 4, 10: 2})
    return Settings(quick=False, train_fraction=1.0, teacher_epochs=200, teacher_lr=0.1, teacher_max_norm=3.5,
                    teacher_optim="sgd", teacher_nesterov=True, teacher_warmup=2.0, student_epochs=30, student_lr=0.05, sweep_epochs=10, transfer_epochs=20,
                    reg_epochs={1: 60, 3: 40, 10: 20})


# --------------------------------------------------------------------------- bias shifts


def apply_bias_shift(logits: torch.Tensor, classes: Sequence[int], shift: float) -> torch.Tensor:
    """Add ``shift`` to the logits (equivalently the output biases) of ``classes``."""
    out = logits.clone().float()
    out[:, list(classes)] += shift
    return out


def best_bias_shift(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[int],
                    grid: torch.Tensor | Sequence[float] = SHIFT_GRID) -> tuple[float, int]:
    """The shift of ``classes``' biases on ``grid`` with the fewest errors on ``(logits, labels)``.

    Ties (a plateau of equally good shifts) are broken by the median of the minimisers, which keeps
    the choice away from the plateau's edges. Returns ``(shift, errors)``.
    """
    grid = torch.as_tensor(grid, dtype=torch.float32)
    errs = torch.tensor([int((apply_bias_shift(logits, classes, float(s)).argmax(1) != labels).sum()) for s in grid])
    best = int(errs.min())
    minimisers = grid[errs == best]
    shift = float(minimisers[(len(minimisers) - 1) // 2])
    return round(shift, 4), best


# --------------------------------------------------------------------------- the experiment context


class MissingRun(LookupError):
    """A stage not selected by ``--only`` has no finished run to report."""


@dataclass
class Ctx:
    out: Path
    data_dir: str | None
    s: Settings
    seeds: list[int]
    progress: bool
    allow_train: bool = True
    log: Callable[[str], None] = print
    _teachers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    def data(self, **over: Any) -> dict[str, Any]:
        d = {"dataset": "mnist", "data_dir": self.data_dir, "val_size": self.s.val_size, "split_seed": 0,
             "fraction": self.s.train_fraction}
        return {**d, **over}

    def run(self, cfg: dict[str, Any], need_weights: bool = False, **kw: Any) -> dict[str, Any]:
        """``run_cached`` when training is allowed; otherwise the finished record or :class:`MissingRun`.

        A run that has to train first materialises its teachers' weights (retraining a teacher whose
        record is committed but whose weights are not); a cached run never touches them."""
        if self.allow_train:
            if self.progress:
                self.log(f"   run {cfg['out_dir']}")
            deps = [self._teachers[t] for t in cfg.get("distill", {}).get("teachers", []) if t in self._teachers]

            def materialise() -> None:
                for d in deps:
                    run_cached(d, progress=self.progress, need_weights=True)

            return run_cached(cfg, progress=self.progress, need_weights=need_weights, before_train=materialise, **kw)
        tc = validate(cfg)
        p = Path(tc.out_dir) / "run.json"
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            raise MissingRun(str(p)) from None
        if not same_config(rec.get("config"), tc) or (need_weights and not (p.parent / "best.safetensors").exists()):
            raise MissingRun(str(p))
        return rec

    # ---- configs

    def teacher_cfg(self, seed: int) -> dict[str, Any]:
        s = self.s
        return {"name": f"teacher_seed{seed}", "seed": seed, "epochs": s.teacher_epochs, "batch_size": s.batch_size,
                "threads": s.threads,
                "model": {"name": "mlp", "args": {"in_features": 784, "hidden": [1200, 1200], "dropout": 0.5,
                                                  "input_dropout": 0.2, "max_norm": s.teacher_max_norm}},
                "data": self.data(augment_shift=2),
                "optim": {"name": s.teacher_optim, "lr": s.teacher_lr, "momentum": 0.9, "schedule": "cosine",
                          "nesterov": s.teacher_nesterov, "warmup_epochs": s.teacher_warmup},
                "out_dir": str(self.runs / "teacher" / f"teacher_seed{seed}")}

    def teacher(self, seed: int) -> str:
        """Train (or reuse) the seed's teacher's record; returns the path of its selected checkpoint (whose
        weights :meth:`run` materialises when a student that distils from it has to train)."""
        cfg = self.teacher_cfg(seed)
        path = str(Path(cfg["out_dir"]) / "best.safetensors")
        self._teachers[path] = cfg
        self.run(cfg)
        return path

    def student_cfg(self, stage: str, name: str, seed: int, width: int = 800, epochs: int | None = None,
                    data: dict[str, Any] | None = None, teacher_seed: int | None = None,
                    temperature: float | None = None, kind: str = "ce", w_soft: float | None = None,
                    w_hard: float | None = None) -> dict[str, Any]:
        s = self.s
        cfg: dict[str, Any] = {
            "name": f"{name}_seed{seed}", "seed": seed, "epochs": epochs or s.student_epochs, "threads": s.threads,
            "batch_size": s.batch_size, "model": {"name": "mlp", "args": {"in_features": 784, "hidden": [width, width]}},
            "data": data or self.data(), "optim": {"name": "sgd", "lr": s.student_lr, "momentum": 0.9,
                                                   "schedule": "cosine", "warmup_epochs": s.student_warmup},
            "out_dir": str(self.runs / stage / f"{name}_seed{seed}")}
        if teacher_seed is not None:
            cfg["distill"] = {"teachers": [self.teacher(teacher_seed)],
                              "temperature": temperature or s.temperature, "kind": kind,
                              "w_soft": s.w_soft if w_soft is None else w_soft,
                              "w_hard": s.w_hard if w_hard is None else w_hard}
        return cfg


def _optim_name(name: str) -> str:
    return {"adam": "Adam (β 0.9, 0.999)", "sgd": "SGD (momentum 0.9)"}.get(name, name)


def _test_errors(rec: dict[str, Any]) -> int:
    return int(rec["final"]["test"]["errors"])


def _val_errors(rec: dict[str, Any]) -> int:
    return int(rec["final"]["val"]["errors"])


def _train_seconds(recs: Sequence[dict[str, Any]]) -> float:
    return float(sum(r.get("wall_time_s", 0.0) for r in recs))


@dataclass
class StageResult:
    values: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- stages


def stage_teacher(c: Ctx) -> StageResult:
    recs = []
    for k in c.seeds:
        c.teacher(k)
        recs.append(c.run(c.teacher_cfg(k)))
    r = StageResult(records=recs)
    r.values["teacher_errors"] = [_test_errors(x) for x in recs]
    r.details["selected_epochs"] = [x["final"]["selected_epoch"] for x in recs]
    r.details["val_errors"] = [_val_errors(x) for x in recs]
    return r


def baseline_cfg(c: Ctx, seed: int) -> dict[str, Any]:
    return c.student_cfg("baseline", "baseline", seed)


def stage_baseline(c: Ctx) -> StageResult:
    recs = [c.run(baseline_cfg(c, k)) for k in c.seeds]
    r = StageResult(records=recs)
    r.values["baseline_errors"] = [_test_errors(x) for x in recs]
    r.details["selected_epochs"] = [x["final"]["selected_epoch"] for x in recs]
    return r


def distilled_cfg(c: Ctx, seed: int) -> dict[str, Any]:
    return c.student_cfg("distilled", "distilled", seed, teacher_seed=seed)


def stage_distilled(c: Ctx) -> StageResult:
    recs = [c.run(distilled_cfg(c, k)) for k in c.seeds]
    r = StageResult(records=recs)
    r.values["distilled_errors"] = [_test_errors(x) for x in recs]
    r.details["selected_epochs"] = [x["final"]["selected_epoch"] for x in recs]
    r.details["agreement"] = [x["final"]["test"].get("agreement") for x in recs]
    # mean change of validation errors over the last 5 epochs (negative: still improving)
    late = [x["epochs"][-1]["val"]["errors"] - x["epochs"][-6]["val"]["errors"] for x in recs if len(x["epochs"]) > 5]
    r.details["late_val_improvement"] = sum(late) / len(late) if late else None
    return r


def logits_cfg(c: Ctx, seed: int) -> dict[str, Any]:
    # w_soft = 1/N: the gradient of ½‖z − v‖² (centred) is N times the T → ∞ limit of the T²-scaled soft term
    return c.student_cfg("logit_matching", "logits", seed, teacher_seed=seed, kind="logits", w_soft=0.1)


def stage_logit_matching(c: Ctx) -> StageResult:
    recs = [c.run(logits_cfg(c, k)) for k in c.seeds]
    r = StageResult(records=recs)
    r.values["logit_matching_errors"] = [_test_errors(x) for x in recs]
    r.details["selected_epochs"] = [x["final"]["selected_epoch"] for x in recs]
    return r


def sweep_cfg(c: Ctx, width: int, t: float) -> dict[str, Any]:
    if width == 800 and t == c.s.temperature and c.s.sweep_epochs == c.s.student_epochs:
        return distilled_cfg(c, 0)  # the same run as stage 3's seed 0: shared, not retrained
    return c.student_cfg("temperature", f"w{width}_T{t_label(t)}", 0, width=width, epochs=c.s.sweep_epochs,
                         teacher_seed=0, temperature=t)


def stage_temperature(c: Ctx) -> StageResult:
    r = StageResult()
    curves: dict[int, dict[str, list[float]]] = {}
    for w in WIDTHS:
        test, val = [], []
        for t in T_LIST:
            rec = c.run(sweep_cfg(c, w, t))
            r.records.append(rec)
            r.values[f"sweep_{w}_T{t_label(t)}_errors"] = [_test_errors(rec)]
            test.append(_test_errors(rec))
            val.append(_val_errors(rec))
        # best T chosen on validation errors (ties: the lower T)
        best = min(range(len(T_LIST)), key=lambda i: (val[i], T_LIST[i]))
        r.values[f"best_T_{w}"] = [T_LIST[best]]
        curves[w] = {"test": test, "val": val, "best_T_test": T_LIST[min(range(len(T_LIST)), key=lambda i: test[i])]}
    r.details["curves"] = {str(w): v for w, v in curves.items()}
    _figure_temperature(c.out / "temperature.png", curves)
    return r


def _bias_shift_eval(path: str, data_dir: str | None, val_size: int, classes: Sequence[int]) -> dict[str, Any]:
    splits = load_dataset("mnist", data_dir, val_size, 0)
    model = load_model(path)
    lv, lt = predict_logits(model, splits.val.x), predict_logits(model, splits.test.x)
    shift, val_err = best_bias_shift(lv, splits.val.y, classes)
    test_shift, test_err = best_bias_shift(lt, splits.test.y, classes)
    return {"val_logits": lv, "test_logits": lt, "val_y": splits.val.y, "test_y": splits.test.y, "shift": shift,
            "val_errors_after": val_err, "val_errors_before": int((lv.argmax(1) != splits.val.y).sum()),
            "test_tuned_shift": test_shift, "test_tuned_errors": test_err}


def omit3_cfg(c: Ctx) -> dict[str, Any]:
    return c.student_cfg("omit3", "omit3", 0, epochs=c.s.transfer_epochs, data=c.data(exclude_classes=[3]),
                         teacher_seed=0)


def only78_cfg(c: Ctx) -> dict[str, Any]:
    return c.student_cfg("only78", "only78", 0, epochs=c.s.transfer_epochs, data=c.data(include_classes=[7, 8]),
                         teacher_seed=0)


def stage_omit3(c: Ctx) -> StageResult:
    cfg = omit3_cfg(c)
    rec = c.run(cfg)

    def compute() -> dict[str, Any]:
        c.run(cfg, need_weights=True)
        e = _bias_shift_eval(str(Path(cfg["out_dir"]) / "best.safetensors"), c.data_dir, c.s.val_size, [3])
        y = e["test_y"]
        is3 = y == 3

        def errs(logits: torch.Tensor) -> tuple[int, int]:
            wrong = logits.argmax(1) != y
            return int(wrong.sum()), int(wrong[is3].sum())

        before = errs(e["test_logits"])
        after = errs(apply_bias_shift(e["test_logits"], [3], e["shift"]))
        tuned = errs(apply_bias_shift(e["test_logits"], [3], e["test_tuned_shift"]))
        return {"values": {"omit3_errors_before": [before[0]], "omit3_errors_on3_before": [before[1]],
                           "omit3_errors_after": [after[0]], "omit3_errors_on3_after": [after[1]],
                           "omit3_bias_shift": [e["shift"]]},
                "details": {"n_test_3s": int(is3.sum()), "val_errors_before": e["val_errors_before"],
                            "val_errors_after": e["val_errors_after"], "n_val_3s": int((e["val_y"] == 3).sum()),
                            "test_tuned_shift": e["test_tuned_shift"], "test_tuned_errors": tuned[0],
                            "test_tuned_errors_on3": tuned[1]}}

    ev = cached_eval(cfg["out_dir"], "omit3_bias_shift", compute)
    rec = finished_record(cfg) or rec  # compute() may have retrained the run
    r = StageResult(records=[rec])
    r.values.update(ev["values"])
    r.details = {**ev["details"], "transfer_set_size": rec["dataset"]["train"],
                 "selected_epoch": rec["final"]["selected_epoch"]}
    return r


def stage_only78(c: Ctx) -> StageResult:
    cfg = only78_cfg(c)
    rec = c.run(cfg)

    def compute() -> dict[str, Any]:
        c.run(cfg, need_weights=True)
        e = _bias_shift_eval(str(Path(cfg["out_dir"]) / "best.safetensors"), c.data_dir, c.s.val_size, [7, 8])
        y, n = e["test_y"], len(e["test_y"])

        def rate(logits: torch.Tensor) -> float:
            return 100.0 * int((logits.argmax(1) != y).sum()) / n

        return {"values": {"only78_error_rate_before": [rate(e["test_logits"])],
                           "only78_error_rate_after": [rate(apply_bias_shift(e["test_logits"], [7, 8], e["shift"]))]},
                "details": {"shift": e["shift"], "test_tuned_shift": e["test_tuned_shift"],
                            "test_tuned_error_rate": 100.0 * e["test_tuned_errors"] / n,
                            "val_error_rate_before": 100.0 * e["val_errors_before"] / len(e["val_y"]),
                            "val_error_rate_after": 100.0 * e["val_errors_after"] / len(e["val_y"])}}

    ev = cached_eval(cfg["out_dir"], "only78_bias_shift", compute)
    rec = finished_record(cfg) or rec  # compute() may have retrained the run
    r = StageResult(records=[rec])
    r.values.update(ev["values"])
    r.details = {**ev["details"], "transfer_set_size": rec["dataset"]["train"],
                 "selected_epoch": rec["final"]["selected_epoch"]}
    return r


def reg_cfg(c: Ctx, pct: int, mode: str) -> dict[str, Any]:
    data = c.data(fraction=pct / 100)
    cfg = c.student_cfg("regulariser", f"{mode}{pct}pct", 0, epochs=c.s.reg_epochs[pct], data=data,
                        teacher_seed=0 if mode == "soft" else None)
    return {**cfg, "batch_size": c.s.reg_batch_size}


def stage_regulariser(c: Ctx) -> StageResult:
    r = StageResult()
    curves: dict[int, dict[str, Any]] = {}
    for p in FRACTIONS:
        curves[p] = {}
        for mode in ("hard", "soft"):
            rec = c.run(reg_cfg(c, p, mode), track_train=True, track_test=True)
            r.records.append(rec)
            ep = rec["epochs"]
            sel = rec["final"]["selected_epoch"]
            train_acc = [100 * e["train"]["accuracy"] for e in ep]
            test_acc = [100 * e["test"]["accuracy"] for e in ep]
            r.values[f"reg{p}pct_{mode}_test_acc"] = [100 * rec["final"]["test"]["accuracy"]]
            r.values[f"reg{p}pct_{mode}_train_acc"] = [train_acc[sel - 1]]
            curves[p][mode] = {"train": train_acc, "test": test_acc, "val": [100 * e["val"]["accuracy"] for e in ep],
                               "test_nll": [e["test"]["nll"] for e in ep], "selected_epoch": sel,
                               "n_train": rec["dataset"]["train"], "final_test": test_acc[-1],
                               "final_train": train_acc[-1], "best_test": max(test_acc),
                               "final_test_nll": ep[-1]["test"]["nll"], "selected_test_nll": ep[sel - 1]["test"]["nll"]}
    r.details["curves"] = {str(p): v for p, v in curves.items()}
    _figure_regulariser(c.out / "regulariser.png", curves)
    return r


STAGE_FUNCS: dict[str, Callable[[Ctx], StageResult]] = {
    "teacher": stage_teacher, "baseline": stage_baseline, "distilled": stage_distilled,
    "logit_matching": stage_logit_matching, "temperature": stage_temperature, "omit3": stage_omit3,
    "only78": stage_only78, "regulariser": stage_regulariser,
}


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure_temperature(path: Path, curves: dict[int, dict[str, Any]]) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6))
    for ax, (w, cv) in zip(axes, curves.items()):
        ax.plot(T_LIST, cv["test"], "o-", label="test errors (of 10,000)")
        ax.plot(T_LIST, [v * 2 for v in cv["val"]], "s--", alpha=0.6, label="val errors × 2 (of 5,000)")
        ax.set_xscale("log")
        ax.set_xticks(T_LIST)
        ax.set_xticklabels([t_label(t) for t in T_LIST], fontsize=7)
        ax.set_xlabel("temperature T")
        ax.set_title(f"student 784-{w}-{w}-10")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("errors")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _figure_regulariser(path: Path, curves: dict[int, dict[str, Any]]) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.4 * len(curves), 3.6))
    for ax, (p, cv) in zip(axes, curves.items()):
        for mode, color in (("hard", "tab:red"), ("soft", "tab:blue")):
            x = range(1, len(cv[mode]["train"]) + 1)
            ax.plot(x, cv[mode]["train"], "--", color=color, label=f"{mode}: train")
            ax.plot(x, cv[mode]["test"], "-", color=color, label=f"{mode}: test")
            ax.axvline(cv[mode]["selected_epoch"], color=color, lw=0.8, ls=":")
        ax.set_title(f"{p}% of the training set ({cv['hard']['n_train']} images)")
        ax.set_xlabel("epoch")
        lo = min(min(cv[m]["test"]) for m in ("hard", "soft"))
        ax.set_ylim(max(lo - 1, 0), 100.2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy %")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- report


def _fmt_paper(v: Any, digits: int = 0, suffix: str = "") -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}{suffix}" if isinstance(v, float) else f"{v}{suffix}"


def _short(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _mins(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


def build_report(out: Path, summary: dict[str, Any], details: dict[str, Any], c: Ctx, times: dict[str, Any],
                 prov: dict[str, Any]) -> str:
    s = c.s
    S = summary.get  # noqa: N806
    lines: list[str] = []
    add = lines.append
    mode = "quick (subset)" if s.quick else "full"
    add("# Hinton, Vinyals & Dean (2015) §3 and §6 on MNIST — reproduction report\n")
    add(f"Command: `{prov['command']}` ({mode} mode). Seeds {c.seeds} for the headline rows (teacher, baseline, "
        "distilled, logit matching); one seed (0) for the temperature sweep and stages 6–8, whose students distil "
        f"from the seed-0 teacher. Commit `{prov['git_commit']}`; machine: {prov['machine'].get('cpu')} "
        f"({prov['machine'].get('cpu_count')} cores, shared with other jobs), torch "
        f"{prov['machine'].get('packages', {}).get('torch')}, one torch thread per run. Summed training time of "
        f"all runs: {_mins(sum(times['train'].values()))}, of which the single-seed suite (every seed-0 run) "
        f"{_mins(times.get('single_seed', 0.0))} (stage by stage below; runs of one thread each, several of them "
        "in parallel processes, so the wall clock was shorter).\n")
    add("**Protocol.** MNIST 60,000 training images split into 55,000 for training (the transfer set) and a "
        f"{s.val_size:,}-image validation split (fixed seed); errors are counts on the 10,000 test images. "
        "Everything that is *selected* — the reported epoch of every run (best validation accuracy), the "
        "bias shifts of stages 6–7 and the best temperature of stage 5 — is chosen on the validation split; "
        "the test set is evaluated only for reporting (and for the per-epoch curves of stage 8). "
        "Values are mean ± sample std (n = number of seeds). Every number below comes from this run "
        "(`summary.json`, run records in `runs/<stage>/<run>/run.json`); the paper column quotes the paper.\n")
    if s.quick:
        add(f"**Quick mode:** stages 1–7 use {s.train_fraction:.1%} of the training split and a few epochs; the "
            "numbers only check the pipeline and are not comparable with the paper.\n")

    # settings
    add("## Settings\n")
    rows = [
        ["teacher", "784-1200-1200-10 ReLU, dropout 0.5 (hidden) / 0.2 (input), max-norm "
         f"{s.teacher_max_norm} per unit, shifts ≤ ±2 px", f"{_optim_name(s.teacher_optim)} lr {s.teacher_lr:g}, cosine, "
         f"batch {s.batch_size}", s.teacher_epochs],
        ["baseline", "784-800-800-10 ReLU, no dropout / weight decay / shifts", f"SGD lr {s.student_lr}, momentum 0.9, "
         f"{s.student_warmup:g}-epoch linear warm-up then cosine, batch {s.batch_size}", s.student_epochs],
        ["distilled", f"same net; transfer set = unshifted training images; T = {t_label(s.temperature)}, loss "
         f"{s.w_soft}·T²·CE(p_T, q_T) + {s.w_hard}·CE(y, q_1)", "as baseline", s.student_epochs],
        ["logit matching", f"same net; {0.1}·½‖z − z̄ − (v − v̄)‖² (centred logits; = the T → ∞ limit of the "
         f"T²-scaled soft term) + {s.w_hard}·CE(y, q_1)", "as baseline", s.student_epochs],
        ["temperature sweep", f"widths {', '.join(map(str, WIDTHS))}; T ∈ {{{', '.join(map(t_label, T_LIST))}}}; "
         f"loss as distilled (hard weight {s.w_hard})", "as baseline", s.sweep_epochs],
        ["omitted 3 / only 7 & 8", "800-800 student distilled at T = 20 from the seed-0 teacher on the restricted "
         "transfer set; bias shift grid −15…15 step 0.1 on validation (ties: median)", "as baseline",
         s.transfer_epochs],
        ["regulariser", "800-800 on 1 / 3 / 10 % of the training split: hard labels only, or soft targets of the "
         f"full-data seed-0 teacher (T = {t_label(s.temperature)}, same loss as distilled, hard weight {s.w_hard})",
         f"as baseline, batch {s.reg_batch_size}", ", ".join(f"{p}%: {e}" for p, e in s.reg_epochs.items())],
    ]
    add(markdown_table(["model", "architecture / objective", "optimiser", "epochs"], rows) + "\n")
    t_recs = [finished_record(c.teacher_cfg(k)) for k in c.seeds]
    t_recs = [r for r in t_recs if r]
    t_train = times.get("train", {}).get("teacher")
    teacher_time = f" (~{t_train / 60 / len(t_recs):.0f} min each here)" if t_train and t_recs else ""
    vals = sorted(_val_errors(r) for r in t_recs)
    span = "" if not vals else f"{vals[0]}" + (f"–{vals[-1]}" if vals[-1] != vals[0] else "")
    teacher_val = ("" if not vals else f": these runs select teachers with {span} validation errors"
                   + (", fewer than SGD's" if vals[-1] < 73 else ""))
    speeds = [e["samples_per_s"] for r in t_recs for e in r["epochs"] if e.get("samples_per_s")]
    teacher_speed = (f" trains at ~{sorted(speeds)[len(speeds) // 2] / 1000:.1f}k images/s on one core here (median "
                     "over epochs)" if speeds else "")
    add("**Why these settings.** The paper gives no learning rates, epochs, dropout rates, max-norm value or "
        "hard-label weight for MNIST. The budget (the whole single-seed suite in < 2 h on 2 CPU cores) fixes "
        f"the epoch counts: the 1200-1200 teacher with dropout and shifts{teacher_speed}, "
        f"so it gets {s.teacher_epochs} epochs{teacher_time} and the headline students {s.student_epochs}. "
        "The teacher's optimiser was chosen on **validation** errors (5,000 held-out training images): "
        "an earlier full run with SGD (lr 0.1, momentum 0.9, max-norm 3.5, 30 epochs) selected teachers with "
        "73–77 validation errors (its run records are in commit dea71fb, `results/hinton-mnist/runs/teacher/`), "
        "and the recipe used here (Adam lr 1e-3, cosine, max-norm 15, as in `darkknowledge demo`) replaced it"
        f"{teacher_val}. Dropout 0.5 / 0.2 (input) follow Hinton et al. "
        "(2012). All students share one SGD recipe. A first attempt at lr 0.1 without warm-up diverged for two "
        "of three T = 20 students in their first epoch (training loss exploded, validation accuracy 10%): at "
        "T = 20 the T²-scaled soft term behaves like regression onto the teacher's large logits, whose "
        "gradients are not bounded as cross-entropy's are. We therefore use lr "
        f"{s.student_lr} with a {s.student_warmup:g}-epoch warm-up for every student (baseline included, so the "
        "recipe is identical). The soft/hard weights (1 and 0.1, \"a considerably lower weight on the second "
        "objective\") were not tuned. The temperature sweep uses fewer epochs than the headline students to fit "
        "the budget, so its 2×800, T = 20 cell is a separate run from stage 3. No setting was chosen on the test "
        "set. One torch thread per run, so that two runs can share the two cores.\n")

    def row(label: str, key: str, paper: Any, digits: int = 1, pdigits: int = 0, psuffix: str = "") -> list[str]:
        return [label, _fmt_paper(paper, pdigits, psuffix), fmt(S(key), digits)]

    hdr = ["metric", "paper", "ours (mean ± std (n))"]

    # 1–4 headline table
    add("## Stages 1–4: teacher, baseline, distilled, logit matching\n")
    add(markdown_table(hdr, [
        row("1. teacher test errors (1200-1200, dropout, shifts)", "teacher_errors", PAPER["teacher_errors"]),
        row("2. baseline test errors (800-800, labels)", "baseline_errors", PAPER["baseline_errors"]),
        row("3. distilled test errors (800-800, T = 20)", "distilled_errors", PAPER["distilled_errors"]),
        row("3. gap closed (baseline − distilled)/(baseline − teacher)", "gap_closed", PAPER["gap_closed"], 3, 3),
        row("4. logit matching test errors (800-800)", "logit_matching_errors", None),
    ]) + "\n")
    b, d = S("baseline_errors"), S("distilled_errors")
    if b and d:
        diff = b["mean"] - d["mean"]
        sd = math.sqrt(b["std"] ** 2 + d["std"] ** 2)
        # seeds are paired (distilled seed k uses teacher seed k), but the baseline does not use a teacher
        verdict = (f"The distilled student makes {abs(diff):.1f} {'fewer' if diff >= 0 else 'MORE'} test errors "
                   f"than the label-trained one "
                   f"(baseline {b['mean']:.1f} ± {b['std']:.1f}, distilled {d['mean']:.1f} ± {d['std']:.1f}; "
                   f"combined std {sd:.1f}")
        if sd > 0:
            k = diff / sd
            big = max(b["std"], d["std"], 1e-9)
            verdict += (f", i.e. {k:.1f} combined standard deviations; the larger of the two stds is "
                        f"{big:.1f}, so the difference is {diff / big:.1f}× it).")
        else:
            verdict += ")."
        big = max(b["std"], d["std"])
        if len(c.seeds) > 1:
            met = diff > 3 * big
            verdict += (f" **Criterion \"distilled beats baseline by more than 3 standard deviations over seeds\" "
                        f"(difference > 3 × the larger std = {3 * big:.1f}): {'met' if met else 'NOT met'}.**")
        add(verdict + "\n")
    lm = S("logit_matching_errors")
    if lm and d:
        add(f"Logit matching (Caruana et al.; the paper reports no MNIST number for it) gives {lm['mean']:.1f} test "
            f"errors vs {d['mean']:.1f} for T = 20 distillation.\n")

    # 5
    add("## Stage 5: temperature vs student size\n")
    add("Test errors (of 10,000) of one seed per cell; the best T is chosen on **validation** errors.\n")
    hdr5 = ["width"] + [f"T={t_label(t)}" for t in T_LIST] + ["best T (val)", "best T (test, for reference)"]
    rows5 = []
    curves = details.get("temperature", {}).get("curves", {})
    for w in WIDTHS:
        cells = [_short(S(f"sweep_{w}_T{t_label(t)}_errors", {}).get("mean"), 0) for t in T_LIST]
        bt = S(f"best_T_{w}")
        rows5.append([f"2×{w}"] + cells + [t_label(bt["mean"]) if bt else "–",
                                           t_label(curves[str(w)]["best_T_test"]) if str(w) in curves else "–"])
    add(markdown_table(hdr5, rows5) + "\n")
    add(markdown_table(["claim", "paper", "ours"], [
        ["≥ 300 units: every T > 8 similar", "yes", _flat_above8(S)],
        ["30 units: best T", "2.5–4", _best_t_text(S, 30, curves)],
        ["300 units: best T", "any T > 8 (similar)", _best_t_text(S, 300, curves)],
        ["800 units: best T", "any T > 8 (similar)", _best_t_text(S, 800, curves)],
    ]) + "\n")
    if (out / "temperature.png").exists():
        add("![test errors against T per width](temperature.png)\n")

    # 6
    add("## Stage 6: class 3 omitted from the transfer set\n")
    o = details.get("omit3", {})
    n3 = o.get("n_test_3s", 1010)
    add(markdown_table(["metric", "paper", "ours"], [
        ["test errors, no correction", 206, fmt(S("omit3_errors_before"), 0)],
        [f"errors on the {n3:,} test 3s, no correction", 133, fmt(S("omit3_errors_on3_before"), 0)],
        ["class-3 bias shift (chosen on validation)", "–", fmt(S("omit3_bias_shift"), 1)],
        ["test errors after the validation-chosen shift", "–", fmt(S("omit3_errors_after"), 0)],
        ["errors on test 3s after the validation-chosen shift", "–", fmt(S("omit3_errors_on3_after"), 0)],
        ["class-3 bias shift (tuned on test, as the paper did)", "+3.5", _short(o.get("test_tuned_shift"), 1)],
        ["test errors after the test-tuned shift (tuned on test, as the paper did)", 109,
         o.get("test_tuned_errors", "–")],
        ["errors on test 3s after the test-tuned shift (tuned on test, as the paper did)", 14,
         o.get("test_tuned_errors_on3", "–")],
    ]) + "\n")
    if o:
        add(f"Transfer set: {o['transfer_set_size']:,} images, none a 3. The validation split still holds "
            f"{o['n_val_3s']} 3s (only the transfer set omits them): the shift that minimises validation errors "
            f"took them from {o['val_errors_before']} to {o['val_errors_after']} (of {s.val_size:,}). The paper's "
            "+3.5 and 109/14 were tuned on the test set; our main row uses the validation shift.\n")

    # 7
    add("## Stage 7: only 7s and 8s in the transfer set\n")
    q = details.get("only78", {})
    add(markdown_table(["metric", "paper", "ours"], [
        ["test error rate %, no correction", "47.3", fmt(S("only78_error_rate_before"), 2)],
        ["7 and 8 bias shift (chosen on validation)", "–", _short(q.get("shift"), 1)],
        ["test error rate % after the validation-chosen shift", "–", fmt(S("only78_error_rate_after"), 2)],
        ["7 and 8 bias shift (tuned on test, as the paper did)", "−7.6", _short(q.get("test_tuned_shift"), 1)],
        ["test error rate % after the test-tuned shift (tuned on test, as the paper did)", "13.2",
         _short(q.get("test_tuned_error_rate"), 2)],
    ]) + "\n")
    if q:
        add(f"Transfer set: {q['transfer_set_size']:,} images (7s and 8s only). Validation error rate "
            f"{q['val_error_rate_before']:.2f}% → {q['val_error_rate_after']:.2f}% with the chosen shift.\n")

    # 8
    add("## Stage 8: soft targets as a regulariser (analogue of the paper's 3% speech experiment)\n")
    add("The paper's numbers are **speech frame accuracies** (Table 5: 3% of 2,000 h; full-data baseline 58.9% "
        "test / 63.4% train); ours are MNIST digit accuracies, so only the *pattern* is comparable: with little "
        "data the hard-label model overfits and needs early stopping, the soft-target model converges. Reported "
        "accuracies are at the epoch selected on validation; the final-epoch values show overfitting.\n")
    rc = details.get("regulariser", {}).get("curves", {})
    rows8 = []
    for p in FRACTIONS:
        for mode in ("hard", "soft"):
            cv = rc.get(str(p), {}).get(mode, {})
            pp = "3" if p == 3 else None
            rows8.append([f"{p}% ({cv.get('n_train', '–')} images)", "hard labels" if mode == "hard" else "soft targets",
                          f"{PAPER[f'reg3pct_{mode}_train_acc']}%" if pp else "–",
                          fmt(S(f"reg{p}pct_{mode}_train_acc"), 2),
                          f"{PAPER[f'reg3pct_{mode}_test_acc']}%" if pp else "–",
                          fmt(S(f"reg{p}pct_{mode}_test_acc"), 2),
                          cv.get("selected_epoch", "–"), _short(cv.get("final_train"), 2), _short(cv.get("final_test"), 2),
                          _short(cv.get("selected_test_nll"), 3), _short(cv.get("final_test_nll"), 3)])
    add(markdown_table(["training set", "targets", "paper train acc", "ours train acc % (selected epoch)",
                        "paper test acc", "ours test acc % (selected epoch)", "selected epoch", "final-epoch train %",
                        "final-epoch test %", "test NLL (selected)", "test NLL (final)"], rows8) + "\n")
    if rc:
        add(_regulariser_text(rc) + "\n")
    if (out / "regulariser.png").exists():
        add("![train/test accuracy per epoch, hard vs soft](regulariser.png)\n")

    # wall times
    add("## Wall time per stage\n")
    add("Training time is the sum of the stage's run records (it survives a resume; the teacher's runs count "
        "under stage 1 and shared runs once, under the first stage that uses them); *this invocation* is the time spent in "
        "the stage by the command that wrote this report (≈ 0 for cached stages).\n")
    add(markdown_table(["stage", "training time (run records)", "this invocation"],
                       [[st, _mins(times["train"].get(st, 0.0)), _mins(times["invocation"].get(st, 0.0))]
                        for st in STAGES if st in times["train"]]
                       + [["total", _mins(sum(times["train"].values())), _mins(sum(times["invocation"].values()))]])
        + "\n")

    # shortfalls
    add("## Where we fall short of the paper, and why\n")
    add("\n".join(f"- {t}" for t in _shortfalls(summary, details, s)) + "\n")
    return "\n".join(lines)


def _flat_above8(S: Callable[..., Any]) -> str:  # noqa: N803
    parts = []
    for w in (800, 300):
        vals = [S(f"sweep_{w}_T{t_label(t)}_errors", {}).get("mean") for t in T_LIST if t > 8]
        if all(v is not None for v in vals):
            parts.append(f"2×{w}: {min(vals):.0f}–{max(vals):.0f} errors for T ∈ {{10, 20}}")
    return "; ".join(parts) or "–"


def _best_t_text(S: Callable[..., Any], w: int, curves: dict[str, Any]) -> str:  # noqa: N803
    bt = S(f"best_T_{w}")
    if not bt:
        return "–"
    vals = [S(f"sweep_{w}_T{t_label(t)}_errors", {}).get("mean") for t in T_LIST]
    best_test = curves.get(str(w), {}).get("best_T_test")
    txt = f"T = {t_label(bt['mean'])} on validation"
    if best_test is not None:
        txt += f" (test minimum at T = {t_label(best_test)}, {min(v for v in vals if v is not None):.0f} errors)"
    return txt


def _regulariser_text(rc: dict[str, Any]) -> str:
    out = []
    for p, cv in rc.items():
        h, so = cv["hard"], cv["soft"]
        drop_h = h["best_test"] - h["final_test"]
        out.append(f"{p}%: hard labels peak at {h['best_test']:.2f}% test accuracy and end at {h['final_test']:.2f}% "
                   f"(train {h['final_train']:.2f}%; test NLL {h['selected_test_nll']:.3f} at the selected epoch → "
                   f"{h['final_test_nll']:.3f} at the end); soft targets end at {so['final_test']:.2f}% "
                   f"(peak {so['best_test']:.2f}%, test NLL {so['final_test_nll']:.3f}). "
                   + ("The hard-label model's test accuracy falls after its peak: it overfits and needs early "
                      "stopping. " if drop_h > 0.3 else
                      "The hard-label model's test accuracy does not fall much after its peak (cosine decay and "
                      "MNIST's easy classes), but its test NLL shows the overfitting. " if
                      h["final_test_nll"] > h["selected_test_nll"] * 1.05 else "")
                   + ("The soft-target model converges without needing early stopping."
                      if so["best_test"] - so["final_test"] <= 0.3 else
                      "The soft-target model also loses some accuracy late in training."))
    return "\n\n".join(out)


def _shortfalls(summary: dict[str, Any], details: dict[str, Any], s: Settings) -> list[str]:
    S = summary.get  # noqa: N806
    out = []
    if s.quick:
        out.append("Quick mode: a subset and a few epochs; no comparison with the paper is meaningful.")

    def short(key: str) -> tuple[float, float] | None:
        e = S(key)
        if not e or PAPER.get(key) is None:
            return None
        return e["mean"], PAPER[key]

    t = short("teacher_errors")
    if t and t[0] > t[1]:
        out.append(f"Teacher: {t[0]:.1f} test errors vs the paper's {t[1]} ({t[0] - t[1]:+.1f}). Our teacher trains "
                   f"for {s.teacher_epochs} epochs (about {s.teacher_epochs * 55:,}k examples) with a cosine schedule "
                   "to fit the CPU budget; dropout nets of this kind (Hinton et al. 2012, Srivastava et al. 2014) "
                   "reach ~0.7% only after hundreds to thousands of epochs with tuned momentum/learning-rate "
                   "schedules. The teacher's accuracy bounds every distilled result below.")
    bl = short("baseline_errors")
    if bl and bl[0] > bl[1]:
        out.append(f"Baseline: {bl[0]:.1f} vs {bl[1]} ({bl[0] - bl[1]:+.1f}); an unregularised 800-800 net's error "
                   "depends on the optimiser and the stopping rule, neither of which the paper states.")
    elif bl and bl[0] < bl[1]:
        out.append(f"Baseline: {bl[0]:.1f} vs {bl[1]} — our label-trained net is *better* than the paper's "
                   "(epoch selection on validation, momentum SGD with cosine decay), which leaves less room for "
                   "distillation to close.")
    dd = short("distilled_errors")
    d = S("distilled_errors")
    if dd and dd[0] > dd[1]:
        te = S("teacher_errors")
        out.append(f"Distilled: {dd[0]:.1f} vs {dd[1]} ({dd[0] - dd[1]:+.1f}). The student can only be as good as its "
                   f"teacher ({te['mean']:.1f} errors here vs 67 in the paper) and trains for "
                   f"{s.student_epochs} epochs; the gap closed "
                   f"({S('gap_closed')['mean']:.2f} vs the paper's {PAPER['gap_closed']:.2f}) is the fairer "
                   "comparison." if te and S("gap_closed") else "")
    g = short("gap_closed")
    b, te = S("baseline_errors"), S("teacher_errors")
    if g and g[0] < g[1] and b and te and d:
        big = max(b["std"], d["std"])
        margin = b["mean"] - d["mean"]
        met = margin > 0 and margin > 3 * big
        text = (f"Gap closed: {g[0]:.2f} vs {g[1]:.2f}. The distilled − baseline difference ({margin:.1f} errors) "
                + ("cannot be judged against seed-to-seed noise with one seed." if b["n"] < 2 or d["n"] < 2 else
                   f"clears 3 standard deviations ({3 * big:.1f}), so the 3σ criterion holds, but the student "
                   f"recovers less of the teacher's {b['mean'] - te['mean']:.1f}-error advantage than the paper's "
                   "student did of its 79." if met else
                   f"is below 3 standard deviations ({3 * big:.1f}): the issue's 3σ criterion is not met. With our "
                   f"teacher only {b['mean'] - te['mean']:.1f} errors better than the baseline (the paper's: 79), "
                   "the headroom distillation can transfer is small against seed-to-seed noise of this size."))
        late = details.get("distilled", {}).get("late_val_improvement")
        if late is not None:
            text += (f" Over the last 5 of {s.student_epochs} epochs the distilled students' validation errors "
                     f"changed by {late:+.1f} on average, so " + ("longer student training would still help."
                                                                if late < -1 else "they had converged: more "
                                                                "student epochs would not close the gap."))
        out.append(text)
    o_after, o3 = S("omit3_errors_after"), S("omit3_errors_on3_after")
    o = details.get("omit3", {})
    if o_after and o3 and (o_after["mean"] > 109 or o3["mean"] > 14):
        out.append(f"Omitted 3: {o_after['mean']:.0f} errors ({o3['mean']:.0f} on the 3s) after the "
                   f"validation-chosen shift of {S('omit3_bias_shift')['mean']:+.1f} vs the paper's 109 (14) after "
                   f"+3.5 tuned on the test set; our own test-tuned shift ({_short(o.get('test_tuned_shift'), 1)}) "
                   f"gives {o.get('test_tuned_errors', '–')} ({o.get('test_tuned_errors_on3', '–')} on the 3s). "
                   "The student only learns about 3s from the teacher's soft targets on other digits, so how much a "
                   "bias shift recovers depends on the teacher (weaker here, see stage 1); and a shift chosen on the "
                   "5,000 validation images cannot fit the test set as the paper's test-tuned shift did.")
    q_after = S("only78_error_rate_after")
    q = details.get("only78", {})
    if q_after and q_after["mean"] > 13.2:
        out.append(f"Only 7s and 8s: {q_after['mean']:.2f}% test errors after the validation-chosen shift "
                   f"({_short(q.get('shift'), 1)}) vs the paper's 13.2% after −7.6 tuned on test (our test-tuned "
                   f"shift {_short(q.get('test_tuned_shift'), 1)} gives {_short(q.get('test_tuned_error_rate'), 2)}%). "
                   "Everything the student knows about the other eight digits comes from the teacher's soft targets "
                   "on 7s and 8s, i.e. from the small probabilities our shorter-trained teacher assigns to them; "
                   "one shared shift of two biases is a crude correction.")
    bt30 = S("best_T_30")
    if bt30 and not 2.5 <= bt30["mean"] <= 4:
        out.append(f"Temperature: for the 2×30 student the validation-best T is {t_label(bt30['mean'])}, not in the "
                   "paper's 2.5–4 band. One seed per cell: differences of a few tens of errors between "
                   "neighbouring T are within seed noise for such a small net, so the sweep only resolves coarse "
                   "trends.")
    for w in (800, 300):
        hi = [S(f"sweep_{w}_T{t_label(t)}_errors", {}).get("mean") for t in T_LIST if t > 8]
        if all(v is not None for v in hi) and hi and max(hi) - min(hi) > 0.1 * min(hi):
            out.append(f"Temperature: for 2×{w} the T > 8 points differ by {max(hi) - min(hi):.0f} errors "
                       f"({min(hi):.0f}–{max(hi):.0f}), more than 'fairly similar'.")
    rc = details.get("regulariser", {}).get("curves", {}).get("3", {})
    if rc:
        h, so = rc["hard"], rc["soft"]
        if h["best_test"] - h["final_test"] <= 0.3:
            out.append(f"Regulariser: on 3% of MNIST the hard-label model does not collapse after its peak as the "
                       f"paper's speech model did (peak {h['best_test']:.2f}%, final {h['final_test']:.2f}% test "
                       "accuracy): MNIST digits are far easier than 14,000-way frame classification and the cosine "
                       "schedule anneals the step size, so its overfitting shows as the train–test gap and the test "
                       f"NLL ({h['selected_test_nll']:.3f} at the selected epoch, {h['final_test_nll']:.3f} at the "
                       "end) rather than as an accuracy drop.")
        if so["final_test"] <= h["best_test"]:
            out.append(f"Regulariser: on 3% the soft-target model ({so['final_test']:.2f}% final test accuracy) "
                       f"does not beat the early-stopped hard-label one ({h['best_test']:.2f}% peak).")
    if not out:
        out.append("None: every stage matches or beats the paper's number.")
    out.append("Stage 8 compares MNIST digit accuracy with the paper's speech frame accuracy; only the pattern "
               "(hard labels overfit, soft targets do not) is comparable, not the numbers.")
    return [x for x in out if x]


# --------------------------------------------------------------------------- the experiment


def _stage_train_times(results: dict[str, StageResult]) -> dict[str, float]:
    seen: set[str] = set()
    times = {}
    for st in STAGES:
        if st not in results:
            continue
        recs = results[st].records
        if st != "teacher":  # teachers count under stage 1
            recs = [r for r in recs if not r["name"].startswith("teacher")]
        uniq = [r for r in recs if r["config"]["out_dir"] not in seen]
        seen.update(r["config"]["out_dir"] for r in uniq)
        times[st] = _train_seconds(uniq)
    return times


@register_experiment("hinton-mnist")
def run(out: str | Path = "results/hinton-mnist", data_dir: str | None = None, quick: bool = False,
        seeds: int | None = None, only: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the suite; write ``summary.json``, ``provenance.json``, figures and ``report.md``.

    ``seeds``: seeds of the headline rows (default 3; 1 with ``quick``). ``only``: run just this stage
    (the teacher trains implicitly when needed); the summary and report still include every other
    stage whose runs are already finished.
    """
    t0 = time.perf_counter()
    if only is not None and only not in STAGES:
        raise ValueError(f"unknown stage {only!r}; stages: {', '.join(STAGES)}")
    n_seeds = seeds if seeds is not None else (1 if quick else 3)
    if n_seeds < 1:
        raise ValueError("seeds must be >= 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = Ctx(out=out, data_dir=data_dir, s=settings_for(quick), seeds=list(range(n_seeds)), progress=progress)
    c.log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    results: dict[str, StageResult] = {}
    invocation: dict[str, float] = {}
    for st in STAGES:
        c.allow_train = only is None or st == only
        ts = time.perf_counter()
        if c.allow_train:
            print(f"== stage {st}", file=sys.stderr, flush=True)
        try:
            results[st] = STAGE_FUNCS[st](c)
        except MissingRun:
            continue
        finally:
            invocation[st] = time.perf_counter() - ts
        if c.allow_train:
            print(f"   stage {st} done in {_mins(invocation[st])}", file=sys.stderr, flush=True)

    values: dict[str, list[float]] = {}
    for r in results.values():
        values.update(r.values)
    if all(k in values for k in ("teacher_errors", "baseline_errors", "distilled_errors")):
        n = min(len(values["teacher_errors"]), len(values["baseline_errors"]), len(values["distilled_errors"]))
        values["gap_closed"] = [(b - d) / (b - t) if b != t else float("nan") for t, b, d in zip(
            values["teacher_errors"][:n], values["baseline_errors"][:n], values["distilled_errors"][:n])]
    ordered = {k: values[k] for k in summary_keys() if k in values}
    summary = write_summary(out, ordered)
    details = {k: r.details for k, r in results.items()}
    atomic_write_json(out / "details.json", details)
    times = {"train": _stage_train_times(results), "invocation": {k: v for k, v in invocation.items() if k in results}}
    uniq = {r["config"]["out_dir"]: r for res in results.values() for r in res.records}
    times["single_seed"] = _train_seconds([r for r in uniq.values() if r["seed"] == 0])
    wall = time.perf_counter() - t0
    cmd = "darkknowledge reproduce hinton-mnist" + (" --quick" if quick else "") + \
          (f" --seeds {seeds}" if seeds is not None else "") + (f" --only {only}" if only else "")
    prov = provenance(cmd, wall, c.seeds)
    prov["stage_wall_time_s"] = times
    prov["stages_present"] = list(results)
    prov["settings"] = {k: v for k, v in c.s.__dict__.items()}
    atomic_write_json(out / "provenance.json", prov)
    write_report(out, build_report(out, summary, details, c, times, prov))
    missing = [k for k in summary_keys() if k not in summary]
    print(f"hinton-mnist: {len(results)}/{len(STAGES)} stages in {out}/ (this invocation {wall:.0f} s)"
          + (f"; missing keys: {len(missing)}" if missing else ""), flush=True)
    return summary

