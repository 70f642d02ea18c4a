"""A run's identity: the content of its inputs, so that a finished thing is reused only when all of it matches.

``run.json`` (and ``checkpoint.pt``) record ``identity``::

    {"version": 1, "code": CODE_VERSION,
     "config": sha256 of the normalised config,
     "data": {role: sha256 of each file of data.files} (empty for a built-in dataset),
     "splits": sha256 of the tensors passed in as ``splits=`` (dk.distill, experiments), or None,
     "teachers": [sha256 of each teacher file: checkpoints, ensemble.json's members, a store's manifest]}

and ``weights_sha256`` (of ``best.safetensors`` when the run finished). A finished run, a resumed checkpoint,
a sweep cell, an ensemble member or a reproduce record is reused only when every part that both sides know
matches (:func:`describe_change`); otherwise the caller refuses with one line naming what changed, or reruns
when the user asked for it (``--overwrite``).

* **The normalised config** (:func:`config_key`) leaves out where things are — ``out_dir``, ``data.data_dir``,
  the paths of ``data.files`` and ``distill.teachers`` (their content is compared instead) and the expected
  ``data.sha256`` checks — so moving or copying a run folder, or giving a path relative or absolute, does not
  change the identity. The record's own ``config`` is what is compared (re-validated, so a field added to the
  config later, at its default, is no change); the hash in ``identity`` is for the eye.
* **A built-in dataset's content** is pinned by its loader (every file is checked against a known sha256 when
  it is found), so its name, which the config holds, stands for it.
* **The code version** (:data:`CODE_VERSION`) is a number bumped by hand when a change of the library alters
  what training produces for the same config and inputs; not the git commit, which would invalidate every run
  on every commit that changes nothing in the results.
* **Legacy records** (written before identities: the committed ``results/**/run.json``) have no ``identity``;
  for them the recorded config alone is compared (normalised as above; a config that
  :func:`~darkknowledge.config.same_config` accepts always matches).
* A part that cannot be computed now (a teacher file not there yet, e.g. another job's weights to be rebuilt)
  is not compared.

File hashes are cached by (real path, size, mtime) in memory and in ``$DARKKNOWLEDGE_HASH_CACHE`` (default
``~/.cache/darkknowledge/sha256.json``; best effort: an unwritable cache only costs the hashing again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import TrainConfig, same_config
from ..data.common import sha256_file
from ..utils import atomic_write_json
from .state import RunExistsError

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module

    from ..data import Splits

__all__ = ["CODE_VERSION", "InputsChangedError", "file_sha256", "tensor_sha256", "config_key", "run_identity",
           "teacher_file_sha256", "describe_change", "changed_since", "read_record", "refusal",
           "holds_run", "check_free", "replacing", "recover", "reuse_finished", "RUN_FILES"]

log = logging.getLogger(__name__)

#: bumped when the library's training changes what a config produces (see the module docstring)
CODE_VERSION = 1
IDENTITY_VERSION = 1
OVERWRITE_HINT = "pass --overwrite (overwrite=True) to replace it, delete the folder, or choose another out_dir"


class InputsChangedError(RunExistsError):
    """A finished run (or a checkpoint) in ``out_dir`` was made from other inputs than the ones given now."""


# --------------------------------------------------------------------------- content hashes

_MEMO: dict[tuple[str, int, int], str] = {}


def _cache_path() -> Path:
    return Path(os.environ.get("DARKKNOWLEDGE_HASH_CACHE") or Path.home() / ".cache" / "darkknowledge" / "sha256.json")


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, hashed once per (real path, size, mtime) and cached (see the module docstring)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key in _MEMO:
        return _MEMO[key]
    cache_file, ck = _cache_path(), f"{key[0]}|{key[1]}|{key[2]}"
    try:
        disk = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        disk = {}
    disk = disk if isinstance(disk, dict) else {}
    if isinstance(disk.get(ck), str):
        _MEMO[key] = disk[ck]
        return disk[ck]
    digest = _MEMO[key] = sha256_file(p)
    if st.st_size >= 1 << 20:  # small files are hashed faster than the cache is read
        try:
            atomic_write_json(cache_file, {**{k: v for k, v in disk.items() if not k.startswith(f"{key[0]}|")},
                                           ck: digest})
        except OSError:
            pass
    return digest


#: id(tensor) → (a weak reference to it, its version counter then, its sha256)
_TENSOR_MEMO: dict[int, tuple[weakref.ref, int, str]] = {}


def tensor_sha256(tensors: Sequence[Tensor]) -> str:
    """sha256 over the tensors' shapes, dtypes and bytes; a tensor not modified since (its version counter)
    is hashed once."""
    from ..teachers import hash_tensor

    h = hashlib.sha256()
    for t in tensors:
        memo = _TENSOR_MEMO.get(id(t))
        if memo is None or memo[0]() is not t or memo[1] != t._version:
            one = hashlib.sha256()
            hash_tensor(one, t)
            key = id(t)
            memo = (weakref.ref(t, lambda _, k=key: _TENSOR_MEMO.pop(k, None)), t._version, one.hexdigest())
            _TENSOR_MEMO[key] = memo
        h.update(memo[2].encode())
    return h.hexdigest()


def splits_sha256(splits: Splits) -> str:
    """The content of the splits handed to ``train`` (inputs and labels of train, val and test)."""
    parts = [splits.train, splits.val, splits.test]
    return tensor_sha256([t for d in parts for t in (d.x, d.y)])


def teacher_file_sha256(teachers: Sequence[str]) -> list[str] | None:
    """The sha256 of each teacher file of ``distill.teachers`` (ensemble manifests expanded; a store of
    outputs: its manifest), or ``None`` when one is not there (to be made by another job) or unreadable."""
    from ..teachers import ManifestError, teacher_files

    try:
        files = teacher_files(teachers)
        return [file_sha256(Path(f) / "manifest.json" if Path(f).is_dir() else f) for f in files]
    except (OSError, ManifestError):
        return None


# --------------------------------------------------------------------------- identity

def config_key(cfg: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The config without where things are (see the module docstring): what a run's result depends on."""
    d = cfg.model_dump() if isinstance(cfg, TrainConfig) else TrainConfig.model_validate(cfg).model_dump()
    d.pop("out_dir", None)
    data = d["data"]
    d["data"] = {**data, "data_dir": None, "sha256": {}, "files": {k: None for k in data["files"]}}
    if d.get("distill"):
        d["distill"] = {**d["distill"], "teachers": len(d["distill"]["teachers"])}
    return d


