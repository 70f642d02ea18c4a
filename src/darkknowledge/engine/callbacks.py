"""Callbacks: what watches or logs a run, outside the loop (the HF Trainer / Lightning pattern).

The loop (:mod:`.train`) is the outline — data order, step, validate, select, checkpoint — and calls
each callback's hooks at fixed points. The built-ins are installed from the config, in this order:

* :class:`Progress`   — a tqdm bar per epoch and one log line per epoch (``progress=True``);
* :class:`Curve`      — the test-set learning curve every ``eval_every_steps`` (and at step 0) into
  ``record["curve"]`` (kept in the checkpoint, so a resumed run's curve is the uninterrupted one's);
* :class:`Checkpoint` — mid-epoch checkpoints every ``checkpoint_every_steps`` (the end-of-epoch
  checkpoint belongs to the loop itself);
* :class:`MetricsCSV` — ``metrics.csv``, rewritten whole from the history each epoch;
* :class:`TensorBoard`— scalars per epoch into ``<run>/tensorboard/`` when ``tensorboard`` is installed;
* :class:`Guidance`   — the usual reasons distillation does not help (Hinton et al. 2015 §2-3), as
  warnings in ``record["warnings"]``: before training, a teacher not ahead of a labels-only baseline on
  validation (:func:`~darkknowledge.metrics.labels_baseline_accuracy`); after it, a teacher not clearly
  better than its student on validation, and a soft term that has not moved over the first three epochs.

User callbacks (``dk.train(cfg, callbacks=[...])``, ``dk.distill(..., callbacks=[...])``) run after the
built-ins. Subclass :class:`Callback` and override any of:

``on_train_start(run)``
    once, after the model, method, optimiser and any resumed state are in place, before the first step.
``on_epoch_start(run)``
    before each epoch's first step (``run.state.epoch`` is the 0-based epoch about to run; on a resume
    mid-epoch, ``run.state.step_in_epoch`` is where it continues).
``on_step_end(run, step)``
    after each optimiser step; ``step`` is a :class:`StepInfo` (the batch's losses summed over ranks and
    averaged over its examples, the position, whether ``max_steps`` was reached).
``on_epoch_end(run, row)``
    after validation, selection and the epoch's checkpoint; ``row`` is the epoch's entry of
    ``record["epochs"]`` (``epoch`` 1-based, ``lr``, ``train_loss``, ``samples_per_s``, ``val``, and
    ``train`` / ``test`` when tracked).
``on_train_end(run, record)``
    once, with the run record about to be written to ``run.json`` (a callback may add keys to it).

``run`` is the :class:`~.train.Run`: the config (``run.cfg``), the output folder (``run.out``), the
splits, the student (``run.model``), the teacher, the optimiser, the loop state (``run.state``: epoch,
global step, ``history``, ``best``) and the process group (``run.world``). Under torchrun every rank
calls ``on_train_start``, ``on_epoch_start`` and ``on_step_end``; rank 0 alone (``run.world.main``)
validates, so ``on_epoch_end`` and ``on_train_end`` are called on rank 0 only. The loop's random numbers
do not depend on callbacks, so a callback that only reads leaves the run bit-identical.

An exception in a hook stops the run there, like a failing step: the last checkpoint written stays (an
``on_epoch_end`` hook runs after its epoch's checkpoint), ``run.json`` is not written, and the run can be
resumed.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..metrics import classification_metrics, labels_baseline_accuracy, predict_logits
from ..utils import atomic_write_text

if TYPE_CHECKING:
    from .train import Run

__all__ = ["Callback", "StepInfo", "Progress", "Curve", "Checkpoint", "MetricsCSV", "TensorBoard", "Guidance",
           "builtin_callbacks", "flatten", "write_metrics_csv", "teacher_margin_warning", "soft_term_warning"]

log = logging.getLogger("darkknowledge")


@dataclass(frozen=True)
class StepInfo:
    """One optimiser step: ``step`` (0-based, in the epoch), ``global_step`` (steps done, this one included),
    ``n`` (examples in the global batch), ``losses`` (each term's batch mean, summed over ranks), and
    ``last`` (``max_steps`` reached: the epoch ends here)."""

    epoch: int
    step: int
    global_step: int
    n: int
    losses: dict[str, float]
    last: bool = False


class Callback:
    """Base class: every hook does nothing. See the module docstring for when each is called."""

    def on_train_start(self, run: Run) -> None:
        pass

    def on_epoch_start(self, run: Run) -> None:
        pass

    def on_step_end(self, run: Run, step: StepInfo) -> None:
        pass

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        pass

    def on_train_end(self, run: Run, record: dict[str, Any]) -> None:
        pass


def builtin_callbacks(run: Run, progress: bool) -> list[Callback]:
    """The callbacks the config asks for, in their order (rank 0 alone logs and evaluates)."""
    cfg, main = run.cfg, run.world.main
    cbs: list[Callback] = []
    if progress and main:
        cbs.append(Progress())
    if cfg.eval_every_steps and main:
        cbs.append(Curve(cfg.eval_every_steps))
    if cfg.checkpoint_every_steps:
        cbs.append(Checkpoint(cfg.checkpoint_every_steps))  # on every rank: each one's RNG state is gathered
    if main:
        cbs += [MetricsCSV(), TensorBoard()]
        if run.teacher is not None:
            cbs.append(Guidance())
    return cbs


# --------------------------------------------------------------------------- progress


class Progress(Callback):
    """A tqdm bar per epoch (running mean losses and samples/s every 20 steps) and a log line per epoch."""

    def on_epoch_start(self, run: Run) -> None:
        from tqdm.auto import tqdm

        st, cfg = run.state, run.cfg
        self.bar = tqdm(total=run.steps_per_epoch, initial=st.step_in_epoch, desc=f"{cfg.name} epoch "
                        f"{st.epoch + 1}/{cfg.epochs}", leave=False, file=sys.stderr, disable=None)
        self.t0, self.seen0 = time.perf_counter(), st.seen

    def on_step_end(self, run: Run, step: StepInfo) -> None:
        self.bar.update()
        st = run.state
        if step.step % 20 == 0:
            rate = (st.seen - self.seen0) / max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix({k: f"{s / st.seen:.4f}" for k, s in st.sums.items()} | {"samples/s": f"{rate:.0f}"})

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        self.bar.close()
        cfg = run.cfg
        msg = f"[{cfg.name}] epoch {row['epoch']}/{cfg.epochs}  " + "  ".join(
            f"{k} {s:.4f}" for k, s in row["train_loss"].items())
        if row["val"]:
            msg += f"  val acc {row['val']['accuracy']:.4f}  val nll {row['val']['nll']:.4f}"
        print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- curve and checkpoints


class Curve(Callback):
    """Test metrics at step 0 and every ``every`` steps (and at ``max_steps``) into ``run.state.curve``, which
    the checkpoint keeps and the record reports as ``"curve"`` — for learning-speed experiments ("steps to
    reach a loss"), never for selection. Two-class problems also get the ROC AUC of class 1."""

    def __init__(self, every: int):
        self.every = every

    def on_train_start(self, run: Run) -> None:
        if not run.state.curve:
            run.state.curve.append(self.point(run, 0))

    def on_step_end(self, run: Run, step: StepInfo) -> None:
        if step.global_step % self.every == 0 or step.last:
            run.state.curve.append(self.point(run, step.global_step))

    @staticmethod
    def point(run: Run, step: int) -> dict[str, Any]:
        import torch

        test = run.splits.test
        logits = predict_logits(run.model, test.x, run.eval_batch)
        point = {"step": step, **classification_metrics(logits, test.y)}
        if logits.shape[1] == 2:
            from sklearn.metrics import roc_auc_score

            point["auc"] = float(roc_auc_score(test.y.numpy(), torch.softmax(logits.float(), 1)[:, 1].numpy()))
        return point


class Checkpoint(Callback):
    """``checkpoint.pt`` every ``every`` steps inside an epoch (not at its end, which the loop checkpoints,
    nor at ``max_steps``, where the epoch ends)."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, run: Run, step: StepInfo) -> None:
        done = step.step + 1
        if not step.last and done % self.every == 0 and done < run.steps_per_epoch:
            run.checkpoint()


# --------------------------------------------------------------------------- metrics.csv and TensorBoard


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, int | float]:
    """``{"val": {"accuracy": …}}`` → ``{"val/accuracy": …}`` (numbers only)."""
    out: dict[str, int | float] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v  # ints stay ints in metrics.csv (errors, n, epoch)
    return out


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """The history as a CSV, one row per epoch, columns the flattened keys (``val/accuracy``, ...)."""
    rows = [flatten(r) for r in history]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class MetricsCSV(Callback):
    """``<run>/metrics.csv``, rewritten whole from the history each epoch, so a resumed run's file is exactly
    an uninterrupted one's."""

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        write_metrics_csv(run.out / "metrics.csv", run.state.history)


class TensorBoard(Callback):
    """Scalars per epoch into ``<run>/tensorboard/``; does nothing when tensorboard is not installed
    (``pip install darkknowledge[tensorboard]``)."""

    writer: Any = None

    def on_train_start(self, run: Run) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return
        self.writer = SummaryWriter(str(run.out / "tensorboard"))

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in flatten(row).items():
            if k != "epoch":
                self.writer.add_scalar(k, v, int(row["epoch"]))
        self.writer.flush()

    def on_train_end(self, run: Run, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- guidance


def teacher_margin_warning(teacher_val: dict[str, Any] | None, student_val: dict[str, Any] | None,
                           min_ratio: float = 0.9) -> str | None:
    """A warning when the teacher's validation errors are not below ``min_ratio`` × the student's."""
    if not teacher_val or not student_val:
        return None
    t, s = teacher_val["errors"], student_val["errors"]
    if t <= min_ratio * s:
        return None
    msg = (f"the teacher is not clearly better than the student on validation ({t} vs {s} errors, accuracy "
           f"{100 * teacher_val['accuracy']:.2f}% vs {100 * student_val['accuracy']:.2f}%): distillation can "
           "only pass on what the teacher knows beyond the labels — use a stronger teacher or expect little gain")
    log.warning(msg)
    return msg


def teacher_baseline_warning(teacher_val: dict[str, Any], baseline_accuracy: float | None) -> str | None:
    """A warning, before training, when the teacher's validation accuracy is not above a labels-only
    baseline's (:func:`~darkknowledge.metrics.labels_baseline_accuracy`)."""
    if baseline_accuracy is None or teacher_val["accuracy"] > baseline_accuracy:
        return None
    msg = (f"the teacher is not ahead of a labels-only baseline on validation (accuracy "
           f"{100 * teacher_val['accuracy']:.2f}% vs {100 * baseline_accuracy:.2f}% for a logistic regression on "
           "the training labels): distilling from it can only pass on its mistakes — check the teacher file and the "
           "data it was trained on, or train from labels")
    log.warning(msg)
    return msg


def soft_term_warning(history: list[dict[str, Any]], epochs: int = 3, min_change: float = 0.01) -> str | None:
    """A warning when the logged soft term (``T²·KL``, 0 when the student matches the teacher) changed by
    less than ``min_change`` (relative) over the first ``epochs`` epochs."""
    if len(history) != epochs:
        return None
    first, last = history[0]["train_loss"].get("soft"), history[-1]["train_loss"].get("soft")
    if first is None or last is None or first <= 0:
        return None
    change = (first - last) / first
    if change >= min_change:
        return None
    msg = (f"the soft term has not moved in the first {epochs} epochs ({first:.4g} → {last:.4g}, "
           f"{100 * change:+.1f}%): the student is not learning from the teacher — try a larger learning rate "
           "(the term scales with T²), a lower temperature, or a schedule that has not annealed yet")
    log.warning(msg)
    return msg


class Guidance(Callback):
    """The two warnings, with numbers, in ``record["warnings"]`` (and the log): a soft term that has not moved
    in the first three epochs (a learning rate too small for the T²-scaled term, targets made uniform by a
    high temperature, a schedule already annealed), and a teacher not clearly better than the selected
    student on validation (the teacher's validation metrics are computed once, at the start; a teacher
    serving stored training outputs only has none)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.teacher_val: dict[str, Any] | None = None

    def on_train_start(self, run: Run) -> None:
        val = run.splits.val
        logits = run.teacher_logits(val.x) if len(val) else None
        self.teacher_val = classification_metrics(logits, val.y) if logits is not None else None
        if self.teacher_val is not None and run.state.global_step == 0:  # before training: the teacher vs labels
            tr = run.splits.train
            base = labels_baseline_accuracy(tr.x, tr.y, val.x, val.y)
            if msg := teacher_baseline_warning(self.teacher_val, base):
                self.warnings.append(msg)

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        if msg := soft_term_warning(run.state.history):
            self.warnings.append(msg)

    def on_train_end(self, run: Run, record: dict[str, Any]) -> None:
        if msg := teacher_margin_warning(self.teacher_val, record["final"]["val"]):
            self.warnings.append(msg)
        if self.warnings:
            record["warnings"] = list(self.warnings)
