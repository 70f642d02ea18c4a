"""One run on many processes: ``torchrun`` + :class:`~torch.nn.parallel.DistributedDataParallel`.

``torchrun --nproc_per_node N -m darkknowledge train|distill ...`` (or several nodes with torchrun's usual
``--nnodes / --rdzv_endpoint`` flags) sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`setup` then
joins the process group — gloo on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``).

How a step is shared, so that N processes train exactly like one process with the same global batch:

* every rank draws the same seeded epoch order and builds the same global batch of ``batch_size`` examples
  (augmentation included, from the same generator), then keeps its disjoint shard ``batch[rank::N]``;
* rank ``r`` scales its (batch-mean) loss by ``N · n_r / B``: DDP averages gradients over ranks, so the
  update is the gradient of the global batch mean — the single-process update, up to float summation order;
* the logged losses are summed over ranks (one small all-reduce per step), so every rank sees the same
  numbers, and a NaN stops every rank at the same step;
* the teacher is frozen and never synchronised (its parameters and buffers are excluded from DDP); its
  cache of transfer-set outputs is written once by rank 0 and read by the others;
* rank 0 alone validates, selects, writes checkpoints, metrics and the run record; every rank's RNG state
  goes into the checkpoint, so a resume with the same world size continues exactly. A resume with another
  world size is refused with a clear error.

Losses that depend on the whole batch (the subclass auxiliary loss, batch norm statistics) are computed per
rank shard: such runs are not equivalent to one process, only close.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["World", "SINGLE", "setup", "teardown", "world", "shard", "wrap", "reduce_sums", "gather_objects",
           "broadcast_object", "barrier", "WorldSizeError"]


class WorldSizeError(ValueError):
    """A checkpoint written by a run with another number of processes."""


@dataclass(frozen=True)
class World:
    """The process group as the training loop sees it (``size == 1``: an ordinary single process)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def record(self) -> dict[str, Any]:
        return {"world_size": self.size, "backend": self.backend}


#: a single process (no process group)
SINGLE = World()


def world() -> World:
    """The current process group (a single process when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend())


def setup(device: torch.device) -> tuple[World, torch.device, bool]:
    """Join the process group described by torchrun's environment, if any.

    Returns the world, the device of this rank (``cuda:LOCAL_RANK`` for CUDA) and whether this call created
    the group (and so must :func:`teardown` it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        return World(), device, False
    created = False
    if not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    return world(), device, created


def teardown(created: bool, ok: bool = True) -> None:
    """Leave the group this process created; after a normal end every rank first waits for the others (a rank
    that closed its connections while another still read the last broadcast would abort that one)."""
    if created and dist.is_initialized():
        if ok:
            dist.barrier()
        # free this run's DDP wrapper (its reducer holds the group) while the group and the interpreter are alive,
        # not at interpreter exit: a rank once aborted at exit ("terminate called without an active exception")
        gc.collect()
        dist.destroy_process_group()


def shard(w: World, x: Tensor, y: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor, int, float]:
    """This rank's shard ``batch[rank::N]`` of a global batch of ``B``: ``(x, y, idx, n_r, N · n_r / B)``,
    the last being the factor for its mean loss.

    A rank whose shard is empty (a last batch smaller than the world) takes one example with ``n_r = 0``
    and factor 0, so it still joins the gradient all-reduce."""
    if not w.distributed:
        return x, y, idx, len(idx), 1.0
    b = len(idx)
    sel = slice(w.rank, None, w.size)
    xs, ys, ids = x[sel], y[sel], idx[sel]
    if len(ids) == 0:
        return x[:1], y[:1], idx[:1], 0, 0.0
    return xs, ys, ids, len(ids), w.size * len(ids) / b


def wrap(method: nn.Module, w: World, device: torch.device) -> nn.Module:
    """``method`` under DDP (the teacher's parameters and buffers excluded), or ``method`` itself."""
    if not w.distributed:
        return method
    from torch.nn.parallel import DistributedDataParallel as DDP

    ignore = [n for n, _ in method.named_parameters() if n.startswith("teacher.")] + \
             [n for n, _ in method.named_buffers() if n.startswith("teacher.")]
    DDP._set_params_and_buffers_to_ignore_for_model(method, ignore)
    ids = [device.index] if device.type == "cuda" else None
    return DDP(method, device_ids=ids)


def reduce_sums(w: World, values: Tensor) -> Tensor:
    """Sum of ``values`` over ranks (a copy on every rank); ``values`` itself when single-process."""
    if not w.distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out)
    return out


def gather_objects(w: World, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list when single-process)."""
    if not w.distributed:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(w: World, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not w.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(w: World) -> None:
    if w.distributed:
        dist.barrier()
