"""The training loop: from labels or distilling from a teacher, resumable to the bit.

:func:`train` reads top to bottom: data → student → teacher (built once) → method → optimiser and
schedule → (resume) → the loop → the record. The loop (:func:`_loop`) is the outline: per epoch the
seeded data order and its steps, then validation, selection and the checkpoint; at the end the selected
model's test metrics. Each step is ``logits, losses = method(x, y, idx, epoch=, step=)`` and the loss is
``sum(losses.values())`` — the method contract of :mod:`darkknowledge.methods`. What the loop shares
with its callbacks is one :class:`~.state.Run`; progress bars, ``metrics.csv``, TensorBoard, guidance
warnings, learning curves and mid-epoch checkpoints are callbacks (:mod:`.callbacks`), and a user's own
run after them (``train(cfg, callbacks=[...])``).

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
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ..config import DataConfig, DistillConfig, OptimConfig, TrainConfig
from ..data import Splits, load_splits
from ..data.augment import augment_seed, build_augment
from ..methods import Method, create_method, get_method, list_methods
from ..metrics import classification_metrics, evaluate
from ..models import apply_max_norm, create_model, load_model, save_model
from ..store import run_store, state_sha256
from ..teachers import Ensemble, ModelTeacher, Teacher, as_teacher, teacher_files
from ..utils import atomic_write_json, git_commit, machine_facts, module_device, resolve_device, seed_everything
from . import distributed as dd
from . import identity as idn
from .arguments import check_train_args
from .callbacks import Callback, StepInfo, builtin_callbacks
from .checks import check_consistent, check_inputs, check_splits
from .lock import RunLock
from .state import Run, RunExistsError, State, load_checkpoint, restore

__all__ = ["train", "Run", "prepare_data", "build_teacher", "build_optimizer", "lr_factor", "epoch_order",
           "eval_batch_size", "TrainingDivergedError", "RunExistsError"]

log = logging.getLogger(__name__)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or inf."""