def _sha_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def path_sha256(path: str | os.PathLike) -> str:
    """:func:`file_sha256` of a file; of a folder (``data.format: images``), the sha256 over its files' relative
    paths and hashes, in sorted order."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return file_sha256(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def data_file_sha256(cfg: TrainConfig) -> dict[str, str | None]:
    """sha256 of each file (or folder) of ``data.files`` (``None`` for one not there)."""
    out: dict[str, str | None] = {}
    for role, f in sorted(cfg.data.files.items()):
        try:
            out[role] = path_sha256(f)
        except OSError:
            out[role] = None
    return out


def run_identity(cfg: TrainConfig, teacher_sha: list[str] | None = None, splits: Splits | None = None,
                 teacher_given: bool = False) -> dict[str, Any]:
    """The identity of a run of ``cfg`` on these inputs. ``teacher_sha``: the teachers' hashes as the engine
    computed them (default: of the files of ``distill.teachers``); ``teacher_given``: they are of the weights
    of a teacher handed in as modules (``train(teacher=...)``, recorded as ``teacher_weights``: comparable only
    with a teacher handed in again, never with files); ``splits``: data handed in rather than read from the
    config's files."""
    if teacher_sha is None and cfg.distill is not None and not teacher_given:
        teacher_sha = teacher_file_sha256(cfg.distill.teachers)
    teachers = teacher_sha if cfg.distill is not None else []
    return {"version": IDENTITY_VERSION, "code": CODE_VERSION, "config": _sha_json(config_key(cfg)),
            "data": data_file_sha256(cfg), "splits": splits_sha256(splits) if splits is not None else None,
            "teachers": None if teacher_given else teachers, "teacher_weights": teachers if teacher_given else None}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _config_diff(recorded: dict[str, Any] | None, cfg: TrainConfig) -> str:
    try:
        old = _flat(config_key(recorded or {}))
    except Exception:  # noqa: BLE001 — an unreadable recorded config differs everywhere
        return "the whole config"
    new = _flat(config_key(cfg))
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "") or "the config"


