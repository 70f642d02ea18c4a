"""Teachers: any ``nn.Module`` (frozen), ensembles, and cached outputs behind one interface.

A teacher answers ``soft_targets(x, T, idx)`` — its distribution at temperature ``T`` for a batch
``x`` whose dataset indices are ``idx`` — and ``logits(x, idx)``. A live teacher runs its model
(eval mode, frozen, no grad); a :class:`CachedTeacher` looks the logits up by index, so the training
loop cannot tell them apart (the DistillKit idea). Outputs on disk: :mod:`darkknowledge.store`. A teacher's
identity is the sha256 of its weights (:func:`state_sha256`; per member: :meth:`Teacher.weights_sha256`).

Ensembles (Hinton et al. 2015, §2): at temperature ``T`` the arithmetic combination is
``p = (1/M) Σ_m softmax(v_m / T)`` (the paper's default); the geometric one is the renormalised
``Π_m softmax(v_m / T)^{1/M} = softmax(mean_m v_m / T)`` (exact: the log-normalisers cancel).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import check_temperature, scaled_logits
from .utils import module_device

__all__ = ["Teacher", "ModelTeacher", "Ensemble", "CachedTeacher", "as_teacher", "combine_members", "freeze",
           "state_sha256", "hash_tensor", "compute_member_logits", "member_logits_batches", "ManifestError",
           "write_manifest", "teacher_files"]

COMBINES = ("arithmetic", "geometric")


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and stop gradient to all its parameters."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def combine_members(member_logits: Tensor, temperature: float, combine: str = "arithmetic") -> Tensor:
    """Combine member logits ``[B, M, C]`` into one distribution ``[B, C]`` at temperature ``T``."""
    t = check_temperature(temperature)
    if member_logits.ndim != 3:
        raise ValueError(f"member logits must be [batch, members, classes], got {tuple(member_logits.shape)}")
    if combine == "arithmetic":
        return F.softmax(scaled_logits(member_logits, t, "member logits"), dim=-1).mean(dim=1)
    if combine == "geometric":
        return F.softmax(scaled_logits(member_logits.mean(dim=1), t, "member logits"), dim=-1)
    raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")


def hash_tensor(h: hashlib._Hash, t: Tensor) -> None:
    """Feed ``t``'s shape, dtype and bytes (C order) to ``h``, without copying a contiguous CPU tensor."""
    t = t.detach().cpu().contiguous()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    if t.numel():  # 0-dim buffers too
        h.update(t.reshape(-1).view(torch.uint8).numpy())


def state_sha256(module: nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, shapes, dtypes, values), in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        hash_tensor(h, t)
    return h.hexdigest()