# --------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, resume: bool = False, splits: Splits | None = None, progress: bool = True,
          track_train: bool = False, track_test: bool = False, student: nn.Module | None = None,
          teacher: Teacher | nn.Module | Sequence[nn.Module] | None = None,
          callbacks: Sequence[Callback] = (), overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg.model`` (distilling when ``cfg.distill`` is set) and return the run record.

    Writes to ``cfg.out_dir``: ``checkpoint.pt`` (resume state), ``best.safetensors`` (the model
    selected on validation), ``last.safetensors`` and ``run.json`` (the run record). Data, student and
    teacher are checked before anything is written; then the run directory is locked.

    ``student`` / ``teacher``: any ``nn.Module`` (a list of them or a :class:`Teacher` for the teacher)
    instead of the registry model of ``cfg.model`` and the files of ``cfg.distill.teachers``; the saved
    files then record the student's import path (``"package.module:Class"``). ``student`` is trained in
    place and ends with the weights selected on validation. ``callbacks``: :class:`~.callbacks.Callback`
    objects whose hooks run after the built-in ones (see :mod:`.callbacks`).

    A finished run in ``cfg.out_dir`` (its ``run.json``; ``checkpoint.pt`` need not be there) is never trained
    over: with ``resume`` it is returned as it is when its identity (:mod:`.identity`: config, data, teachers)
    matches these inputs — ``student`` gets its selected weights — and refused naming what changed otherwise.
    ``overwrite``: replace the run there (set aside once the new inputs are checked, back if the new run fails).
    """
    check_train_args(cfg, splits, student, teacher, callbacks)  # a wrong type: a TypeError saying what was expected
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} is a file, not a folder — choose a folder for the run")
    idn.recover(out)  # the old run back, if an overwrite was killed
    idn.check_free(out, resume or overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    w, device, created = dd.setup(resolve_device(cfg.device))
    ok = False
    try:
        record = _train(cfg, out, w, device, (resume, overwrite), splits, progress, track_train, track_test, student,
                        teacher, list(callbacks))
        ok = True
        return record
    finally:
        dd.teardown(created, ok)


def _train(cfg: TrainConfig, out: Path, w: dd.World, device: torch.device, how: tuple[bool, bool],
           splits: Splits | None, progress: bool, track_train: bool, track_test: bool, student: nn.Module | None,
           teacher: Teacher | nn.Module | Sequence[nn.Module] | None, callbacks: list[Callback]) -> dict[str, Any]:
    ckpt_path = out / "checkpoint.pt"
    resume, overwrite = how
    seed_everything(cfg.seed)

    given_splits = splits
    splits = splits or prepare_data(cfg.data)
    check_splits(splits)
    train_data, n_cls = splits.train, splits.num_classes
    model, model_name, model_args = _build_student(cfg, n_cls, student)
    teacher_given = teacher is not None
    teacher, teacher_sha = _load_teacher(cfg, n_cls, teacher)
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    check_inputs(train_data.x[:2].to(device), model, teacher, cfg, len(train_data.x), n_cls)
    if cfg.data.augment:  # an augmentation that cannot take these inputs: refused before the run folder exists
        build_augment(cfg.data.augment, sample_shape(cfg, splits))
    ident = idn.run_identity(cfg, teacher_sha, given_splits, teacher_given)
    if not overwrite:
        done = idn.reuse_finished(cfg, out, ident, student)
        if done is not None:
            return done
    if resume and ckpt_path.exists() and not overwrite:  # corrupt, another config, other inputs: refused
        what = idn.describe_change(load_checkpoint(ckpt_path, cfg, teacher_sha, w.size), cfg, ident)
        if what:
            raise idn.InputsChangedError(f"{ckpt_path} was started on other inputs: {what} — {idn.OVERWRITE_HINT}")
    if w.rank > 0:  # dropout and other randomness differ between ranks (the weights come from rank 0)
        torch.manual_seed(cfg.seed * 1_000_003 + w.rank)
    with RunLock(out) if w.main else nullcontext():
        idn.check_free(out, resume or overwrite)  # another process may have started this run meanwhile
        with idn.replacing(out, overwrite and w.main):  # the old run is back in place if this one fails
            dd.barrier(w)
            # evaluation batches sized for each model (the teacher's outputs on the transfer set too: the method's
            # cache of them is computed at the config's eval_batch_size, set here to the teacher's)
            batches = eval_batch_size(cfg, model, train_data.x[:1]), eval_batch_size(cfg, teacher, train_data.x[:1])
            method = _build_method(cfg.model_copy(update={"eval_batch_size": batches[1]}), model, teacher,
                                   train_data.x, out, w).to(device)
            run = _start(cfg, out, splits, model, (model_name, model_args), method, teacher, teacher_sha,
                         resume and not overwrite, w, batches, track_train, track_test)
            run.identity = ident
            return _loop(run, builtin_callbacks(run, progress) + callbacks)


def _start(cfg: TrainConfig, out: Path, splits: Splits, model: nn.Module, spec: tuple[str, dict[str, Any]],
           method: Method, teacher: Teacher | None, teacher_sha: list[str], resume: bool, w: dd.World,
           eval_batches: tuple[int, int], track_train: bool, track_test: bool) -> Run:
    """Optimiser and schedule — restored from the checkpoint on a resume — and the augmentation pipeline."""
    steps_per_epoch = math.ceil(len(splits.train) / cfg.batch_size)
    opt = build_optimizer(cfg.optim, [p for p in method.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg.optim, s, steps_per_epoch, cfg.epochs))
    st = State()
    if resume and (out / "checkpoint.pt").exists():
        st = restore(load_checkpoint(out / "checkpoint.pt", cfg, teacher_sha, w.size), model, method, opt, sched,
                     w.rank)
        log.info("resumed %s at epoch %d step %d", out, st.epoch, st.step_in_epoch)
    run = Run(cfg, out, splits, model, spec, method, teacher, teacher_sha, w, opt, sched, st,
              *eval_batches, track_train, track_test)
    run.augment = build_augment(cfg.data.augment, sample_shape(cfg, splits)) if cfg.data.augment else None
    if w.main:  # rank 0 alone evaluates
        run.test_teacher_logits = run.teacher_logits(splits.test.x)
    return run


def _loop(run: Run, callbacks: list[Callback]) -> dict[str, Any]:
    """The outline: per epoch, the seeded data order and its steps; then validation, selection and the
    checkpoint; at the end the selected model's metrics and the run record. Callbacks watch from outside."""
    cfg, st, w = run.cfg, run.state, run.world
    step_fn = dd.wrap(run.method, w, module_device(run.model))  # DDP over the student (and trainable method state)
    data = _device_data(run)
    _hooks(callbacks, "on_train_start", run)
    run.model.train()
    while not run.finished:
        order = epoch_order(len(run.splits.train), cfg.seed, st.epoch)
        if hasattr(run.splits.train, "epoch_data"):  # a DataLoader used as given (data.convert.LoaderData)
            data, order = run.splits.train.epoch_data(cfg.seed, st.epoch)
        if st.step_in_epoch == 0:
            st.sums, st.seen = {}, 0
        run.epoch_clock = (time.perf_counter(), st.seen)
        _hooks(callbacks, "on_epoch_start", run)
        for step in range(st.step_in_epoch, run.steps_per_epoch):
            info = _step(run, step_fn, data, order, step)
            _hooks(callbacks, "on_step_end", run, info)
            if info.last:
                break
        if not w.main:  # rank 0 validates, selects and writes
            st.epoch, st.step_in_epoch = st.epoch + 1, 0
            run.checkpoint()
            continue
        row = _validate(run)
        _select(run, row)
        run.checkpoint()
        _hooks(callbacks, "on_epoch_end", run, row)
    if not w.main:
        return dd.broadcast_object(w, None)
    record = _finish(run)
    _hooks(callbacks, "on_train_end", run, record)
    atomic_write_json(run.out / "run.json", record)
    return dd.broadcast_object(w, record)


