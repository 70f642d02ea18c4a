"""The training state and exact resume: everything a killed run needs to continue bit-identically.

``checkpoint.pt`` holds the model, the method's own state (e.g. a feature map), optimiser, scheduler,
every RNG state, the position in the epoch, the per-epoch history, the best epoch so far, the config
and the sha256 of every teacher file. It is written atomically (a kill mid-write leaves the previous
checkpoint); :func:`load_checkpoint` refuses a checkpoint of another config or another teacher.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig, same_config
from ..utils import atomic_torch_save, get_rng_state, set_rng_state

__all__ = ["State", "RunExistsError", "CheckpointError", "TeacherMismatchError", "save_checkpoint",
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


def save_checkpoint(path: Path, st: State, cfg: TrainConfig, model, method, opt, sched, aug_gen: torch.Generator,
                    teacher_sha256: list[str], rank_rngs: list[dict[str, Any]] | None = None) -> None:
    """``rank_rngs``: every rank's RNG state under torchrun (rank 0's first); this process's otherwise."""
    st.tick()
    rngs = rank_rngs or [get_rng_state()]
    atomic_torch_save({"model": model.state_dict(), "method": method.extra_state(), "optimizer": opt.state_dict(),
                       "scheduler": sched.state_dict(), "rng": rngs[0], "aug_gen": aug_gen.get_state(),
                       "state": st.position(), "history": st.history, "best": st.best, "curve": st.curve,
                       "config": cfg.model_dump(), "teacher_sha256": teacher_sha256,
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
        from .distributed import WorldSizeError

        how = "a single process" if written == 1 else f"torchrun --nproc_per_node {written} (world size {written})"
        raise WorldSizeError(f"{path} was written by a run of {written} process(es) but this one has {world_size} — "
                             f"resume it with {how}, or start a new run in another out_dir")
    return ck


def restore(ck: dict[str, Any], model, method, opt, sched, aug_gen: torch.Generator, rank: int = 0) -> State:
    """Load a checkpoint's contents into the live objects (``rank``: whose RNG state); returns the loop state."""
    model.load_state_dict(ck["model"])
    method.load_state_dict({**method.state_dict(), **ck.get("method", {})})
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rank_rngs"][rank] if "rank_rngs" in ck else ck["rng"])
    aug_gen.set_state(ck["aug_gen"])
    return State(**ck["state"], history=ck["history"], best=ck["best"], curve=ck.get("curve", []))
