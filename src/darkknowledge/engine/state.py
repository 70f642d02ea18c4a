"""The training state and exact resume: everything a killed run needs to continue bit-identically.

:class:`Run` is a run in progress as the loop and its callbacks see it (config, splits, model, method,
teacher, optimiser, :class:`State`); :class:`State` is where the loop is, and what the checkpoint keeps.

``checkpoint.pt`` holds the model, the method's own state (e.g. a feature map), optimiser, scheduler,
every RNG state, the position in the epoch, the per-epoch history, the best epoch so far, the config
and the sha256 of every teacher file. It is written atomically (a kill mid-write leaves the previous
checkpoint); :func:`load_checkpoint` refuses a checkpoint of another config or another teacher.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..config import TrainConfig, same_config
from ..metrics import predict_logits
from ..utils import atomic_torch_save, get_rng_state, set_rng_state
from . import distributed as dd
from .distributed import WorldSizeError

if TYPE_CHECKING:
    from ..data import Splits
    from ..methods import Method
    from ..teachers import Teacher

__all__ = ["Run", "State", "RunExistsError", "CheckpointError", "TeacherMismatchError", "save_checkpoint",
           "load_checkpoint", "restore"]


class RunExistsError(FileExistsError):
    """The output directory already holds a run (or another config's checkpoint) and ``resume`` was not
    requested or cannot apply."""


class CheckpointError(RuntimeError):
    """``checkpoint.pt`` is corrupt or unreadable."""


class TeacherMismatchError(ValueError):
    """The teacher file changed between a run's start and its resume."""


@dataclass
class State:
    """Where the loop is, and the clocks: ``elapsed`` wall seconds and ``cpu`` process-CPU seconds (a
    load-independent measure of the work), both accumulated across resumes."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    seen: int = 0  # examples seen so far in this epoch
    sums: dict[str, float] = dataclasses.field(default_factory=dict)  # per-epoch loss sums
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: dict[str, Any] = dataclasses.field(default_factory=lambda: {"epoch": -1, "score": float("-inf")})
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # test metrics every N steps

    def __post_init__(self) -> None:
        self._seg = (time.perf_counter(), time.process_time())

    def tick(self) -> None:
        """Add the time since the last tick to the clocks."""
        now = (time.perf_counter(), time.process_time())
        self.elapsed += now[0] - self._seg[0]
        self.cpu += now[1] - self._seg[1]
        self._seg = now

    def position(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("epoch", "step_in_epoch", "global_step", "elapsed", "cpu", "seen",
                                               "sums")}


@dataclass
class Run:
    """A run in progress: what the loop and its callbacks share (see :mod:`.callbacks`).

    ``spec``: the student's model name and constructor arguments (for the saved files); ``eval_batch`` /
    ``teacher_eval_batch``: the evaluation batches chosen for student and teacher (:func:`eval_batch_size`);
    ``test_teacher_logits``: the teacher's test-set logits (rank 0; ``None`` without a teacher that can
    answer for the test inputs), computed once for agreement and the teacher's test metrics."""

    cfg: TrainConfig
    out: Path
    splits: Splits
    model: nn.Module
    spec: tuple[str, dict[str, Any]]
    method: Method
    teacher: Teacher | None
    teacher_sha: list[str]
    world: dd.World
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    state: State
    eval_batch: int
    teacher_eval_batch: int
    track_train: bool = False
    track_test: bool = False
    test_teacher_logits: Tensor | None = None
    epoch_clock: tuple[float, int] = (0.0, 0)  # (perf_counter, examples seen) when this epoch (re)started
    #: the batch augmentations of ``cfg.data.augment`` (:func:`~darkknowledge.data.augment.build_augment`), or None
    augment: Any = None
    #: the run's identity (:func:`~.identity.run_identity`), kept in the checkpoint and the record
    identity: dict[str, Any] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.splits.train) / self.cfg.batch_size)

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def finished(self) -> bool:
        st, cfg = self.state, self.cfg
        return st.epoch >= cfg.epochs or bool(cfg.max_steps and st.global_step >= cfg.max_steps)

    def checkpoint(self) -> None:
        """``checkpoint.pt`` (atomic, rank 0) with every rank's RNG state, so that a resume continues each exactly."""
        rngs = dd.gather_objects(self.world, get_rng_state())
        if self.world.main:
            save_checkpoint(self.ckpt_path, self.state, self.cfg, self.model, self.method, self.opt, self.sched,
                            self.teacher_sha, rngs, self.identity)

    def teacher_logits(self, x: Tensor) -> Tensor | None:
        """The teacher's logits on ``x``; ``None`` without a teacher or when it serves stored outputs that do
        not cover ``x`` (e.g. a :class:`CachedTeacher`, which answers for training rows by index only)."""
        if self.teacher is None:
            return None
        try:
            return predict_logits(self.teacher, x, self.teacher_eval_batch)
        except ValueError:
            if self.teacher.live:
                raise
            return None