def _hooks(callbacks: list[Callback], hook: str, *args: Any) -> None:
    for cb in callbacks:
        getattr(cb, hook)(*args)


def _device_data(run: Run) -> tuple[Tensor, Tensor]:
    x, y = run.splits.train.x, run.splits.train.y
    if module_device(run.model).type == "cuda":  # page-locked host memory: batches copy to the GPU asynchronously
        x, y = x.pin_memory(), y.pin_memory()
    return x, y


def _step(run: Run, step_fn: nn.Module, data: tuple[Tensor, Tensor], order: Tensor, step: int) -> StepInfo:
    """One optimiser step on batch ``step`` of the epoch's ``order``: ``sum(losses)`` of the method, backward,
    clip, step, schedule, max-norm; the losses summed over ranks into the epoch's sums."""
    cfg, st, w = run.cfg, run.state, run.world
    device = module_device(run.model)
    amp = device.type if device.type in ("cpu", "cuda") else None
    idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
    x, y = _batch(run, *data, idx, device)  # the global batch (augmented), the same on every rank
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
        raise TrainingDivergedError(f"{e} {_where(st, step, run.splits.train, idx, run.ckpt_path)}") from e
    run.opt.zero_grad(set_to_none=True)
    (loss * scale if w.distributed else loss).backward()
    if cfg.optim.grad_clip:
        nn.utils.clip_grad_norm_([p for g in run.opt.param_groups for p in g["params"]], cfg.optim.grad_clip)
    run.opt.step()
    run.sched.step()
    if getattr(run.model, "max_norm", None):
        apply_max_norm(run.model)
    n = min(cfg.batch_size, len(order) - step * cfg.batch_size)
    st.step_in_epoch, st.global_step, st.seen = step + 1, st.global_step + 1, st.seen + n
    values = sums.tolist()
    for k, v in zip(losses, values):
        st.sums[k] = st.sums.get(k, 0.0) + v
    last = cfg.max_steps is not None and st.global_step >= cfg.max_steps
    return StepInfo(st.epoch, step, st.global_step, n, {k: v / n for k, v in zip(losses, values)}, last)


def _validate(run: Run) -> dict[str, Any]:
    """The epoch's row — validation metrics (train / test too when tracked) — appended to the history;
    the state advances to the next epoch."""
    st, sp, model = run.state, run.splits, run.model
    t0, seen0 = run.epoch_clock
    row: dict[str, Any] = {"epoch": st.epoch + 1, "lr": run.opt.param_groups[0]["lr"],
                           "train_loss": {k: s / max(st.seen, 1) for k, s in st.sums.items()},
                           "samples_per_s": (st.seen - seen0) / max(time.perf_counter() - t0, 1e-9)}
    row["val"] = evaluate(model, sp.val.x, sp.val.y, batch_size=run.eval_batch) if len(sp.val) else None
    if run.track_train:
        row["train"] = evaluate(model, sp.train.x, sp.train.y, batch_size=run.eval_batch)
    if run.track_test:
        row["test"] = evaluate(model, sp.test.x, sp.test.y, run.test_teacher_logits, run.eval_batch)
    st.history.append(row)
    st.epoch, st.step_in_epoch = st.epoch + 1, 0
    return row


