"""The training loop: from labels or distilling from a teacher, resumable to the bit.

:func:`train` reads top to bottom: data → student → teacher (built once) → method → optimiser and
schedule → (resume) → epochs of steps → validation, selection, checkpoint → the selected model's test
metrics → the run record. Each step is ``logits, losses = method(x, y, idx, epoch=, step=)`` and the
loss is ``sum(losses.values())`` — the method contract of :mod:`darkknowledge.methods`.

* The validation split (seeded, carved from the training set) selects the reported epoch; the test set
  is only evaluated for reporting (per epoch when ``track_test`` is on, for curves).
* Every epoch (and every ``checkpoint_every_steps``) writes ``checkpoint.pt`` atomically (see
  :mod:`.state`). Each epoch's order is a permutation drawn from ``(seed, epoch)``, so ``resume=True``
  continues bit-identically; a resume with another config or another teacher file is refused.
* One process at a time per ``out_dir`` (:class:`~.lock.RunLock`).
* Under ``torchrun`` each rank trains on its shard of every global batch through DDP and rank 0 writes
  (see :mod:`.distributed`); a single process is the same loop with a world of one.
* A NaN or inf loss stops the run naming the epoch, step and batch; the last good checkpoint stays.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..config import DataConfig, DistillConfig, OptimConfig, TrainConfig
from ..data import Splits, TensorData, load_dataset, train_val_split
from ..data.common import sha256_file
from ..data.files import load_files
from ..methods import Method, create_method, get_method
from ..metrics import classification_metrics, evaluate, predict_logits
from ..models import apply_max_norm, create_model, load_model, save_model
from ..store import run_store, state_sha256
from ..teachers import CachedTeacher, Ensemble, ModelTeacher, Teacher, as_teacher, teacher_files
from ..transforms import random_shift
from ..utils import (
    atomic_write_json,
    get_rng_state,
    git_commit,
    machine_facts,
    module_device,
    resolve_device,
    seed_everything,
)
from . import distributed as dd
from .guidance import soft_term_warning, teacher_margin_warning
from .lock import RunLock
from .logs import TensorBoard, write_metrics_csv
from .state import RunExistsError, State, load_checkpoint, restore, save_checkpoint

__all__ = ["train", "prepare_data", "build_teacher", "build_optimizer", "lr_factor", "epoch_order",
           "TrainingDivergedError", "RunExistsError"]

log = logging.getLogger(__name__)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or inf."""


