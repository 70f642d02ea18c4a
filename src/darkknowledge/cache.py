"""Cached teacher outputs: logits computed once per transfer set, stored as safetensors.

A cache file records a fingerprint of the teacher weights and of the inputs, and the sha256 of the cached
values themselves. Loading checks both, so a cache made by another teacher or for other data is reported
as stale, and one whose values were altered (a header intact, the numbers not) as corrupt; either is
rebuilt by :func:`cached_teacher` with a warning instead of being used silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from .teachers import CachedTeacher, Teacher
from .utils import atomic_write_bytes

__all__ = ["CacheError", "StaleCacheError", "fingerprint", "state_sha256", "values_sha256", "compute_member_logits",
           "save_cache", "load_cache", "cached_teacher"]

log = logging.getLogger(__name__)


class CacheError(ValueError):
    """A cache file is corrupt or unreadable."""


class StaleCacheError(CacheError):
    """A cache file belongs to another teacher or another transfer set."""


def _hash_tensor(h: hashlib._Hash, t: Tensor) -> None:
    t = t.detach().contiguous().cpu()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim buffers too


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, t)
    return h.hexdigest()


def fingerprint(teacher: Teacher, x: Tensor) -> str:
    """sha256 over the teacher's parameters and buffers, its combine rule, and the inputs ``x``."""
    h = hashlib.sha256()
    h.update(type(teacher).__name__.encode() + getattr(teacher, "combine", "").encode()
             + str(getattr(teacher, "output", None)).encode())
    for name, t in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, t)
    _hash_tensor(h, x)
    return h.hexdigest()


@torch.no_grad()
def compute_member_logits(teacher: Teacher, x: Tensor, batch_size: int = 2000) -> Tensor:
    """The teacher's member logits ``[N, M, C]`` on ``x``, in batches on the teacher's device; returned on the CPU."""
    from .utils import module_device

    dev = module_device(teacher)
    return torch.cat([teacher.member_logits(x[i:i + batch_size].to(dev)).float().cpu()
                      for i in range(0, x.shape[0], batch_size)])


def values_sha256(logits: Tensor) -> str:
    h = hashlib.sha256()
    _hash_tensor(h, logits)
    return h.hexdigest()


def save_cache(path: str | os.PathLike, logits: Tensor, fp: str, combine: str) -> None:
    from safetensors.torch import save

    logits = logits.contiguous()
    # one metadata entry: safetensors keeps metadata in a hash map whose order varies between processes
    meta = json.dumps({"fingerprint": fp, "combine": combine, "values_sha256": values_sha256(logits)},
                      sort_keys=True)
    atomic_write_bytes(path, save({"member_logits": logits}, metadata={"darkknowledge_cache": meta}))


def load_cache(path: str | os.PathLike, expected_fingerprint: str | None = None) -> tuple[Tensor, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            logits = f.get_tensor("member_logits")
        meta = json.loads(meta["darkknowledge_cache"]) if "darkknowledge_cache" in meta else meta
    except Exception as e:
        raise CacheError(f"{path}: corrupt teacher cache ({e})") from e
    if expected_fingerprint is not None and meta.get("fingerprint") != expected_fingerprint:
        raise StaleCacheError(f"{path}: made by a different teacher or for different inputs")
    if meta.get("values_sha256") != values_sha256(logits):
        raise CacheError(f"{path}: the cached values do not match their checksum (altered or damaged)")
    if not torch.isfinite(logits).all():
        raise CacheError(f"{path}: cached logits contain NaN or inf")
    return logits, meta.get("combine", "arithmetic")


def cached_teacher(teacher: Teacher, x: Tensor, path: str | os.PathLike, batch_size: int = 2000,
                   write: bool = True) -> CachedTeacher:
    """A :class:`CachedTeacher` for inputs ``x`` (indexed 0..N-1), reusing ``path`` when it is valid
    (``write=False``: a missing or stale cache is computed in memory and not saved — another process owns it)."""
    path = Path(path)
    fp = fingerprint(teacher, x)
    if path.exists():
        try:
            logits, _ = load_cache(path, fp)
            if logits.shape[0] == x.shape[0]:
                return CachedTeacher(logits, combine=teacher.combine)
            log.warning("%s: cache holds %d rows, expected %d; rebuilding", path, logits.shape[0], x.shape[0])
        except CacheError as e:
            log.warning("%s; rebuilding", e)
    logits = compute_member_logits(teacher, x, batch_size)
    if write:
        save_cache(path, logits, fp, teacher.combine)
    return CachedTeacher(logits, combine=teacher.combine)
