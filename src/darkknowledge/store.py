"""Teacher outputs on disk for large transfer sets: fp16 memory-mapped shards, full or top-k, verified on load.

Hinton et al. (2015) §4: the soft targets of an expensive ensemble on a large transfer set are computed once
and reused by every student trained on it. :func:`write_store` runs the teacher over the transfer set once
and writes a store directory; :class:`StoredTeacher` serves it behind the :class:`~darkknowledge.teachers.Teacher`
interface (``member_logits(x, idx)``, ``soft_targets(x, T, idx)``, ``logits(x, idx)``), so training cannot tell
it from the live teacher. The members are combined at load, at any ``T``, exactly as a live ensemble (§2):
arithmetic ``mean_m softmax(v_m / T)`` or geometric ``softmax(mean_m v_m / T)``.

Layout of a store ``path/``::

    manifest.json                  format, rows N, classes C, members M, k, dtypes, combine, the sha256 of
                                   every member's weights, the data fingerprint, and per shard file its shape,
                                   size and sha256 (plus the manifest's own sha256)
    shard-00000.logits.npy         k = all: fp16 member logits [n, M, C]
    shard-00000.values.npy         top-k: fp16 [n, M, k], each member's k largest logits, descending
    shard-00000.indices.npy        top-k: int16 (int32 when C > 32768) [n, M, k], their classes
    shard-00000.fill.npy           top-k: fp16 [n, M], the logit given to every other class
    shard-00000.keys.npy           int64 [n]: blake2b-64 of each input row (content lookup, row checks)

**Top-k scheme** (per member ``m`` and row ``n``, teacher logits ``v ∈ R^C`` in float32). Let ``S`` be the
classes of the ``k`` largest logits and ``R`` the other ``C − k``. Stored: ``v_S`` (fp16) and

    f = logsumexp_{j∈R} v_j − log(C − k)                 (the log-mean-exp of the missing logits, fp16)

Loaded: ``ṽ_i = v_i`` for ``i ∈ S`` and ``ṽ_j = f`` for ``j ∈ R``. Since ``(C − k)·e^f = Σ_{j∈R} e^{v_j}``, the
normaliser is unchanged, so at ``T = 1``

    softmax(ṽ)_i = softmax(v)_i  (i ∈ S),   softmax(ṽ)_j = (1 − Σ_{i∈S} softmax(v)_i) / (C − k)  (j ∈ R):

the top-k probabilities are kept and the residual mass is spread equally over the other classes. At any
``T`` the soft targets ``softmax(ṽ / T)`` (Eq. 1) keep the top-k classes' ratios ``e^{(v_i − v_i')/T}`` exactly;
the tail gets ``(C − k)·e^{f/T}`` in place of ``Σ_{j∈R} e^{v_j/T}`` (by the power-mean inequality at least the
true tail weight for ``T > 1``, at most for ``T < 1``; equal when the tail logits are equal). The rule is exact
for ``k = C − 1`` (``f`` is then the missing logit itself) and ``k = C`` is stored as the full layout, so both
load bit-identically to ``fp16(v).float()``. Values are rounded to fp16 (relative error ≤ 2⁻¹¹); logits
beyond ±65504 or non-finite are refused at write time. Storage per row: ``2·M·C + 8`` bytes for all classes,
``M·(k·(2 + b) + 2) + 8`` for top-k (``b = 2`` bytes per class index, 4 when ``C > 32768``), so top-k saves
space only for ``k < (2C − 2)/(2 + b)``; see :func:`memory_report`. Members are stored separately (their own
top-k each) so that both combination rules stay available at every ``T``.

**Exact stores**: ``dtype="float32"`` stores the logits unrounded (4 bytes where fp16 takes 2, no range limit);
``keys=False`` leaves out the row keys (8 bytes a row), for a store read by position only. The training
engine's per-run store (:func:`run_store`, ``teacher_store/`` in the run folder when ``distill.cache`` is on) is
both, so training from it is bit-identical to training from the live teacher.

**Rows**: ``member_logits(x, idx)`` looks rows up by ``idx``, positions ``0..N−1`` of the ``x`` given to
:func:`write_store` — the engine passes positions in ``splits.train.x``, so write the store over
``splits.train.x`` (evaluation rows such as ``splits.val.x`` and ``splits.test.x`` may follow it). With
``check_rows`` the rows of ``x`` must be those ``idx`` names (their keys are compared). Without ``idx``
(evaluation, ``forward``) rows are found by content; rows not in the store go to ``fallback`` (a live
teacher with the same weights) or are an error.

**Verification** happens at open (``verify=True``): a missing, truncated or resized shard file, a sha256
mismatch, a wrong shape or dtype, out-of-range class indices or non-finite values raise :class:`StoreError`
naming the file; other member weights or another data fingerprint than expected raise :class:`StaleStoreError`.
Writing is atomic: everything goes into a hidden temporary directory beside ``path`` (``.NAME.tmp-*``) that is
renamed into place only when complete, and removed on any error (a killed process may leave that hidden
directory behind, never a partial store at ``path``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .data.common import sha256_file
from .teachers import (
    CachedTeacher,
    Teacher,
    as_teacher,
    compute_member_logits,
    hash_tensor,
    member_logits_batches,
    state_sha256,
)

__all__ = ["StoreError", "StaleStoreError", "CacheError", "StaleCacheError", "StoredTeacher", "write_store",
           "run_store", "compute_member_logits", "store_memory", "expected_bytes", "memory_report", "member_sha256",
           "state_sha256", "data_fingerprint", "row_keys"]

log = logging.getLogger(__name__)

KIND = "darkknowledge-teacher-store"
VERSION = 1
MANIFEST = "manifest.json"
FP16_MAX = 65504.0
_TORCH = {"float16": torch.float16, "float32": torch.float32}  # the stored logits' dtypes
FILL_RULE = "top-k logits kept; other classes get f = logsumexp(missing) - log(C - k) (exact mass at T = 1)"


class StoreError(ValueError):
    """A teacher store that is damaged, incomplete or unreadable."""


class StaleStoreError(StoreError):
    """A teacher store written by other teacher weights or for other data than expected."""


CacheError, StaleCacheError = StoreError, StaleStoreError  # their names in the former darkknowledge.cache


# --------------------------------------------------------------------------- identities


def data_fingerprint(x: Tensor) -> str:
    """sha256 over the inputs ``x`` (shape, dtype, values): the default data fingerprint of a store."""
    h = hashlib.sha256()
    hash_tensor(h, x)
    return h.hexdigest()


def member_sha256(teacher: Teacher | nn.Module | Sequence[nn.Module]) -> list[str]:
    """The sha256 of each member's weights, as a store records them (:meth:`Teacher.weights_sha256
    <darkknowledge.teachers.Teacher.weights_sha256>`): one per ensemble member, the model's for a single model,
    the whole teacher's otherwise; a store's recorded list for a store."""
    return as_teacher(teacher).weights_sha256()


def row_keys(x: Tensor) -> np.ndarray:
    """A 64-bit key per row of ``x``: blake2b over the row's bytes (C order), its shape and dtype."""
    xc = x.detach().cpu().contiguous()
    n = xc.shape[0]
    raw = xc.reshape(n, -1).view(torch.uint8).numpy() if xc.numel() else np.zeros((n, 0), np.uint8)
    base = hashlib.blake2b(f"{tuple(xc.shape[1:])}|{xc.dtype}|".encode(), digest_size=8)
    out = []
    for row in raw:
        h = base.copy()
        h.update(row)
        out.append(h.digest())
    return np.frombuffer(b"".join(out), dtype="<i8").astype(np.int64)


def _manifest_sha256(m: dict[str, Any]) -> str:
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _index_dtype(classes: int) -> np.dtype:
    return np.dtype(np.int16) if classes <= 32768 else np.dtype(np.int32)


def _arrays(layout: str, rows: int, members: int, classes: int, k: int | None, dtype: str = "float16",
            keys: bool = True) -> dict[str, tuple[tuple, np.dtype]]:
    """Each shard file's shape and dtype (``dtype``: of the logits; ``keys``: with the row keys)."""
    out: dict[str, tuple[tuple, np.dtype]] = {}
    if layout == "full":
        out["logits"] = ((rows, members, classes), np.dtype(dtype))
    else:
        out["values"] = ((rows, members, k), np.dtype(dtype))
        out["indices"] = ((rows, members, k), _index_dtype(classes))
        out["fill"] = ((rows, members), np.dtype(dtype))
    if keys:
        out["keys"] = ((rows,), np.dtype(np.int64))
    return out


# --------------------------------------------------------------------------- writing


def _encode(v: Tensor, k: int | None, dtype: str) -> dict[str, np.ndarray]:
    """Member logits ``[B, M, C]`` (float32) → the arrays of the layout (module docstring)."""
    if k is None:
        return {"logits": v.to(_TORCH[dtype]).numpy()}
    c = v.shape[-1]
    top = torch.topk(v, k, dim=-1, sorted=True)
    rest = v.scatter(-1, top.indices, float("-inf"))
    fill = torch.logsumexp(rest, dim=-1) - math.log(c - k)
    return {"values": top.values.to(_TORCH[dtype]).numpy(), "indices": top.indices.numpy().astype(_index_dtype(c)),
            "fill": fill.to(_TORCH[dtype]).numpy()}


def _save(path: Path, arr: np.ndarray) -> dict[str, Any]:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {"file": path.name, "shape": list(arr.shape), "dtype": arr.dtype.name, "bytes": path.stat().st_size,
            "sha256": sha256_file(path)}


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_store(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def _write_shards(teacher: Teacher, x: Tensor, tmp: Path, k: int | None, shard_size: int, batch_size: int,
                  progress: bool, dtype: str, keys: bool) -> tuple[list[dict[str, Any]], int, int, int | None]:
    from tqdm.auto import tqdm

    n, row_key = x.shape[0], row_keys(x) if keys else None
    limit = FP16_MAX if dtype == "float16" else math.inf
    shards: list[dict[str, Any]] = []
    buf: dict[str, np.ndarray] = {}
    members = classes = None
    start = filled = 0
    for i, v in tqdm(member_logits_batches(teacher, x, batch_size), total=-(-n // batch_size), desc="teacher store",
                     disable=not progress, leave=False):
        b = min(batch_size, n - i)
        if v.ndim != 3 or v.shape[0] != b or (members is not None and v.shape[1:] != (members, classes)):
            raise ValueError(f"the teacher's member logits for rows {i}.. have shape {tuple(v.shape)}; expected "
                             f"[{b}, members, classes] the same for every batch")
        bad = ~torch.isfinite(v) | (v.abs() > limit)
        if bad.any():
            row = i + int(bad.flatten(1).any(1).nonzero()[0])
            raise ValueError(f"the teacher's logits for row {row} are non-finite"
                             + (" or beyond the fp16 range ±65504" if dtype == "float16" else ""))
        if members is None:
            members, classes = v.shape[1], v.shape[2]
            if k is not None and k > classes:
                raise ValueError(f"k={k} exceeds the teacher's {classes} classes")
            k = None if k is None or k >= classes else k
        enc, j = _encode(v, k, dtype), 0
        if keys:
            enc["keys"] = row_key[i:i + b]
        while j < v.shape[0]:
            if not buf:
                rows = min(shard_size, n - start)
                buf = {name: np.empty(shape, dt) for name, (shape, dt)
                       in _arrays("full" if k is None else "topk", rows, members, classes, k, dtype, keys).items()}
            take = min(rows - filled, v.shape[0] - j)
            for name, arr in enc.items():
                buf[name][filled:filled + take] = arr[j:j + take]
            filled, j = filled + take, j + take
            if filled == rows:
                s = len(shards)
                files = {name: _save(tmp / f"shard-{s:05d}.{name}.npy", arr) for name, arr in buf.items()}
                shards.append({"start": start, "rows": filled, "files": files})
                start, filled, buf = start + filled, 0, {}
    return shards, members, classes, k


def write_store(teacher: Teacher | nn.Module | Sequence[nn.Module], x: Tensor, path: str | os.PathLike, *,
                k: int | None = None, shard_size: int = 65536, batch_size: int = 2000,
                dataset_fingerprint: str | None = None, progress: bool = False, overwrite: bool = False,
                dtype: str = "float16", keys: bool = True, weights_sha256: Sequence[str] | None = None
                ) -> dict[str, Any]:
    """Run ``teacher`` over the transfer set ``x`` once (Hinton et al. 2015 §4) and write a store at ``path``.

    ``k``: keep each member's ``k`` largest logits per row and give the other classes the fill logit
    ``f = logsumexp_{missing} v − log(C − k)`` (module docstring: exact top-k probabilities and residual mass
    at ``T = 1``); ``None`` (or ``k = C``) keeps all classes. Rows are grouped in shards of ``shard_size``; the
    teacher runs on batches of ``batch_size`` rows on its own device, receiving ``idx`` = their positions in
    ``x``. ``dataset_fingerprint``: recorded instead of the sha256 of ``x`` (e.g. a dataset name and version).
    ``overwrite``: replace an existing store (never another kind of directory). ``dtype``: ``"float16"`` (half
    the disk) or ``"float32"`` (the teacher's logits exactly). ``keys``: write each row's key (needed to find
    rows by content and for ``check_rows``; a store read by position only can skip them).
    ``weights_sha256``: :func:`member_sha256` of ``teacher`` when the caller has it already (not recomputed).
    Atomic: the store appears complete at ``path`` or not at all. Returns the manifest.
    """
    teacher, path = as_teacher(teacher), Path(path)
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty tensor of inputs [N, ...]")
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size}, {batch_size}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer or None (all classes), got {k!r}")
    if dtype not in _TORCH:
        raise ValueError(f"dtype must be one of {sorted(_TORCH)}, got {dtype!r}")
    if path.exists() and not (overwrite and _is_store(path)):
        raise FileExistsError(f"{path} already exists" + (" and is not a teacher store" if overwrite else
                                                           " — pass overwrite=True to replace the store"))
    members_sha = list(weights_sha256) if weights_sha256 is not None else member_sha256(teacher)
    fp = dataset_fingerprint if dataset_fingerprint is not None else data_fingerprint(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        shards, members, classes, k = _write_shards(teacher, x, tmp, k, shard_size, batch_size, progress, dtype, keys)
        m: dict[str, Any] = {
            "kind": KIND, "format_version": VERSION, "layout": "full" if k is None else "topk", "k": k,
            "rows": int(x.shape[0]), "classes": classes, "members": members, "dtype": dtype,
            "index_dtype": None if k is None else _index_dtype(classes).name, "combine": teacher.combine,
            "output": getattr(teacher, "output", None), "teacher": type(teacher).__name__,
            "member_sha256": members_sha, "fingerprint": fp,
            "fingerprint_source": "given" if dataset_fingerprint is not None else "sha256 of x",
            "input": {"row_shape": list(x.shape[1:]), "dtype": str(x.dtype)},
            "row_keys": "blake2b-64 of each input row's bytes, row shape and dtype" if keys else None,
            "fill_rule": FILL_RULE,
            "shard_size": shard_size, "shards": shards,
        }
        m["manifest_sha256"] = _manifest_sha256(m)
        with open(tmp / MANIFEST, "w") as f:
            f.write(json.dumps(m, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if path.exists():  # overwrite: the old store leaves only once the new one is complete
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return m


# --------------------------------------------------------------------------- reading


def _read_manifest(path: Path) -> tuple[bytes, dict[str, Any]]:
    f = path / MANIFEST
    if not path.is_dir():
        raise StoreError(f"{path}: no teacher store here (not a directory)")
    try:
        raw = f.read_bytes()
        m = json.loads(raw)
    except OSError:
        raise StoreError(f"{f}: manifest missing or unreadable — not a complete teacher store") from None
    except ValueError:
        raise StoreError(f"{f}: damaged manifest (not JSON)") from None
    if not isinstance(m, dict) or m.get("kind") != KIND:
        raise StoreError(f"{f}: not a darkknowledge teacher store manifest")
    if m.get("format_version") != VERSION:
        raise StoreError(f"{f}: format version {m.get('format_version')!r}; this darkknowledge reads {VERSION}")
    if m.get("manifest_sha256") != _manifest_sha256(m):
        raise StoreError(f"{f}: damaged manifest (its sha256 does not match its content)")
    return raw, m


def _open_file(path: Path, spec: dict[str, Any], shape: tuple, dtype: np.dtype, classes: int,
               verify: bool) -> np.ndarray:
    f = path / spec["file"]
    if not f.is_file():
        raise StoreError(f"{f}: shard file missing")
    size = f.stat().st_size
    if size != spec["bytes"]:
        what = "truncated" if size < spec["bytes"] else "wrong size"
        raise StoreError(f"{f}: {what} ({size} bytes, the manifest says {spec['bytes']})")
    if verify and sha256_file(f) != spec["sha256"]:
        raise StoreError(f"{f}: damaged (its sha256 checksum differs from the manifest's)")
    try:
        arr = np.load(f, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise StoreError(f"{f}: unreadable .npy ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
            from None
    if arr.shape != shape or arr.dtype != dtype:
        raise StoreError(f"{f}: shape {arr.shape} {arr.dtype}, expected {shape} {dtype}")
    if verify:
        for i in range(0, max(shape[0], 1), 16384):
            block = np.asarray(arr[i:i + 16384])
            if block.dtype.kind == "f" and not np.isfinite(block).all():
                raise StoreError(f"{f}: non-finite values (rows from {i})")
            if block.dtype.kind == "i" and block.ndim == 3 and block.size and (block.min() < 0 or block.max() >= classes):
                raise StoreError(f"{f}: class indices outside 0..{classes - 1} (rows from {i})")
    return arr


class StoredTeacher(Teacher):
    """A :class:`Teacher` serving a store written by :func:`write_store` (formulas: module docstring).
    It is ``precomputed``, and ``live`` only with a ``fallback``.

    ``expected_member_sha256``: the sha256 of each member's weights the store must have been written by (e.g.
    ``member_sha256(live_teacher)``; a single string for one model); ``expected_fingerprint``: the data
    fingerprint (``data_fingerprint(x)`` or the string given to :func:`write_store`). A mismatch is a
    :class:`StaleStoreError`; damage a :class:`StoreError`. ``verify``: hash and scan every shard file at open
    (sizes, shapes and dtypes are always checked). ``check_rows``: with ``idx``, require the rows of ``x`` to
    be the stored rows (off for augmented inputs; ``None``: on when the store has row keys — a store written
    with ``keys=False`` is read by position only). ``fallback``: a live teacher with the same weights for
    inputs not in the store (evaluation splits). Output: float32 ``[B, M, C]`` on ``x``'s device.
    """

    precomputed = True

    def weights_sha256(self) -> list[str]:
        return list(self.manifest["member_sha256"])

    def __init__(self, path: str | os.PathLike, expected_member_sha256: str | Sequence[str] | None = None,
                 expected_fingerprint: str | None = None, *, verify: bool = True, check_rows: bool | None = None,
                 fallback: Teacher | nn.Module | Sequence[nn.Module] | None = None):
        super().__init__()
        self.path = Path(path)
        self.live = fallback is not None  # by index only, unless a live teacher answers for other inputs
        raw, m = _read_manifest(self.path)
        self.manifest = m
        if expected_member_sha256 is not None:
            want = [expected_member_sha256] if isinstance(expected_member_sha256, str) else list(expected_member_sha256)
            if want != m.get("member_sha256"):
                raise StaleStoreError(f"{self.path}: stale teacher store — written by other teacher weights (member "
                                      f"sha256 {_short(m.get('member_sha256') or [])}, expected {_short(want)}); rewrite it")
        if expected_fingerprint is not None and expected_fingerprint != m.get("fingerprint"):
            raise StaleStoreError(f"{self.path}: stale teacher store — written for other data (fingerprint "
                                  f"{str(m.get('fingerprint'))[:12]}…, expected {expected_fingerprint[:12]}…); rewrite it")
        try:
            self.rows, self.members, self.num_classes = int(m["rows"]), int(m["members"]), int(m["classes"])
            self.k, self.layout, self.combine, self.output = m["k"], m["layout"], m["combine"], m["output"]
            self.dtype, has_keys = m.get("dtype", "float16"), m.get("row_keys") is not None
            specs = [(int(s["start"]), int(s["rows"]), s["files"]) for s in m["shards"]]
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{self.path / MANIFEST}: damaged manifest ({type(e).__name__}: {e})") from None
        if [s for s, _, _ in specs] != list(np.cumsum([0] + [r for _, r, _ in specs])[:-1]) \
                or sum(r for _, r, _ in specs) != self.rows:
            raise StoreError(f"{self.path / MANIFEST}: the shards do not cover rows 0..{self.rows - 1}")
        if self.dtype not in _TORCH:
            raise StoreError(f"{self.path / MANIFEST}: logits dtype {self.dtype!r}, expected one of {sorted(_TORCH)}")
        if check_rows and not has_keys:
            raise StoreError(f"{self.path}: written without row keys (read by position only) — open it with "
                             "check_rows=False")
        self._shards: list[dict[str, np.ndarray]] = []
        for _, rows, files in specs:
            layout = _arrays(self.layout, rows, self.members, self.num_classes, self.k, self.dtype, has_keys)
            if set(files) != set(layout):
                raise StoreError(f"{self.path / MANIFEST}: shard files {sorted(files)}, expected {sorted(layout)}")
            self._shards.append({name: _open_file(self.path, files[name], shape, dt, self.num_classes, verify)
                                 for name, (shape, dt) in layout.items()})
        self._files = [files for _, _, files in specs]
        self._starts = np.array([s for s, _, _ in specs], dtype=np.int64)
        # 8 bytes a row, in memory; the content index (16 bytes a row) is built at the first lookup
        self._keys = np.concatenate([np.asarray(s["keys"]) for s in self._shards]) if has_keys else None
        self._order: np.ndarray | None = None
        self.check_rows = has_keys if check_rows is None else check_rows
        self.fallback = as_teacher(fallback, combine=self.combine) if fallback is not None else None
        if self.fallback is not None and member_sha256(self.fallback) != m["member_sha256"]:
            raise StaleStoreError(f"{self.path}: the fallback teacher's weights are not the ones the store was "
                                  "written by (member sha256 differ)")
        # the store's identity in state_dict, so that state_sha256 (run records, resume checks) tells stores apart
        self.register_buffer("store_sha256", torch.tensor(list(hashlib.sha256(raw).digest()), dtype=torch.uint8))

    def __len__(self) -> int:
        return self.rows

    def extra_repr(self) -> str:
        return f"{self.path}, rows={self.rows}, members={self.members}, classes={self.num_classes}, k={self.k}"

    def _gather(self, rows: np.ndarray) -> Tensor:
        """Reconstructed float32 member logits ``[len(rows), M, C]`` of store rows ``rows``."""
        out = np.empty((rows.shape[0], self.members, self.num_classes), dtype=np.float32)
        which = np.searchsorted(self._starts, rows, side="right") - 1
        for s in np.unique(which):
            sel = np.nonzero(which == s)[0]
            local, sh = rows[sel] - self._starts[s], self._shards[s]
            if self.layout == "full":
                block, name = sh["logits"][local].astype(np.float32), "logits"
            else:
                block = np.repeat(sh["fill"][local].astype(np.float32)[..., None], self.num_classes, axis=-1)
                np.put_along_axis(block, sh["indices"][local].astype(np.int64), sh["values"][local].astype(np.float32),
                                  axis=-1)
                name = "values"
            if not np.isfinite(block).all():
                raise StoreError(f"{self.path / self._files[s][name]['file']}: non-finite values")
            out[sel] = block
        return torch.from_numpy(out)

    def _find(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Store rows holding the inputs ``x`` (by content), and which were found."""
        if self._keys is None:
            raise ValueError(f"{self.path}: written without row keys — look its rows up by position (idx)")
        if self._order is None:
            self._order = np.argsort(self._keys, kind="stable")
            self._sorted = self._keys[self._order]
        q = row_keys(x)
        pos = np.minimum(np.searchsorted(self._sorted, q), len(self._sorted) - 1)
        found = self._sorted[pos] == q
        return self._order[pos], found

    def member_logits(self, x: Tensor | None, idx: Tensor | None = None) -> Tensor:
        dev = x.device if isinstance(x, Tensor) else self.store_sha256.device
        if idx is not None:
            rows = np.asarray(torch.as_tensor(idx).detach().cpu().reshape(-1), dtype=np.int64)
            if rows.size and (rows.min() < 0 or rows.max() >= self.rows):
                raise IndexError(f"index out of range for a teacher store of {self.rows} rows ({self.path})")
            if self.check_rows and isinstance(x, Tensor):
                bad = np.nonzero(row_keys(x) != self._keys[rows])[0]
                if bad.size:
                    raise ValueError(
                        f"{self.path}: input row {int(bad[0])} of the batch is not store row {int(rows[bad[0]])} that "
                        "idx names — write the store over the training split in order (positions 0..N-1 of "
                        "splits.train.x); augmented inputs: StoredTeacher(..., check_rows=False)")
            return self._gather(rows).to(dev)
        if x is None:
            raise ValueError("a stored teacher needs the batch's dataset indices (idx) or its inputs x")
        rows, found = self._find(x)
        if found.all():
            return self._gather(rows).to(dev)
        if self.fallback is None:
            raise ValueError(f"{self.path}: {int((~found).sum())} of {len(found)} input rows are not in the store — "
                             "write the store over these inputs too (e.g. splits.val.x and splits.test.x after "
                             "splits.train.x) or give StoredTeacher(..., fallback=live teacher)")
        out = torch.empty(len(found), self.members, self.num_classes)
        out[torch.from_numpy(found)] = self._gather(rows[found])
        miss = torch.from_numpy(~found).to(x.device)
        out[torch.from_numpy(~found)] = self.fallback.member_logits(x[miss]).float().cpu()
        return out.to(dev)


def _short(shas: Sequence[str]) -> str:
    return "[" + ", ".join(str(s)[:12] + "…" for s in shas) + "]"


# --------------------------------------------------------------------------- the engine's per-run store


def _check_made_by(st: StoredTeacher, teacher: Teacher, rows: int) -> StoredTeacher:
    """``st`` if it holds ``teacher``'s exact outputs (class, combine, output) for ``rows`` rows, else stale."""
    want = {"teacher": type(teacher).__name__, "combine": teacher.combine, "output": getattr(teacher, "output", None),
            "rows": rows, "layout": "full", "dtype": "float32"}
    got = {k: st.manifest.get(k) for k in want}
    if got != want:
        diff = ", ".join(f"{k} {got[k]!r} (expected {want[k]!r})" for k in want if got[k] != want[k])
        raise StaleStoreError(f"{st.path}: stale teacher store — {diff}")
    return st


def run_store(teacher: Teacher, x: Tensor, path: str | os.PathLike, *, batch_size: int = 2000, write: bool = True,
              weights_sha256: Sequence[str] | None = None, fingerprint: str | None = None) -> Teacher:
    """The teacher's outputs on the transfer set ``x`` (rows ``0..N−1`` by position), computed once: the store at
    ``path`` (the engine's ``teacher_store/``) if it holds them, else written there first — full float32 member
    logits without row keys, so training from it is bit-identical to training from the live teacher.

    A store by another teacher (:func:`member_sha256`, class, combine, output), for other inputs
    (:func:`data_fingerprint`; either given when the caller has it: hashed once) or damaged (checksum, size,
    shape) is rewritten with a warning naming why. ``write=False`` (another process owns ``path``): a missing or
    unusable store is computed in memory instead (a :class:`~darkknowledge.teachers.CachedTeacher`)."""
    path = Path(path)
    shas = list(weights_sha256) if weights_sha256 is not None else member_sha256(teacher)
    fp = fingerprint if fingerprint is not None else data_fingerprint(x)
    if path.exists():
        try:
            return _check_made_by(StoredTeacher(path, shas, fp, check_rows=False), teacher, x.shape[0])
        except StoreError as e:
            log.warning("%s; rewriting it", e)
    if not write:
        return CachedTeacher(compute_member_logits(teacher, x, batch_size), combine=teacher.combine)
    if path.is_dir() and not _is_store(path):  # the engine's own folder, damaged beyond its manifest
        shutil.rmtree(path)
    write_store(teacher, x, path, batch_size=batch_size, dataset_fingerprint=fp, overwrite=True, dtype="float32",
                keys=False, weights_sha256=shas)
    return StoredTeacher(path, verify=False, check_rows=False)


# --------------------------------------------------------------------------- memory


def store_memory(path: str | os.PathLike) -> int:
    """Bytes on disk of the store at ``path`` (shard files and manifest)."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def _npy_bytes(shape: tuple, dtype: np.dtype) -> int:
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return len(head.getvalue()) + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def expected_bytes(rows: int, classes: int, members: int, k: int | None = None, shard_size: int = 65536) -> int:
    """Exact bytes of a store's shard files (``.npy`` headers included, the manifest not): per row
    ``2·M·C + 8`` for all classes, ``M·(k·(2 + b) + 2) + 8`` for top-k (``b`` = 2 bytes per class index, 4
    when C > 32768)."""
    k = None if k is None or k >= classes else k
    total = 0
    for start in range(0, rows, shard_size):
        n = min(shard_size, rows - start)
        total += sum(_npy_bytes(s, dt) for s, dt in
                     _arrays("full" if k is None else "topk", n, members, classes, k).values())
    return total


def memory_report(rows: int, classes: int, members: int, ks: Sequence[int | None] = (1, 5, 10, None),
                  shard_size: int = 65536) -> list[dict[str, Any]]:
    """Disk (and page-cache) size of a store for each ``k`` (``None``: all classes), beside a float32 table
    ``[rows, members, classes]`` as :class:`~darkknowledge.teachers.CachedTeacher` holds in memory."""
    f32 = rows * members * classes * 4
    out = []
    for k in ks:
        b = expected_bytes(rows, classes, members, k, shard_size)
        out.append({"k": "all" if k is None or k >= classes else k, "bytes": b, "MB": round(b / 1e6, 2),
                    "bytes_per_row": round(b / rows, 1), "vs_float32": round(b / f32, 4)})
    return out
