"""The training loop: from labels or distilling from a teacher, resumable to the bit.

Read top to bottom: data → model → teacher → optimiser and schedule → (resume) → epochs of steps →
validation, checkpoint, model selection → test metrics of the selected model → run record.

* The validation split (seeded, carved from the training set) selects the reported epoch; the test
  set is only evaluated for reporting (per epoch when ``track_test`` is on, for curves).
* Every epoch (and every ``checkpoint_every_steps``) writes ``checkpoint.pt`` atomically with model,
  optimiser, scheduler, epoch, position in the epoch and every RNG state. Each epoch's order is a
  permutation drawn from ``(seed, epoch)``, so ``resume=True`` continues bit-identically.
* A NaN or inf loss stops the run naming the epoch, step and batch; the last good checkpoint stays.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .cache import cached_teacher
from .config import DataConfig, DistillConfig, OptimConfig, TrainConfig, same_config
from .data import Splits, load_dataset
from .methods import Distiller, create_method, get_method
from .metrics import evaluate, predict_logits
from .models import apply_max_norm, create_model, load_model, save_model
from .teachers import Ensemble, ModelTeacher, Teacher
from .transforms import random_shift
from .utils import (
    atomic_torch_save,
    atomic_write_json,
    get_rng_state,
    git_commit,
    machine_facts,
    seed_everything,
    set_rng_state,
)

__all__ = ["Distiller", "train", "prepare_data", "build_teacher", "TrainingDivergedError", "RunExistsError"]

log = logging.getLogger(__name__)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or inf."""


class RunExistsError(FileExistsError):
    """The output directory already holds a run and ``resume`` was not requested."""


# --------------------------------------------------------------------------- data


def prepare_data(cfg: DataConfig, seed: int = 0) -> Splits:
    """Load the dataset, carve the validation split, and restrict the training split as configured."""
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.val_size, cfg.split_seed)
    tr = splits.train
    keep = torch.ones(len(tr), dtype=torch.bool)
    for c in cfg.exclude_classes:
        keep &= tr.y != c
    if cfg.include_classes is not None:
        keep &= torch.isin(tr.y, torch.tensor(cfg.include_classes))
    tr = tr.subset(keep.nonzero().flatten())
    if cfg.fraction < 1:
        g = torch.Generator().manual_seed(cfg.split_seed + 1)
        n = max(1, int(round(cfg.fraction * len(tr))))
        tr = tr.subset(torch.randperm(len(tr), generator=g)[:n].sort().values)
    if len(tr) == 0:
        raise ValueError("the training split is empty after the class/fraction restrictions")
    return dataclasses.replace(splits, train=tr)


def build_teacher(cfg: DistillConfig, num_classes: int, output: str | None = None,
                  models: list[nn.Module] | None = None) -> Teacher:
    """Load the teacher checkpoint(s) (several make an :class:`Ensemble`); check the class count."""
    models = models if models is not None else [load_model(p) for p in cfg.teachers]
    for p, m in zip(cfg.teachers, models):
        out = getattr(m, "num_classes", None)
        if out is not None and out != num_classes:
            raise ValueError(f"teacher {p} has {out} classes but the student has {num_classes}")
    teacher = ModelTeacher(models[0], output=output) if len(models) == 1 else Ensemble(models, cfg.combine, output)
    teacher.num_classes = num_classes
    return teacher


# --------------------------------------------------------------------------- optimisation


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


# --------------------------------------------------------------------------- the loop


@dataclass
class _State:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0  # process CPU seconds (all threads): a load-independent measure of the work done
    seen: int = 0  # examples seen so far in this epoch
    sums: dict[str, float] = dataclasses.field(default_factory=dict)  # per-epoch loss sums


def _model_config(cfg: TrainConfig, num_classes: int) -> dict[str, Any]:
    args = dict(cfg.model.args)
    args.setdefault("num_classes", num_classes)
    return args