def _same_key(recorded: Any, cfg: TrainConfig) -> bool:
    if same_config(recorded, cfg):
        return True
    try:
        return config_key(recorded) == config_key(cfg)
    except Exception:  # noqa: BLE001 — a recorded config that no longer validates is another config
        return False


def _short(s: str | None) -> str:
    return s[:12] if s else "none"


def describe_change(recorded: dict[str, Any], cfg: TrainConfig, now: dict[str, Any] | None = None,
                    weights: str | os.PathLike | None = None) -> str | None:
    """What differs between a recorded run (a ``run.json`` or checkpoint dict with ``config`` and, when written
    since identities, ``identity``) and ``cfg`` with the identity ``now`` (default :func:`run_identity` of
    ``cfg``); ``None`` when it may be reused. ``weights``: the run's ``best.safetensors``, checked against the
    recorded ``weights_sha256`` (a file altered after the run finished is not the run's)."""
    old = recorded.get("identity")
    if not isinstance(old, dict):  # legacy: the (normalised) config alone
        return None if _same_key(recorded.get("config"), cfg) else \
            f"a different config (differs in: {_config_diff(recorded.get('config'), cfg)})"
    now = now or run_identity(cfg)
    if old.get("code") != now["code"]:
        return f"the library's results version changed ({old.get('code')} then, {now['code']} now)"
    if not _same_key(recorded.get("config"), cfg):  # the recorded config re-validated: new fields at defaults
        return f"a different config (differs in: {_config_diff(recorded.get('config'), cfg)})"
    for role, sha in sorted((old.get("data") or {}).items()):
        cur = now["data"].get(role)
        if sha and cur and sha != cur:
            return f"the data file data.files.{role} changed (sha256 {_short(sha)} then, {_short(cur)} now)"
    if old.get("splits") and now.get("splits") and old["splits"] != now["splits"]:
        return "the data passed in (the train/val/test tensors) changed"
    for key, what in (("teachers", "teacher file"), ("teacher_weights", "teacher (weights handed in)")):
        t_old, t_new = old.get(key), now.get(key)
        if t_old is None or t_new is None:
            continue
        if len(t_old) != len(t_new):
            return f"the number of teachers changed ({len(t_old)} then, {len(t_new)} now)"
        for i, (a, b) in enumerate(zip(t_old, t_new)):
            if a != b:
                return f"{what} #{i + 1} changed (sha256 {_short(a)} then, {_short(b)} now)"
    rec_w = recorded.get("weights_sha256")
    if weights is not None and rec_w and Path(weights).is_file():
        cur_w = file_sha256(weights)
        if cur_w != rec_w:
            return f"{weights} was altered after the run finished (sha256 {_short(rec_w)} then, {_short(cur_w)} now)"
    return None


def changed_since(recorded: dict[str, Any], cfg: TrainConfig, splits: Splits | None = None) -> str | None:
    """:func:`describe_change` of a finished record in ``cfg.out_dir`` against ``cfg``'s inputs as they are now
    (data files, teacher files, ``splits`` when given, ``best.safetensors``); the hashes are computed only for a
    record that has an identity."""
    if not isinstance(recorded.get("identity"), dict):
        return describe_change(recorded, cfg)
    now = run_identity(cfg, splits=splits) if recorded["identity"].get("splits") else run_identity(cfg)
    return describe_change(recorded, cfg, now, Path(cfg.out_dir) / "best.safetensors")