# --------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, resume: bool = False, splits: Splits | None = None, progress: bool = True,
          track_train: bool = False, track_test: bool = False, student: nn.Module | None = None,
          teacher: Teacher | nn.Module | Sequence[nn.Module] | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` (distilling when ``cfg.distill`` is set) and return the run record.

    Writes to ``cfg.out_dir``: ``checkpoint.pt`` (resume state), ``best.safetensors`` (the model
    selected on validation), ``last.safetensors`` and ``run.json`` (the run record). Data, student and
    teacher are checked before anything is written; then the run directory is locked.

    ``student`` / ``teacher``: any ``nn.Module`` (a list of them or a :class:`Teacher` for the teacher)
    instead of the registry model of ``cfg.model`` and the files of ``cfg.distill.teachers``; the saved
    files then record the student's import path (``"package.module:Class"``). ``student`` is trained in
    place and ends with the weights selected on validation.
    """
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not resume:
        raise RunExistsError(f"{out} already holds a run — pass --resume to continue it or choose another out_dir")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    w, device, created = dd.setup(resolve_device(cfg.device))
    ok = False
    try:
        record = _train(cfg, out, w, device, resume, splits, progress, track_train, track_test, student, teacher)
        ok = True
        return record
    finally:
        dd.teardown(created, ok)


def _train(cfg: TrainConfig, out: Path, w: dd.World, device: torch.device, resume: bool, splits: Splits | None,
           progress: bool, track_train: bool, track_test: bool, student: nn.Module | None,
           teacher: Teacher | nn.Module | Sequence[nn.Module] | None) -> dict[str, Any]:
    ckpt_path = out / "checkpoint.pt"
    seed_everything(cfg.seed)

    splits = splits or prepare_data(cfg.data)
    _check_splits(splits)
    train_data, n_cls = splits.train, splits.num_classes
    model, model_name, model_args = _build_student(cfg, n_cls, student)
    teacher, teacher_sha = _load_teacher(cfg, n_cls, teacher)
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    _check_inputs(train_data.x[:2].to(device), model, teacher, cfg, len(train_data.x))
    if resume and ckpt_path.exists():  # a corrupt checkpoint, another config or teacher: refused before writing
        load_checkpoint(ckpt_path, cfg, teacher_sha, w.size)
    if w.rank > 0:  # dropout and other randomness differ between ranks (the weights come from rank 0)
        torch.manual_seed(cfg.seed * 1_000_003 + w.rank)
    with RunLock(out) if w.main else nullcontext():
        if ckpt_path.exists() and not resume:  # another process started this run meanwhile
            raise RunExistsError(f"{out} already holds a run — pass --resume to continue it or choose another "
                                 "out_dir")
        method = _build_method(cfg, model, teacher, train_data.x, out, w).to(device)
        return _loop(cfg, out, splits, model, (model_name, model_args), teacher, teacher_sha, method, resume,
                     progress and w.main, track_train, track_test, w)


def _loop(cfg: TrainConfig, out: Path, splits: Splits, model: nn.Module, spec: tuple[str, dict[str, Any]],
          teacher: Teacher | None, teacher_sha: list[str], method: Method, resume: bool, progress: bool,
          track_train: bool, track_test: bool, w: dd.World = dd.SINGLE) -> dict[str, Any]:
    ckpt_path, train_data = out / "checkpoint.pt", splits.train
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = build_optimizer(cfg.optim, params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg.optim, s, steps_per_epoch, cfg.epochs))
    aug_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    st = State()
    if resume and ckpt_path.exists():
        st = restore(load_checkpoint(ckpt_path, cfg, teacher_sha, w.size), model, method, opt, sched, aug_gen,
                     w.rank)
        log.info("resumed %s at epoch %d step %d", out, st.epoch, st.step_in_epoch)
    device = module_device(model)
    step_fn = dd.wrap(method, w, device)  # DDP over the student (and any trainable method state), or the method

    def checkpoint() -> None:
        rngs = dd.gather_objects(w, get_rng_state())  # every rank's, so that a resume continues each exactly
        if w.main:
            save_checkpoint(ckpt_path, st, cfg, model, method, opt, sched, aug_gen, teacher_sha, rngs)

    # only rank 0 evaluates; a CachedTeacher has no outputs for the validation and test inputs
    main_teacher = teacher if w.main and not isinstance(teacher, CachedTeacher) else None
    test_teacher_logits = predict_logits(teacher, splits.test.x, cfg.eval_batch_size) \
        if main_teacher is not None else None
    teacher_val = evaluate(teacher, splits.val.x, splits.val.y, batch_size=cfg.eval_batch_size) \
        if main_teacher is not None and len(splits.val) else None
    tb, warnings = TensorBoard(out) if w.main else None, []
    x_all, y_all = train_data.x, train_data.y
    if device.type == "cuda":  # page-locked host memory: batches copy to the GPU asynchronously
        x_all, y_all = x_all.pin_memory(), y_all.pin_memory()
    amp = device.type if device.type in ("cpu", "cuda") else None
    if cfg.eval_every_steps and not st.curve and w.main:
        st.curve.append(_curve_point(cfg, 0, model, splits))
    model.train()
    while st.epoch < cfg.epochs and not (cfg.max_steps and st.global_step >= cfg.max_steps):
        order = epoch_order(len(train_data), cfg.seed, st.epoch)
        if st.step_in_epoch == 0:
            st.sums, st.seen = {}, 0
        t_epoch, seen_at_start = time.perf_counter(), st.seen
        bar = tqdm(range(st.step_in_epoch, steps_per_epoch), desc=f"{cfg.name} epoch {st.epoch + 1}/{cfg.epochs}",
                   disable=None if progress else True, leave=False, file=sys.stderr)
        for step in bar:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x, y = _batch(cfg, x_all, y_all, idx, aug_gen, device)  # the global batch, the same on every rank
            x, y, idx, n_mine, scale = dd.shard(w, x, y, idx)  # this rank's part of it
            try:
                with torch.autocast(amp or "cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16" and amp is not None):
                    _, losses = step_fn(x, y, idx, epoch=st.epoch, step=st.global_step)
                loss = sum(losses.values())
                # Σ over ranks of each term × examples: the same numbers on every rank, so all stop together
                sums = dd.reduce_sums(w, torch.stack([v.detach().double() for v in losses.values()]) * n_mine)
                if not torch.isfinite(sums).all():
                    raise FloatingPointError(f"non-finite loss ({sums.sum().item() / len(order[:cfg.batch_size])})")
            except FloatingPointError as e:
                raise TrainingDivergedError(f"{e} {_where(st, step, train_data, idx, ckpt_path)}") from e
            opt.zero_grad(set_to_none=True)
            (loss * scale if w.distributed else loss).backward()
            if cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            opt.step()
            sched.step()
            if getattr(model, "max_norm", None):
                apply_max_norm(model)
            st.step_in_epoch, st.global_step = step + 1, st.global_step + 1
            for k, v in zip(losses, sums.tolist()):
                st.sums[k] = st.sums.get(k, 0.0) + v
            st.seen += min(cfg.batch_size, len(order) - step * cfg.batch_size)
            if step % 20 == 0:
                bar.set_postfix({k: f"{s / st.seen:.4f}" for k, s in st.sums.items()}
                                | {"samples/s": f"{(st.seen - seen_at_start) / (time.perf_counter() - t_epoch):.0f}"})
            last = cfg.max_steps is not None and st.global_step >= cfg.max_steps
            if cfg.eval_every_steps and (st.global_step % cfg.eval_every_steps == 0 or last) and w.main:
                st.curve.append(_curve_point(cfg, st.global_step, model, splits))
            if last:
                break
            if cfg.checkpoint_every_steps and st.step_in_epoch % cfg.checkpoint_every_steps == 0 \
                    and st.step_in_epoch < steps_per_epoch:
                checkpoint()
        bar.close()

        if not w.main:  # rank 0 validates, selects and writes
            st.epoch, st.step_in_epoch = st.epoch + 1, 0
            checkpoint()
            continue
        row = _end_of_epoch(cfg, st, model, splits, opt, t_epoch, seen_at_start, track_train, track_test,
                            test_teacher_logits)
        if _selection_score(row, cfg.select_metric) > st.best["score"]:
            st.best = {"epoch": st.epoch, "score": _selection_score(row, cfg.select_metric)}
            save_model(model, out / "best.safetensors", *spec, {"epoch": st.epoch})
        checkpoint()
        write_metrics_csv(out / "metrics.csv", st.history)
        tb.epoch(row)
        if teacher is not None:
            warnings.append(soft_term_warning(st.history))
        if progress:
            _log_epoch(cfg, st, row)
    if not w.main:
        return dd.broadcast_object(w, None)
    tb.close()

    save_model(model, out / "last.safetensors", *spec, {"epoch": st.epoch})
    model.load_state_dict(load_file(str(out / "best.safetensors")))  # the model selected on validation
    final = _final_metrics(cfg, st, model, splits, teacher, test_teacher_logits)
    warnings.append(teacher_margin_warning(teacher_val, final["val"]))
    st.tick()
    record = _record(cfg, st, splits, final, teacher_sha, model)
    if w.distributed:
        record["distributed"] = w.record()
    if any(warnings):
        record["warnings"] = [m for m in warnings if m]
    atomic_write_json(out / "run.json", record)
    return dd.broadcast_object(w, record)


# --------------------------------------------------------------------------- the steps of train()


def _build_student(cfg: TrainConfig, n_cls: int, student: nn.Module | None
                   ) -> tuple[nn.Module, str, dict[str, Any]]:
    """The student, its model name (registry name or import path) and constructor arguments (of a module
    passed in: its ``init_name`` and ``init_args`` attributes, when it has them — :func:`create_model` sets
    both — so that ``load_model`` can rebuild it; else its import path)."""
    if student is not None:
        args = dict(getattr(student, "init_args", None) or {})
        name = getattr(student, "init_name", None) or f"{type(student).__module__}:{type(student).__qualname__}"
        model = student
    else:
        args = dict(cfg.model.args)
        args.setdefault("num_classes", n_cls)
        model, name = create_model(cfg.model.name, **args), cfg.model.name
    if getattr(model, "num_classes", n_cls) != n_cls:
        raise ValueError(f"model has {model.num_classes} outputs but the dataset has {n_cls} classes")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, name, args


def _load_teacher(cfg: TrainConfig, n_cls: int, given: Teacher | nn.Module | Sequence[nn.Module] | None
                  ) -> tuple[Teacher | None, list[str]]:
    """The frozen teacher (class logits) and the sha256 of each teacher file (of the weights, for a
    teacher given as modules), or ``(None, [])``."""
    if cfg.distill is None:
        if given is not None:
            raise ValueError("a teacher was given but the config has no distill section (temperature, weights)")
        return None, []
    if given is not None:
        teacher = as_teacher(given, combine=cfg.distill.combine)
        if not teacher.live and cfg.data.augment_shift:
            raise ValueError(f"a {type(teacher).__name__} holds outputs for the unshifted training inputs, but "
                             f"data.augment_shift is {cfg.data.augment_shift}: set it to 0 or pass the live teacher")
        teacher.num_classes = getattr(teacher, "num_classes", None) or n_cls
        return teacher, [state_sha256(teacher)]
    if not cfg.distill.teachers:
        raise ValueError("distill.teachers is empty — name at least one teacher file")
    files = teacher_files(cfg.distill.teachers)
    if len(files) == 1 and Path(files[0]).is_dir():  # a store of teacher outputs (top-k or full; store.py)
        from ..store import StoredTeacher

        stored = StoredTeacher(files[0])
        stored.num_classes = n_cls
        return stored, [sha256_file(Path(files[0]) / "manifest.json")]
    teacher = build_teacher(cfg.distill, n_cls)  # a missing or unreadable file: ModelFileError
    return teacher, [sha256_file(p) for p in files]


@torch.no_grad()
def _check_inputs(x: Tensor, model: nn.Module, teacher: Teacher | None, cfg: TrainConfig, n_train: int) -> None:
    """One forward of student and teacher on two training inputs (eval mode: no dropout, no RNG, no
    batch-norm update), so a model that cannot take this dataset's inputs fails before anything is written."""
    if isinstance(teacher, CachedTeacher):  # looked up by index: it answers for the training split's rows only
        if len(teacher) != n_train:
            raise ValueError(f"the CachedTeacher holds {len(teacher)} rows but the training split has {n_train} "
                             "examples: cache the outputs on this training split")
        teacher = None
    for who, m in (("student", model), ("teacher", teacher)):
        if m is None:
            continue
        was = m.training
        m.eval()
        try:
            m(x)
        except RuntimeError as e:
            where = cfg.model.name if who == "student" else ", ".join(cfg.distill.teachers)
            raise ValueError(f"the {who} ({where}) cannot take {cfg.data.dataset!r} inputs of shape "
                             f"{tuple(x.shape[1:])}: {str(e).splitlines()[0]}") from None
        finally:
            m.train(was)


def _build_method(cfg: TrainConfig, model: nn.Module, teacher: Teacher | None, x_train: Tensor, out: Path,
                  w: dd.World = dd.SINGLE) -> Method:
    """The method by name with ``cfg.method_args`` (every method's settings; the config fills in kd's); its
    teacher serves what the method needs (``teacher_output``), from the run's store of the transfer set's
    outputs (``teacher_store/``, :func:`~darkknowledge.store.run_store`) when ``distill.cache`` is on, the
    transfer set is not augmented and the outputs are not precomputed already (rows looked up by position;
    written by rank 0 only, then read by the other ranks)."""
    name = cfg.method or ("kd" if cfg.distill is not None else "labels")
    serving = None
    if teacher is not None:
        serving = teacher.serving(get_method(name).teacher_output)
        if cfg.distill.cache and cfg.data.augment_shift == 0 and not serving.precomputed:
            path = out / "teacher_store"
            if w.main:
                (out / "teacher_cache.safetensors").unlink(missing_ok=True)  # the per-run cache's former file
                serving = run_store(serving, x_train, path, batch_size=cfg.eval_batch_size)
            dd.barrier(w)
            if not w.main:
                serving = run_store(serving, x_train, path, batch_size=cfg.eval_batch_size, write=False)
    return create_method(name, model, serving, **cfg.method_args)


def _batch(cfg: TrainConfig, x_all: Tensor, y_all: Tensor, idx: Tensor, aug_gen: torch.Generator,
           device: torch.device) -> tuple[Tensor, Tensor]:
    x, y = x_all[idx], y_all[idx]
    if cfg.data.augment_shift:
        x = random_shift(x, cfg.data.augment_shift, aug_gen)
    if device.type != "cpu":
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if cfg.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _where(st: State, step: int, train_data, idx: Tensor, ckpt_path: Path) -> str:
    """Where a failing step happened (built only when a step fails)."""
    return (f"at epoch {st.epoch + 1}, step {step + 1} (global step {st.global_step + 1}), batch of dataset "
            f"indices {train_data.index[idx[:8]].tolist()}...; the last good checkpoint "
            f"{ckpt_path if ckpt_path.exists() else '(none yet)'} is kept")


def _end_of_epoch(cfg: TrainConfig, st: State, model: nn.Module, splits: Splits, opt, t_epoch: float,
                  seen_at_start: int, track_train: bool, track_test: bool,
                  test_teacher_logits: Tensor | None) -> dict[str, Any]:
    """Validate (and optionally evaluate train / test), append the epoch's row to the history, advance."""
    row: dict[str, Any] = {"epoch": st.epoch + 1, "lr": opt.param_groups[0]["lr"],
                           "train_loss": {k: s / max(st.seen, 1) for k, s in st.sums.items()},
                           "samples_per_s": (st.seen - seen_at_start) / max(time.perf_counter() - t_epoch, 1e-9)}
    row["val"] = evaluate(model, splits.val.x, splits.val.y, batch_size=cfg.eval_batch_size) \
        if len(splits.val) else None
    if track_train:
        row["train"] = evaluate(model, splits.train.x, splits.train.y, batch_size=cfg.eval_batch_size)
    if track_test:
        row["test"] = evaluate(model, splits.test.x, splits.test.y, test_teacher_logits, cfg.eval_batch_size)
    st.history.append(row)
    st.epoch, st.step_in_epoch = st.epoch + 1, 0
    return row


def _curve_point(cfg: TrainConfig, step: int, model: nn.Module, splits: Splits) -> dict[str, Any]:
    """Test metrics at ``step`` (the learning curve); two-class problems also get the ROC AUC of class 1."""
    logits = predict_logits(model, splits.test.x, cfg.eval_batch_size)
    point = {"step": step, **classification_metrics(logits, splits.test.y)}
    if logits.shape[1] == 2:
        from sklearn.metrics import roc_auc_score

        point["auc"] = float(roc_auc_score(splits.test.y.numpy(), torch.softmax(logits.float(), 1)[:, 1].numpy()))
    return point


def _log_epoch(cfg: TrainConfig, st: State, row: dict[str, Any]) -> None:
    msg = f"[{cfg.name}] epoch {st.epoch}/{cfg.epochs}  " + "  ".join(
        f"{k} {s:.4f}" for k, s in row["train_loss"].items())
    if row["val"]:
        msg += f"  val acc {row['val']['accuracy']:.4f}  val nll {row['val']['nll']:.4f}"
    print(msg, file=sys.stderr, flush=True)


def _final_metrics(cfg: TrainConfig, st: State, selected: nn.Module, splits: Splits, teacher: Teacher | None,
                   test_teacher_logits: Tensor | None) -> dict[str, Any]:
    """Validation and test metrics of the model selected on validation (and the teacher's test metrics)."""
    final = {
        "selected_epoch": st.best["epoch"],
        "val": evaluate(selected, splits.val.x, splits.val.y, batch_size=cfg.eval_batch_size) if len(splits.val)
        else None,
        "test": evaluate(selected, splits.test.x, splits.test.y, test_teacher_logits, cfg.eval_batch_size),
    }
    if teacher is not None and not isinstance(teacher, CachedTeacher):
        final["teacher_test"] = evaluate(teacher, splits.test.x, splits.test.y, batch_size=cfg.eval_batch_size)
    return final


def _record(cfg: TrainConfig, st: State, splits: Splits, final: dict[str, Any], teacher_sha: list[str],
            selected_model: nn.Module | None = None) -> dict[str, Any]:
    record = {
        "name": cfg.name,
        "config": cfg.model_dump(),
        "seed": cfg.seed,
        "git_commit": git_commit(),
        "machine": machine_facts(),
        "device": str(module_device(selected_model)) if selected_model is not None else None,
        "dataset": {"name": splits.name, "train": len(splits.train), "val": len(splits.val),
                    "test": len(splits.test), **({"class_names": splits.class_names} if splits.class_names else {})},
        "wall_time_s": st.elapsed,
        "cpu_time_s": st.cpu,
        "epochs": st.history,
        "final": final,
    }
    if teacher_sha:
        record["teacher_sha256"] = teacher_sha
    if st.curve:
        record["curve"] = st.curve
    return record


def _selection_score(row: dict[str, Any], metric: str) -> float:
    v = row.get("val")
    if not v:  # no validation split: the last epoch is selected
        return float(row["epoch"])
    return v["accuracy"] if metric == "accuracy" else -v["nll"]


# --------------------------------------------------------------------------- building blocks


def prepare_data(cfg: DataConfig, seed: int = 0) -> Splits:
    """Load the dataset (a built-in one, or the user's files of ``cfg.format``), carve the validation
    split, and restrict the training split as configured."""
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.val_size, cfg.split_seed) if cfg.format is None \
        else _user_files(cfg)
    tr = splits.train
    keep = torch.ones(len(tr), dtype=torch.bool)
    for c in cfg.exclude_classes:
        keep &= tr.y != c
    if cfg.include_classes is not None:
        keep &= torch.isin(tr.y, torch.tensor(cfg.include_classes))
    tr = tr.subset(keep.nonzero().flatten())
    if cfg.fraction < 1:
        g = torch.Generator().manual_seed(cfg.split_seed + 1)
        n = int(round(cfg.fraction * len(tr)))
        if n < 1:
            raise ValueError(f"data.fraction={cfg.fraction:g} keeps none of the {len(tr)} training examples — use a "
                             f"fraction >= {1 / len(tr):.2g}")
        tr = tr.subset(torch.randperm(len(tr), generator=g)[:n].sort().values)
    if len(tr) == 0:
        raise ValueError("the training split is empty after the class/fraction restrictions")
    return dataclasses.replace(splits, train=tr)


def _user_files(cfg: DataConfig) -> Splits:
    raw, names = load_files(cfg.format, cfg.files, cfg.sha256, cfg.label_column, tuple(cfg.arrays), cfg.image_size,
                            cfg.channels)
    (xtr, ytr), (xte, yte) = raw["train"], raw["test"]
    n_cls = len(names) if names else int(max(ytr.max(), yte.max())) + 1
    full = TensorData(xtr, ytr)
    tr, va = train_val_split(len(full), cfg.val_size, cfg.split_seed)
    return Splits(full.subset(tr), full.subset(va), TensorData(xte, yte), n_cls, cfg.dataset, names)


def _check_splits(splits: Splits) -> None:
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise ValueError(f"dataset {splits.name!r}: the training or test split is empty")
    for part in ("train", "val", "test"):
        d = getattr(splits, part)
        y = d.y
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"dataset {splits.name!r}: {part} labels must be integer class ids, got {y.dtype}")
        if d.x.shape[0] != len(y):
            raise ValueError(f"dataset {splits.name!r}: {part} has {d.x.shape[0]} inputs but {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= splits.num_classes):
            raise ValueError(f"dataset {splits.name!r}: {part} labels out of range 0..{splits.num_classes - 1}")


def build_teacher(cfg: DistillConfig, num_classes: int, output: str | None = None,
                  models: list[nn.Module] | None = None) -> Teacher:
    """Load the teacher checkpoint(s) (several make an :class:`Ensemble`); check the class count."""
    files = teacher_files(cfg.teachers)  # ensemble manifests expanded into their members
    models = models if models is not None else [load_model(p) for p in files]
    for p, m in zip(files, models):
        out = getattr(m, "num_classes", None)
        if out is not None and out != num_classes:
            raise ValueError(f"teacher {p} has {out} classes but the student has {num_classes}")
    teacher = ModelTeacher(models[0], output=output) if len(models) == 1 else Ensemble(models, cfg.combine, output)
    teacher.num_classes = num_classes
    return teacher


def build_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """Multiplier of the base LR at global ``step``: linear warm-up, then the chosen decay."""
    total = steps_per_epoch * epochs
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac))
    if cfg.schedule == "linear":
        return 1 - frac
    if cfg.schedule == "step":
        return cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    return 1.0


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The example order of one epoch: a permutation fixed by ``(seed, epoch)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