class Teacher(nn.Module):
    """Base class: subclasses implement :meth:`member_logits` (``[B, M, C]``).

    A teacher declares what it can serve instead of being type-tested by the engine:

    * ``live``: ``True`` when it runs a model on any input (so it can label augmented views and evaluation
      splits); ``False`` when it serves outputs stored for the training split's rows, looked up by index only
      (``len(teacher)`` is then the number of rows it holds).
    * ``precomputed``: ``True`` when its outputs are already computed (held in memory or in a store), so that
      storing them once more for a run would only copy them.
    """

    combine: str = "arithmetic"
    num_classes: int | None = None
    live: bool = True
    precomputed: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.training = False  # a teacher is in eval mode from the start, not only after .train()

    def member_logits(self, x: Tensor, idx: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _members(self, x: Tensor, idx: Tensor | None) -> Tensor:
        # inference mode skips autograd bookkeeping entirely; the small result is cloned outside it so
        # that the loss may save it for the student's backward pass
        with torch.inference_mode():
            m = self.member_logits(x, idx).float()
        return m.clone()

    @torch.no_grad()
    def soft_targets(self, x: Tensor, temperature: float, idx: Tensor | None = None) -> Tensor:
        return combine_members(self._members(x, idx), temperature, self.combine)

    @torch.no_grad()
    def logits(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        """A single logit vector: the member's own for one model; for an ensemble the log of its
        ``T = 1`` distribution (arithmetic) or the mean logit (geometric)."""
        m = self._members(x, idx)
        if m.shape[1] == 1:
            return m[:, 0]
        if self.combine == "geometric":
            return m.mean(dim=1)
        return torch.log(combine_members(m, 1.0, "arithmetic").clamp_min(1e-30))

    @torch.no_grad()
    def log_probs(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        """``log p(c | x)`` of the ``T = 1`` distribution, normalised: arithmetic
        ``logsumexp_m log_softmax(v_m) − log M`` (the log of the mean distribution, without underflow),
        geometric ``log_softmax(mean_m v_m)`` (§2 of Hinton et al. 2015)."""
        m = self._members(x, idx)
        if self.combine == "geometric":
            return F.log_softmax(m.mean(dim=1), dim=-1)
        return torch.logsumexp(F.log_softmax(m, dim=-1), dim=1) - math.log(m.shape[1])

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x)

    def serving(self, output: str | None) -> Teacher:
        """The same frozen model(s) serving ``output`` (a model method such as ``"subclass_logits"``;
        ``None``: the class logits) — what a training method asks for (``Method.teacher_output``)."""
        if output == getattr(self, "output", None):
            return self
        raise ValueError(f"{type(self).__name__} cannot serve {output!r}")

    def weights_sha256(self) -> list[str]:
        """The sha256 of each member's weights (:func:`state_sha256`), the identity a store records: here the
        whole teacher's; a model's, each ensemble member's or a store's recorded list in the subclasses."""
        return [state_sha256(self)]

    def train(self, mode: bool = True) -> Teacher:  # a teacher is always in eval mode
        return super().train(False)


def _call(model: nn.Module, x: Tensor, output: str | None) -> Tensor:
    return model(x) if output is None else getattr(model, output)(x)


class ModelTeacher(Teacher):
    """A frozen single model. ``output`` names the model method whose result the teacher serves
    (default ``None``: ``model(x)``, the class logits; e.g. ``"subclass_logits"``)."""

    def __init__(self, model: nn.Module, num_classes: int | None = None, output: str | None = None):
        super().__init__()
        self.model = freeze(model)
        self.num_classes = num_classes
        self.output = output

    def serving(self, output: str | None) -> Teacher:
        if output == self.output:
            return self
        return ModelTeacher(self.model, self.num_classes, output)

    @torch.no_grad()
    def member_logits(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        return _call(self.model, x, self.output).unsqueeze(1)

    def weights_sha256(self) -> list[str]:
        return [state_sha256(self.model)]


class Ensemble(Teacher):
    """``Ensemble(models, combine="arithmetic" | "geometric")`` — see the module docstring."""

    def __init__(self, models: Sequence[nn.Module], combine: str = "arithmetic", output: str | None = None):
        super().__init__()
        if len(models) == 0:
            raise ValueError("an ensemble needs at least one model")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        self.members = nn.ModuleList(freeze(m) for m in models).eval()
        self.combine = combine
        self.output = output

    def serving(self, output: str | None) -> Teacher:
        if output == self.output:
            return self
        other = Ensemble(list(self.members), self.combine, output)
        other.num_classes = self.num_classes
        return other

    @torch.no_grad()
    def member_logits(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        outs = [_call(m, x, self.output) for m in self.members]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) != 1:
            raise ValueError(f"ensemble members disagree on output shape: {sorted(shapes)}")
        return torch.stack(outs, dim=1)

    def weights_sha256(self) -> list[str]:
        return [state_sha256(m) for m in self.members]


class CachedTeacher(Teacher):
    """Precomputed member logits ``[N, M, C]`` (or ``[N, C]``) held in memory, looked up by dataset index
    (on disk, the same is a :class:`~darkknowledge.store.StoredTeacher`)."""

    live = False
    precomputed = True

    def __init__(self, logits: Tensor, combine: str = "arithmetic"):
        super().__init__()
        if logits.ndim == 2:
            logits = logits.unsqueeze(1)
        if logits.ndim != 3:
            raise ValueError(f"cached logits must be [N, C] or [N, M, C], got {tuple(logits.shape)}")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        if not torch.isfinite(logits).all():
            raise FloatingPointError("cached teacher logits contain NaN or inf")
        self.register_buffer("table", logits.float().contiguous())
        self.combine = combine
        self.num_classes = logits.shape[-1]

    def __len__(self) -> int:
        return self.table.shape[0]

    def member_logits(self, x: Tensor | None, idx: Tensor | None = None) -> Tensor:
        if idx is None:
            raise ValueError("a cached teacher needs the batch's dataset indices (idx)")
        if int(idx.max()) >= self.table.shape[0] or int(idx.min()) < 0:
            raise IndexError(f"index out of range for a cache of {self.table.shape[0]} examples")
        return self.table[idx]


def as_teacher(obj: nn.Module | Teacher | Sequence[nn.Module], combine: str = "arithmetic") -> Teacher:
    """Wrap a module (or a list of modules, as an ensemble) as a :class:`Teacher`."""
    if isinstance(obj, Teacher):
        return obj
    if isinstance(obj, nn.Module):
        return ModelTeacher(obj)
    return Ensemble(list(obj), combine=combine)


def member_logits_batches(teacher: Teacher, x: Tensor, batch_size: int) -> Iterator[tuple[int, Tensor]]:
    """``(start, float32 member logits [b, M, C] on the CPU)`` of ``x`` in batches on the teacher's device; the
    teacher receives ``idx`` = the rows' positions in ``x``."""
    dev = module_device(teacher)
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size]
        with torch.inference_mode():
            yield i, teacher.member_logits(xb.to(dev), torch.arange(i, i + xb.shape[0])).float().cpu()


def compute_member_logits(teacher: Teacher, x: Tensor, batch_size: int = 2000) -> Tensor:
    """The teacher's member logits ``[N, M, C]`` (float32) on ``x``, in batches on its device; on the CPU."""
    return torch.cat([v for _, v in member_logits_batches(teacher, x, batch_size)])


# --------------------------------------------------------------------------- ensemble manifests

MANIFEST_KIND = "darkknowledge-ensemble"


class ManifestError(ValueError):
    """An ensemble manifest that cannot be used (unreadable, a member missing or changed)."""


def write_manifest(path, members: Sequence[dict], combine: str = "arithmetic", **extra) -> dict:
    """Write ``ensemble.json``: the members (``path`` relative to the manifest's folder, ``sha256``, ``seed``,
    ...) and the combination rule; :func:`teacher_files` expands it back into the member files."""
    import json
    import os
    from pathlib import Path

    from .utils import atomic_write_json

    base = Path(path).parent
    rows = [{**m, "path": os.path.relpath(m["path"], base)} for m in members]
    manifest = {"kind": MANIFEST_KIND, "version": 1, "combine": combine, "members": rows, **extra}
    atomic_write_json(path, json.loads(json.dumps(manifest)))
    return manifest


def teacher_files(paths: Sequence[str]) -> list[str]:
    """``distill.teachers`` with every ensemble manifest (``*.json``) replaced by its member files, each
    checked against the sha256 the manifest recorded (a changed or missing member is refused)."""
    import json
    from pathlib import Path

    from .data.common import sha256_file

    out: list[str] = []
    for p in paths:
        if not str(p).endswith(".json"):
            out.append(str(p))
            continue
        try:
            m = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ManifestError(f"ensemble manifest {p}: unreadable ({type(e).__name__})") from None
        if not isinstance(m, dict) or m.get("kind") != MANIFEST_KIND or not m.get("members"):
            raise ManifestError(f"{p} is not a darkknowledge ensemble manifest (written by `darkknowledge ensemble`)")
        for row in m["members"]:
            f = Path(p).parent / row["path"]
            if not f.is_file():
                raise ManifestError(f"ensemble manifest {p}: member {f} is missing")
            if row.get("sha256") and sha256_file(f) != row["sha256"]:
                raise ManifestError(f"ensemble manifest {p}: member {f} changed since the manifest was written "
                                    "(sha256 differs) — rerun `darkknowledge ensemble` to refresh it")
            out.append(str(f))
    return out