def save_checkpoint(path: Path, st: State, cfg: TrainConfig, model, method, opt, sched,
                    teacher_sha256: list[str], rank_rngs: list[dict[str, Any]] | None = None,
                    identity: dict[str, Any] | None = None) -> None:
    """``rank_rngs``: every rank's RNG state under torchrun (rank 0's first); this process's otherwise;
    ``identity``: the run's (:mod:`.identity`), compared on resume."""
    st.tick()
    rngs = rank_rngs or [get_rng_state()]
    atomic_torch_save({"model": model.state_dict(), "method": method.extra_state(), "optimizer": opt.state_dict(),
                       "scheduler": sched.state_dict(), "rng": rngs[0],
                       "state": st.position(), "history": st.history, "best": st.best, "curve": st.curve,
                       "config": cfg.model_dump(), "teacher_sha256": teacher_sha256,
                       **({"identity": identity} if identity is not None else {}),
                       **({"world_size": len(rngs), "rank_rngs": rngs} if len(rngs) > 1 else {})}, path)


def load_checkpoint(path: Path, cfg: TrainConfig, teacher_sha256: list[str], world_size: int = 1) -> dict[str, Any]:
    """Read ``path`` and check it belongs to ``cfg``, to the same teacher files and to a run of
    ``world_size`` processes."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ck, dict) or "model" not in ck:
            raise ValueError("not a darkknowledge checkpoint")
    except Exception as e:
        raise CheckpointError(f"{path}: checkpoint is corrupt or unreadable ({type(e).__name__}) — delete it "
                              "to start the run over") from None
    if not same_config(ck.get("config"), cfg):
        old = ck.get("config") or {}
        changed = sorted(k for k, v in cfg.model_dump().items() if old.get(k) != v)
        raise RunExistsError(f"{path} was written with a different config (differs in: {', '.join(changed)}) — "
                             "resume with the same config or choose another out_dir")
    old_sha = ck.get("teacher_sha256")
    if old_sha is not None and old_sha != teacher_sha256:
        raise TeacherMismatchError(f"{path}: the teacher changed since this run started (sha256 "
                                   f"{', '.join(s[:12] for s in old_sha)} then, "
                                   f"{', '.join(s[:12] for s in teacher_sha256)} now) — restore the original "
                                   "teacher file or start a new run")
    written = ck.get("world_size", 1)
    if written != world_size:
        how = "a single process" if written == 1 else f"torchrun --nproc_per_node {written} (world size {written})"
        raise WorldSizeError(f"{path} was written by a run of {written} process(es) but this one has {world_size} — "
                             f"resume it with {how}, or start a new run in another out_dir")
    return ck


def restore(ck: dict[str, Any], model, method, opt, sched, rank: int = 0) -> State:
    """Load a checkpoint's contents into the live objects (``rank``: whose RNG state); returns the loop state."""
    model.load_state_dict(ck["model"])
    method.load_state_dict({**method.state_dict(), **ck.get("method", {})})
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rank_rngs"][rank] if "rank_rngs" in ck else ck["rng"])
    return State(**ck["state"], history=ck["history"], best=ck["best"], curve=ck.get("curve", []))