def _select(run: Run, row: dict[str, Any]) -> None:
    """Keep the epoch in ``best.safetensors`` when its validation score (``cfg.select_metric``) is the best."""
    score = _selection_score(row, run.cfg.select_metric)
    if score > run.state.best["score"]:
        run.state.best = {"epoch": row["epoch"], "score": score}
        save_model(run.model, run.out / "best.safetensors", *run.spec, {"epoch": row["epoch"]})


def _selection_score(row: dict[str, Any], metric: str) -> float:
    v = row.get("val")
    if not v:  # no validation split: the last epoch is selected
        return float(row["epoch"])
    return v["accuracy"] if metric == "accuracy" else -v["nll"]


def _finish(run: Run) -> dict[str, Any]:
    """``last.safetensors``; the model selected on validation back in place; its metrics; the run record."""
    st = run.state
    save_model(run.model, run.out / "last.safetensors", *run.spec, {"epoch": st.epoch})
    run.model.load_state_dict(load_file(str(run.out / "best.safetensors")))
    final = _final_metrics(run)
    st.tick()
    record = _record(run.cfg, st, run.splits, final, run.teacher_sha, run.model)
    record["model"] = {"name": run.spec[0], "args": run.spec[1]}  # the real class (a module given as student too)
    record["identity"] = run.identity
    record["weights_sha256"] = idn.file_sha256(run.out / "best.safetensors")
    if run.world.distributed:
        record["distributed"] = run.world.record()
    return record


def _final_metrics(run: Run) -> dict[str, Any]:
    """Validation and test metrics of the model selected on validation (and the teacher's test metrics).

    The selected epoch's validation metrics (and test metrics, when tracked) were computed on these very
    weights at the end of that epoch: they are taken from its row, not computed again."""
    sp, st = run.splits, run.state
    row = st.history[st.best["epoch"] - 1] if st.best["epoch"] > 0 else {}
    final: dict[str, Any] = {"selected_epoch": st.best["epoch"]}
    final["val"] = row["val"] if "val" in row else \
        evaluate(run.model, sp.val.x, sp.val.y, batch_size=run.eval_batch) if len(sp.val) else None
    final["test"] = row["test"] if "test" in row else \
        evaluate(run.model, sp.test.x, sp.test.y, run.test_teacher_logits, run.eval_batch)
    if run.test_teacher_logits is not None:
        final["teacher_test"] = classification_metrics(run.test_teacher_logits, sp.test.y)
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
                    "test": len(splits.test), "input_shape": list(splits.train.x.shape[1:]),
                    **({"class_names": splits.class_names} if splits.class_names else {})},
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