def read_record(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``<out_dir>/run.json`` (a finished run's record), or ``None`` when absent or unreadable."""
    try:
        rec = json.loads((Path(out_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


#: what a run writes into its folder; ``overwrite`` sets these (and nothing else) aside before training afresh
RUN_FILES = ("checkpoint.pt", "run.json", "best.safetensors", "last.safetensors", "metrics.csv", "eval.json",
             "teacher_cache.safetensors", "teacher_store", "tensorboard")


def holds_run(out: Path) -> bool:
    return (out / "checkpoint.pt").exists() or (out / "run.json").exists()


def check_free(out: Path, allowed: bool) -> None:
    """Unless ``allowed`` (resume or overwrite), a folder that holds a run is refused."""
    if holds_run(out) and not allowed:
        raise RunExistsError(f"{out} already holds a run — pass --resume to continue it, --overwrite to replace it, "
                             "or choose another out_dir")


ASIDE = ".replaced"


def set_aside(out: Path) -> Path | None:
    """``overwrite``: move the run's files (:data:`RUN_FILES`) into ``out/.replaced`` — put back by
    :func:`put_back` when the new run fails, removed when it finishes — so that a failed overwrite leaves the old
    run as it was (a ``.replaced`` left by a killed overwrite is put back by :func:`recover` first)."""
    aside = out / ASIDE
    shutil.rmtree(aside, ignore_errors=True)
    present = [out / n for n in RUN_FILES if (out / n).exists()]
    if not present:
        return None
    aside.mkdir()
    try:
        for p in present:
            os.replace(p, aside / p.name)
    except BaseException:
        for p in aside.iterdir():  # the ones moved so far
            os.replace(p, out / p.name)
        aside.rmdir()
        raise
    return aside


def put_back(out: Path, aside: Path | None, failed: bool) -> None:
    """After an overwrite: when it ``failed``, the new run's files are removed and the old ones moved back;
    otherwise the old ones are dropped."""
    if aside is None:
        return
    if failed:
        for n in RUN_FILES:  # what the failed run wrote
            q = out / n
            if q.is_dir():
                shutil.rmtree(q)
            else:
                q.unlink(missing_ok=True)
        for p in aside.iterdir():
            os.replace(p, out / p.name)
    shutil.rmtree(aside, ignore_errors=True)


def recover(out: Path) -> None:
    """An overwrite that was killed (SIGKILL, power loss) leaves the old run in ``out/.replaced`` beside the new
    run's first files: the old run is put back — under the run lock, so a live overwrite is never disturbed —
    and the command goes on as if the overwrite had never started."""
    if not (out / ASIDE).is_dir() or int(os.environ.get("RANK", "0")) != 0:
        return
    from .lock import RunLock

    with RunLock(out):
        if (out / ASIDE).is_dir():
            put_back(out, out / ASIDE, failed=True)
            log.warning("%s: an overwrite of this run was interrupted; the old run is back in place", out)


@contextlib.contextmanager
def replacing(out: Path, active: bool) -> Iterator[None]:
    """``with replacing(out, overwrite): train...`` — the old run set aside (:func:`set_aside`), and put back when
    the body fails, dropped when it succeeds."""
    aside = set_aside(out) if active else None
    try:
        yield
    except BaseException:
        put_back(out, aside, failed=True)
        raise
    put_back(out, aside, failed=False)


def reuse_finished(cfg: TrainConfig, out: Path, ident: dict[str, Any], student: Module | None
                   ) -> dict[str, Any] | None:
    """The record of the finished run in ``out`` when its identity matches ``ident`` (``student`` then gets its
    selected weights), ``None`` when there is none; a finished run of other inputs is refused (never retrained
    over: its ``run.json`` and ``best.safetensors`` are the record, with or without ``checkpoint.pt``)."""
    rec = read_record(out)
    if rec is None:
        return None
    best = out / "best.safetensors"
    what = describe_change(rec, cfg, ident, best)
    if what:
        raise refusal(out, what)
    if student is not None:
        if not best.is_file():
            raise RunExistsError(f"{out} holds a finished run without its best.safetensors (the selected weights) — "
                                 f"{OVERWRITE_HINT}")
        from safetensors.torch import load_file

        student.load_state_dict(load_file(str(best)))
    log.info("%s: finished run of the same inputs reused", out)
    return {**rec, "config": {**rec.get("config", {}), "out_dir": str(cfg.out_dir)}}


def refusal(out_dir: str | os.PathLike, what: str) -> InputsChangedError:
    """The one-line error for a finished run whose inputs changed."""
    return InputsChangedError(f"{out_dir} holds a finished run of other inputs: {what} — {OVERWRITE_HINT}")