def train(cfg: TrainConfig, resume: bool = False, splits: Splits | None = None, progress: bool = True,
          track_train: bool = False, track_test: bool = False) -> dict[str, Any]:
    """Train ``cfg.model`` (distilling when ``cfg.distill`` is set) and return the run record.

    Writes to ``cfg.out_dir``: ``checkpoint.pt`` (resume state), ``best.safetensors`` (the model
    selected on validation), ``last.safetensors`` and ``run.json`` (the run record).
    """
    t_start = time.perf_counter()
    out = Path(cfg.out_dir)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not resume:
        raise RunExistsError(f"{out} already holds a run; pass --resume to continue it or choose another out_dir")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)

    # data
    splits = splits or prepare_data(cfg.data)
    train_data, n_cls = splits.train, splits.num_classes
    if len(train_data) == 0 or len(splits.test) == 0:
        raise ValueError(f"dataset {splits.name!r}: the training or test split is empty")
    if int(train_data.y.min()) < 0 or int(train_data.y.max()) >= n_cls:
        raise ValueError(f"training labels out of range 0..{n_cls - 1}")

    # model
    model_args = _model_config(cfg, n_cls)
    model = create_model(cfg.model.name, **model_args)
    if getattr(model, "num_classes", n_cls) != n_cls:
        raise ValueError(f"model has {model.num_classes} outputs but the dataset has {n_cls} classes")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    # method and teacher: the live teacher (class logits) is used for evaluation; the method's teacher
    # serves what the method needs, cached when the transfer set is not augmented
    method_name = cfg.method or ("kd" if cfg.distill is not None else "labels")
    method_cls = get_method(method_name)
    method_args = dict(cfg.method_args)
    teacher = train_teacher = None
    if cfg.distill is not None:
        d = cfg.distill
        models = [load_model(p) for p in d.teachers]
        teacher = build_teacher(d, n_cls, None, models)
        train_teacher = teacher if method_cls.teacher_output is None else build_teacher(
            d, n_cls, method_cls.teacher_output, models)
        if d.cache and cfg.data.augment_shift == 0:
            # cached rows are looked up by position within the training split
            train_teacher = cached_teacher(train_teacher, train_data.x, out / "teacher_cache.safetensors",
                                           cfg.eval_batch_size)
        if method_name == "kd":
            method_args = {"temperature": d.temperature, "w_soft": d.w_soft, "w_hard": d.w_hard, "kind": d.kind,
                           **method_args}
    distiller = create_method(method_name, model, train_teacher, **method_args)

    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    opt = build_optimizer(cfg.optim, [p for p in distiller.parameters() if p.requires_grad])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(cfg.optim, s, steps_per_epoch, cfg.epochs))
    aug_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    st, history, best = _State(), [], {"epoch": -1, "score": -math.inf}

    if resume and ckpt_path.exists():
        ck = _load_checkpoint(ckpt_path)
        if not same_config(ck.get("config"), cfg):
            changed = sorted(k for k in cfg.model_dump() if ck.get("config", {}).get(k) != cfg.model_dump()[k])
            raise RunExistsError(f"{ckpt_path} was written with a different config (differs in: {', '.join(changed)}); "
                                 f"resume with the same config or choose another out_dir")
        model.load_state_dict(ck["model"])
        distiller.load_state_dict({**distiller.state_dict(), **ck.get("method", {})})
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        aug_gen.set_state(ck["aug_gen"])
        st = _State(**ck["state"])
        history, best = ck["history"], ck["best"]
        log.info("resumed %s at epoch %d step %d", out, st.epoch, st.step_in_epoch)

    def tick() -> None:
        st.elapsed += time.perf_counter() - seg_start[0]
        st.cpu += time.process_time() - seg_start[1]
        seg_start[:] = [time.perf_counter(), time.process_time()]

    def save_checkpoint() -> None:
        tick()
        atomic_torch_save({"model": model.state_dict(), "method": distiller.extra_state(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "rng": get_rng_state(), "aug_gen": aug_gen.get_state(),
                           "state": dataclasses.asdict(st), "history": history, "best": best,
                           "config": cfg.model_dump()}, ckpt_path)

    seg_start = [time.perf_counter(), time.process_time()]
    test_teacher_logits = predict_logits(teacher, splits.test.x, cfg.eval_batch_size) if teacher is not None else None
    x_all, y_all = train_data.x, train_data.y
    model.train()
    while st.epoch < cfg.epochs:
        order = epoch_order(len(train_data), cfg.seed, st.epoch)
        if st.step_in_epoch == 0:
            st.sums, st.seen = {}, 0
        sums, t_epoch, seen_at_start = st.sums, time.perf_counter(), st.seen
        bar = tqdm(range(st.step_in_epoch, steps_per_epoch), desc=f"{cfg.name} epoch {st.epoch + 1}/{cfg.epochs}",
                   disable=None if progress else True, leave=False, file=sys.stderr)
        for step in bar:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x, y = x_all[idx], y_all[idx]
            if cfg.data.augment_shift:
                x = random_shift(x, cfg.data.augment_shift, aug_gen)
            where = (f"at epoch {st.epoch + 1}, step {step + 1} (global step {st.global_step + 1}), batch of "
                     f"dataset indices {train_data.index[idx[:8]].tolist()}...; the last good checkpoint "
                     f"{ckpt_path if ckpt_path.exists() else '(none yet)'} is kept")
            if cfg.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                    logits, losses = distiller(x, y, idx)
            except FloatingPointError as e:
                raise TrainingDivergedError(f"{e} {where}") from e
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"non-finite loss ({loss.item()}) {where}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            sched.step()
            apply_max_norm(model)
            st.step_in_epoch, st.global_step = step + 1, st.global_step + 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item() * len(idx)
            st.seen += len(idx)
            if step % 20 == 0:
                bar.set_postfix({k: f"{s / st.seen:.4f}" for k, s in sums.items()}
                                | {"samples/s": f"{(st.seen - seen_at_start) / (time.perf_counter() - t_epoch):.0f}"})
            if cfg.checkpoint_every_steps and st.step_in_epoch % cfg.checkpoint_every_steps == 0 \
                    and st.step_in_epoch < steps_per_epoch:
                save_checkpoint()
        bar.close()

        # end of epoch: validate, select, checkpoint
        row: dict[str, Any] = {"epoch": st.epoch + 1, "lr": opt.param_groups[0]["lr"],
                               "train_loss": {k: s / max(st.seen, 1) for k, s in sums.items()},
                               "samples_per_s": (st.seen - seen_at_start) / max(time.perf_counter() - t_epoch, 1e-9)}
        row["val"] = evaluate(model, splits.val.x, splits.val.y, batch_size=cfg.eval_batch_size) \
            if len(splits.val) else None
        if track_train:
            row["train"] = evaluate(model, x_all, y_all, batch_size=cfg.eval_batch_size)
        if track_test:
            row["test"] = evaluate(model, splits.test.x, splits.test.y, test_teacher_logits, cfg.eval_batch_size)
        history.append(row)
        score = _selection_score(row, cfg.select_metric)
        st.epoch, st.step_in_epoch = st.epoch + 1, 0
        if score > best["score"]:
            best = {"epoch": st.epoch, "score": score}
            save_model(model, out / "best.safetensors", cfg.model.name, model_args, {"epoch": st.epoch})
        save_checkpoint()
        if progress:
            v = row["val"]
            msg = f"[{cfg.name}] epoch {st.epoch}/{cfg.epochs}  " + "  ".join(
                f"{k} {s:.4f}" for k, s in row["train_loss"].items())
            if v:
                msg += f"  val acc {v['accuracy']:.4f}  val nll {v['nll']:.4f}"
            print(msg, file=sys.stderr, flush=True)

    # report the selected model
    save_model(model, out / "last.safetensors", cfg.model.name, model_args, {"epoch": st.epoch})
    selected = load_model(out / "best.safetensors")
    final = {
        "selected_epoch": best["epoch"],
        "val": evaluate(selected, splits.val.x, splits.val.y, batch_size=cfg.eval_batch_size) if len(splits.val)
        else None,
        "test": evaluate(selected, splits.test.x, splits.test.y, test_teacher_logits, cfg.eval_batch_size),
    }
    if teacher is not None:
        final["teacher_test"] = evaluate(teacher, splits.test.x, splits.test.y, batch_size=cfg.eval_batch_size)
    tick()
    record = {
        "name": cfg.name,
        "config": cfg.model_dump(),
        "seed": cfg.seed,
        "git_commit": git_commit(),
        "machine": machine_facts(),
        "dataset": {"name": splits.name, "train": len(train_data), "val": len(splits.val), "test": len(splits.test)},
        "wall_time_s": st.elapsed,
        "cpu_time_s": st.cpu,
        "epochs": history,
        "final": final,
    }
    atomic_write_json(out / "run.json", record)
    log.debug("run %s done in %.1fs", cfg.name, time.perf_counter() - t_start)
    return record


def _selection_score(row: dict[str, Any], metric: str) -> float:
    v = row.get("val")
    if not v:  # no validation split: the last epoch is selected
        return float(row["epoch"])
    return v["accuracy"] if metric == "accuracy" else -v["nll"]


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise RuntimeError(f"{path}: checkpoint is corrupt or unreadable ({e}); delete it to start over") from e