@torch.no_grad()
def eval_batch_size(cfg: TrainConfig, model: nn.Module | None, x: Tensor, budget: int = 24 << 20) -> int:
    """The evaluation batch for ``model``: ``cfg.eval_batch_size`` on an accelerator; on the CPU at most
    that, and the largest power of two whose largest activation (the biggest output of any leaf module, for
    one input ``x``) fits in ``budget`` bytes — batches that stay in cache (on one core a small CNN evaluates
    about 1.8x faster at 256 than at 2000; an MLP keeps 2000). Evaluation is in eval mode, one example's
    output independent of the others: the built-in models give bit-identical logits at these batches on
    the CPU, so the recorded metrics are unchanged. A teacher serving stored outputs keeps
    ``cfg.eval_batch_size``."""
    cap = cfg.eval_batch_size
    if model is None or not getattr(model, "live", True) or module_device(model).type != "cpu":
        return cap
    largest = [0]

    def note(_m, _i, out):
        if isinstance(out, Tensor):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    hooks = [m.register_forward_hook(note) for m in model.modules() if not any(True for _ in m.children())]
    was = model.training
    try:
        model.eval()(x[:1].to(module_device(model)))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    if not largest[0]:
        return cap
    return max(1, min(cap, 1 << int(math.log2(max(1, budget // largest[0])))))


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
        try:
            model, name = create_model(cfg.model.name, **args), cfg.model.name
        except (KeyError, ValueError):
            raise
        except Exception as e:  # a user's model whose constructor fails: its error, in one line
            raise ValueError(f"model {cfg.model.name!r} failed to build with args {args}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from e
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
        check_consistent(cfg, teacher)
        teacher.num_classes = getattr(teacher, "num_classes", None) or n_cls
        return teacher, [state_sha256(teacher)]
    if not cfg.distill.teachers:
        raise ValueError("distill.teachers is empty — name at least one teacher file")
    files = teacher_files(cfg.distill.teachers)
    if len(files) == 1 and Path(files[0]).is_dir():  # a store of teacher outputs (top-k or full; store.py)
        from ..store import StoredTeacher

        stored = StoredTeacher(files[0])
        check_consistent(cfg, stored)
        stored.num_classes = n_cls
        return stored, [idn.file_sha256(Path(files[0]) / "manifest.json")]
    teacher = build_teacher(cfg.distill, n_cls)  # a missing or unreadable file: ModelFileError
    return teacher, [idn.file_sha256(p) for p in files]


def sample_shape(cfg: TrainConfig, splits: Splits) -> tuple[int, ...]:
    """The per-example shape the augmentations see: ``data.augment_shape`` (e.g. ``[16, 40]`` for context windows
    of 16 log-mel frames of 40 bands stored flat), else the training inputs' own shape."""
    return tuple(cfg.data.augment_shape or splits.train.x.shape[1:])


def _build_method(cfg: TrainConfig, model: nn.Module, teacher: Teacher | None, x_train: Tensor, out: Path,
                  w: dd.World = dd.SINGLE) -> Method:
    """The method by name with ``cfg.method_args`` (every method's settings; the config fills in kd's); its
    teacher serves what the method needs (``teacher_output``), from the run's store of the transfer set's
    outputs (``teacher_store/``, :func:`~darkknowledge.store.run_store`) when ``distill.cache`` is on, the
    transfer set is not augmented and the outputs are not precomputed already (rows looked up by position;
    written by rank 0 only, then read by the other ranks)."""
    name = cfg.method or ("kd" if cfg.distill is not None else "labels")
    mixing = [a["name"] for a in cfg.data.augment if a["name"] in ("mixup", "cutmix")]
    if mixing and not get_method(name).mixed_labels:
        raise ValueError(f"method {name!r} does not take the labels of a mixed batch ({mixing[0]} in data.augment); "
                         "methods that do: " + ", ".join(m for m in list_methods() if get_method(m).mixed_labels))
    serving = None
    if teacher is not None:
        serving = teacher.serving(get_method(name).teacher_output)
        if cfg.distill.cache and not cfg.data.augment and not serving.precomputed:
            path = out / "teacher_store"
            if w.main:
                (out / "teacher_cache.safetensors").unlink(missing_ok=True)  # the per-run cache's former file
                serving = run_store(serving, x_train, path, batch_size=cfg.eval_batch_size)
            dd.barrier(w)
            if not w.main:
                serving = run_store(serving, x_train, path, batch_size=cfg.eval_batch_size, write=False)
    return create_method(name, model, serving, **cfg.method_args)


def _batch(run: Run, x_all: Tensor, y_all: Tensor, idx: Tensor, device: torch.device) -> tuple[Tensor, Any]:
    """The batch at ``idx`` on the device, augmented (``data.augment``) with a seed fixed by (run seed, global
    step): the same on every rank and after a resume. A mixing augmentation returns the labels as
    :class:`~darkknowledge.data.augment.MixedTargets`. The method — and so a live teacher — sees exactly this
    batch (consistent teaching, Beyer et al. 2022)."""
    cfg = run.cfg
    x, y = x_all[idx], y_all[idx]
    if device.type != "cpu":
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if run.augment is not None:
        x, y = run.augment(x, y, seed=augment_seed(cfg.seed, run.state.global_step))
    if cfg.channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _where(st: State, step: int, train_data, idx: Tensor, ckpt_path: Path) -> str:
    """Where a failing step happened (built only when a step fails)."""
    return (f"at epoch {st.epoch + 1}, step {step + 1} (global step {st.global_step + 1}), batch of dataset "
            f"indices {train_data.index[idx[:8]].tolist()}...; the last good checkpoint "
            f"{ckpt_path if ckpt_path.exists() else '(none yet)'} is kept")




# --------------------------------------------------------------------------- building blocks


def prepare_data(cfg: DataConfig, seed: int = 0) -> Splits:
    """Load the dataset (a built-in one, or the user's files of ``cfg.format``), carve the validation
    split, and restrict the training split as configured."""
    splits = load_splits(cfg)
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
