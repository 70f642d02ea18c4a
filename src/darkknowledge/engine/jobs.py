"""Many independent runs at once: cached runs as jobs, and executors that run them — a local process pool
or Ray.

A **job** is an ordinary run directory: a config (plus ``train()`` keywords such as ``track_test``) that
:func:`run_cached` trains unless ``<out_dir>/run.json`` already holds it, resuming a run that was killed
half-way. So rerunning a whole set skips what finished and resumes what crashed; the run lock keeps two
workers off one directory.

:func:`run_jobs` runs a list of jobs on an executor, in dependency order: a job distilling from
``<other job's out_dir>/best.safetensors`` (a student after its teacher, a distillation after the ensemble
members) starts only when that job has finished. Executors:

* ``serial`` — this process, one job after another (``workers = 1``; progress bars shown);
* ``local`` — a pool of ``workers`` spawned processes, each with ``cores // workers`` torch threads (a
  config's own ``threads`` wins; workers × threads above the core count is warned about);
* ``ray`` — Ray tasks with ``num_cpus`` / ``num_gpus`` each, on a local Ray or a running cluster
  (``address``); ``pip install darkknowledge[ray]``.

Training is deterministic given its config, so the same jobs give the same records on any executor and
any number of workers.

**Job kinds.** A job is ``Job(config)`` — :func:`run_cached` — or ``Job(config, kwargs, kind="name")`` for a
run that needs more than a config (e.g. a student built from another run's weights). A kind is a function
registered where it is defined::

    @register_job_kind("specialist")
    def train_specialist(config, *, progress, need_weights, **kwargs) -> dict:   # the run record
        ...   # cached and resumable like run_cached

The engine never imports an experiment: registering records the function's module in the registry, and a
``Job`` of that kind carries the module's name (``Job.module``, filled in from the registry when the job is
made). A spawned worker (or a Ray task) that does not know the kind imports ``Job.module`` — which registers
it — and then looks the kind up, so a kind must be registered at import time of a module importable by
name (not in ``__main__``).

:func:`cached_eval` caches an evaluation of a finished run in ``<out_dir>/eval.json``, tied to its record.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..config import TrainConfig, validate
from ..utils import atomic_write_json
from .identity import changed_since, read_record, refusal
from .train import train

__all__ = ["Job", "JobsFailedError", "run_cached", "finished_record", "cached_eval", "register_job_kind", "job_kinds",
           "run_job", "run_jobs", "make_executor",
           "SerialExecutor", "LocalExecutor", "RayExecutor", "RayConnectError", "EXECUTORS", "cpu_count"]

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")


# --------------------------------------------------------------------------- one cached run


def finished_record(cfg: TrainConfig | dict[str, Any], splits=None) -> dict[str, Any] | None:
    """The finished run record of ``cfg`` in ``<out_dir>/run.json``, or ``None`` (absent, unreadable, or made from
    other inputs: :func:`~.identity.changed_since`). ``splits``: the data the run is given, when not read from
    the config's files. The returned record names ``cfg.out_dir`` (a moved folder is the same run)."""
    cfg = cfg if isinstance(cfg, TrainConfig) else validate(cfg)
    rec = read_record(cfg.out_dir)
    if rec is None or changed_since(rec, cfg, splits) is not None:
        return None
    return {**rec, "config": {**rec.get("config", {}), "out_dir": cfg.out_dir}}


def run_cached(cfg: TrainConfig | dict[str, Any], splits=None, progress: bool = True, need_weights: bool = False,
               before_train: Callable[[], Any] | None = None, overwrite: bool = False, **kw: Any) -> dict[str, Any]:
    """Train ``cfg`` unless ``<out_dir>/run.json`` already holds a finished run of the same inputs (its identity,
    :mod:`.identity`). A finished run of other inputs is refused naming what changed — replaced when
    ``overwrite``.

    A run killed half-way resumes from its last checkpoint (``resume=True``). ``need_weights``: the
    caller will load ``best.safetensors``, so a finished record without it (a fresh clone holds the
    records, never the weights) is retrained from scratch in ``<out_dir>/.rebuild`` (resumable there),
    whose weights are moved in only when it has finished. Training is deterministic: a rebuild that
    reproduces the record keeps the original record; one that does not is reported and replaces it.
    ``before_train`` runs only when training is needed (e.g. to materialise a teacher's weights), never
    for a cached run.
    """
    cfg = cfg if isinstance(cfg, TrainConfig) else validate(cfg)
    out_dir = Path(cfg.out_dir)
    rec = finished_record(cfg, splits)
    if rec is not None and (not need_weights or (out_dir / "best.safetensors").exists()):
        return rec
    if before_train is not None:
        before_train()
    if rec is None:
        return train(cfg, resume=True, splits=splits, progress=progress, overwrite=overwrite, **kw)
    # A finished record without its weights: rebuild them in <out_dir>/.rebuild (resumable there if killed),
    # and move them in only once the rebuild has finished, so a half-trained best.safetensors never sits
    # beside a finished record.
    print(f"{out_dir}: finished record but no best.safetensors; retraining it from scratch", file=sys.stderr,
          flush=True)
    tmp = out_dir / ".rebuild"
    new = train(cfg.model_copy(update={"out_dir": str(tmp)}), resume=True, splits=splits, progress=progress, **kw)
    same = new.get("final") == rec.get("final") and new.get("epochs") == _without_timing(rec.get("epochs"), new) \
        and rec.get("weights_sha256") in (None, new.get("weights_sha256"))
    for f in ("best.safetensors", "last.safetensors"):
        if (tmp / f).exists():
            os.replace(tmp / f, out_dir / f)
    if not same:
        old_e = (rec.get("final") or {}).get("test", {}).get("errors")
        new_e = (new.get("final") or {}).get("test", {}).get("errors")
        print(f"{out_dir}: WARNING the retrained run differs from its old record (test errors {old_e} then, "
              f"{new_e} now); keeping the new record", file=sys.stderr, flush=True)
        new["config"]["out_dir"] = str(out_dir)
        atomic_write_json(out_dir / "run.json", new)
    shutil.rmtree(tmp, ignore_errors=True)
    # the same run, reproduced: the original record (its timings, commit and machine) stays, so that
    # evaluations cached against it stay valid
    return rec if same else new


def _without_timing(old_epochs: Any, new: dict[str, Any]) -> Any:
    """``old_epochs`` with each epoch's timing and logged-loss fields replaced by the new run's."""
    new_epochs = new.get("epochs")
    if not isinstance(old_epochs, list) or not isinstance(new_epochs, list) or len(old_epochs) != len(new_epochs):
        return old_epochs
    # timings always differ; train_loss is how the loss is *logged* (e.g. kd's soft term as T²·KL since 0.2,
    # T²·CE before: the same gradient), so the comparison is of what the model did: validation per epoch, final
    timing = ("samples_per_s", "wall_time_s", "cpu_time_s", "seconds", "train_loss")
    return [{**o, **{k: n[k] for k in timing if k in n}} if isinstance(o, dict) else o
            for o, n in zip(old_epochs, new_epochs)]


def cached_eval(out_dir: str | Path, key: str, compute: Callable[[], dict[str, Any]],
                version: int = 1) -> dict[str, Any]:
    """``compute()`` (a JSON-able evaluation of the run in ``out_dir``), cached in ``<out_dir>/eval.json``.

    The cache entry is tied to the sha256 of the run's ``run.json``, so a retrained run is re-evaluated,
    and to ``version``, which a caller bumps when the evaluation itself changes; a committed cache lets a
    fresh clone re-render reports without the (uncommitted) weights.
    """
    out_dir = Path(out_dir)
    digest = hashlib.sha256((out_dir / "run.json").read_bytes()).hexdigest()
    path = out_dir / "eval.json"
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, json.JSONDecodeError):
        cache = {}
    entry = cache.get(key)
    if (isinstance(entry, dict) and entry.get("run_sha256") == digest and entry.get("version", 1) == version
            and "value" in entry):
        return entry["value"]
    value = compute()  # may retrain the run (to get its weights back), so hash run.json afresh
    digest = hashlib.sha256((out_dir / "run.json").read_bytes()).hexdigest()
    cache[key] = {"run_sha256": digest, "version": version, "value": value}
    atomic_write_json(path, cache)
    return value


# --------------------------------------------------------------------------- jobs

#: kind → (the function that runs it, the module that registered it)
_KINDS: dict[str, tuple[Callable[..., dict[str, Any]], str]] = {}
TRAIN = "train"  # the built-in kind: run_cached(config)


def register_job_kind(name: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Register ``fn(config, *, progress, need_weights, **kwargs) -> run record`` as job kind ``name``."""
    def deco(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        prev = _KINDS.get(name)
        if name == TRAIN or (prev and (prev[1], prev[0].__qualname__) != (fn.__module__, fn.__qualname__)):
            raise ValueError(f"job kind {name!r} is already registered (by {prev[1] if prev else 'the engine'})")
        _KINDS[name] = (fn, fn.__module__)
        return fn

    return deco


def job_kinds() -> dict[str, str]:
    """The registered kinds and the modules that registered them."""
    return {k: mod for k, (_, mod) in _KINDS.items()}


@dataclass
class Job:
    """One run: its config (a dict, as for :func:`~darkknowledge.config.validate`) and ``train()`` keywords
    (JSON-able, e.g. ``{"track_test": True}``). ``need_weights``: make sure ``best.safetensors`` exists
    (set by :func:`run_jobs` on a job another pending job distils from). ``kind``: ``"train"``
    (:func:`run_cached`) or a kind registered with :func:`register_job_kind`, whose ``kwargs`` it receives;
    ``module``: the module that registers ``kind`` (filled in from the registry)."""

    config: dict[str, Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    need_weights: bool = False
    kind: str = TRAIN
    module: str | None = None

    def __post_init__(self) -> None:
        if self.kind != TRAIN and self.module is None:
            if self.kind not in _KINDS:
                raise ValueError(f"unknown job kind {self.kind!r}; registered: {', '.join(sorted(_KINDS)) or 'none'}")
            self.module = _KINDS[self.kind][1]

    @property
    def out_dir(self) -> str:
        return str(self.config["out_dir"])

    @property
    def teachers(self) -> list[str]:
        return list((self.config.get("distill") or {}).get("teachers") or [])


def _kind_fn(job: Job) -> Callable[..., dict[str, Any]]:
    if job.kind not in _KINDS and job.module is not None:
        importlib.import_module(job.module)  # a spawned worker: the module registers its kinds on import
    if job.kind not in _KINDS:
        raise ValueError(f"job kind {job.kind!r} is not registered (module {job.module!r})")
    return _KINDS[job.kind][0]


def run_job(job: Job, progress: bool = False) -> dict[str, Any]:
    """Run one job (in a worker or here) and return its run record."""
    if job.kind != TRAIN:
        return _kind_fn(job)(job.config, progress=progress, need_weights=job.need_weights, **job.kwargs)
    return run_cached(job.config, progress=progress, need_weights=job.need_weights, **job.kwargs)


class JobsFailedError(RuntimeError):
    """Some jobs failed (the others ran to the end); ``failures`` maps out_dir to the error."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        lines = "; ".join(f"{k}: {v}" for k, v in list(failures.items())[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        super().__init__(f"{len(failures)} job(s) failed — {lines}{more}; rerun to retry them (finished runs are "
                         "kept)")


def _dependencies(jobs: Sequence[Job]) -> list[set[int]]:
    """For each job, the indices of the jobs whose ``best.safetensors`` it distils from."""
    produced = {os.path.normpath(str(Path(j.out_dir) / "best.safetensors")): i for i, j in enumerate(jobs)}
    return [{produced[os.path.normpath(t)] for t in j.teachers if os.path.normpath(t) in produced} - {i}
            for i, j in enumerate(jobs)]


def _done_already(job: Job) -> dict[str, Any] | None:
    if job.kwargs.get("overwrite"):
        return None
    rec = finished_record(job.config)
    if rec is not None and (not job.need_weights or (Path(job.out_dir) / "best.safetensors").exists()):
        return rec
    return None


def _check_finished(jobs: list[Job], deps: list[set[int]], overwrite: bool) -> None:
    """Before anything runs: a finished ``train`` job whose inputs changed is refused (one line naming what
    changed), or with ``overwrite`` marked to be retrained — and so is every job distilling from it."""
    marked = set()
    for i, j in enumerate(jobs):
        rec = read_record(j.out_dir) if j.kind == TRAIN else None
        what = changed_since(rec, validate(j.config)) if rec is not None else None
        if what and not overwrite:
            raise refusal(j.out_dir, what)
        if what:
            marked.add(i)
    while True:
        more = {i for i, d in enumerate(deps) if d & marked} - marked
        if not more:
            break
        marked |= more
    for i in marked:
        if jobs[i].kind == TRAIN and read_record(jobs[i].out_dir) is not None:
            jobs[i].kwargs = {**jobs[i].kwargs, "overwrite": True}


def run_jobs(jobs: Sequence[Job], executor: str | Executor = "local", workers: int = 1,
             progress: bool = True, overwrite: bool = False, **executor_args: Any) -> list[dict[str, Any]]:
    """Run ``jobs`` (finished ones are skipped, crashed ones resumed) and return their records in order.

    A job starts once every job it distils from has finished; those get ``need_weights``. When jobs fail,
    the others still run to the end and :class:`JobsFailedError` names the failures (a job whose teacher
    failed is not started). A finished job whose inputs changed (:mod:`.identity`) is refused before anything
    runs; ``overwrite``: retrain it (and the jobs distilling from it) instead."""
    jobs = list(jobs)
    seen: dict[str, int] = {}
    for i, j in enumerate(jobs):
        validate(j.config)  # bad configs are refused before anything runs
        key = os.path.normpath(j.out_dir)
        if key in seen:
            raise ValueError(f"two jobs share out_dir {j.out_dir} (jobs {seen[key]} and {i})")
        seen[key] = i
    deps = _dependencies(jobs)
    _check_finished(jobs, deps, overwrite)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    for i, j in enumerate(jobs):  # a teacher of a student still to train must have its weights
        if any(i in d and _done_already(jobs[k]) is None for k, d in enumerate(deps)):
            j.need_weights = True
    todo = set()
    for i, j in enumerate(jobs):
        rec = _done_already(j)
        if rec is not None:
            results[i] = rec
        else:
            todo.add(i)
    if not todo:
        return results  # type: ignore[return-value]
    ex = executor if isinstance(executor, Executor) else make_executor(executor, workers, **executor_args)
    failures: dict[str, str] = {}
    failed: set[int] = set()
    running: dict[Any, int] = {}
    t0 = time.perf_counter()
    n_total = len(todo)
    try:
        while todo or running:
            for i in sorted(todo):
                if running and isinstance(ex, SerialExecutor):  # it runs a job when submitted: one at a time, so
                    break  # each finished job's [jobs] line comes when it finishes
                if deps[i] & failed:
                    todo.discard(i)
                    failed.add(i)
                    failures[jobs[i].out_dir] = "not started: a job it distils from failed"
                elif all(results[d] is not None for d in deps[i]):
                    todo.discard(i)
                    running[ex.submit(jobs[i], progress and ex.workers == 1)] = i
            if not running:
                break
            for h in ex.wait_any(list(running)):
                i = running.pop(h)
                try:
                    results[i] = ex.result(h)
                except Exception as e:  # noqa: BLE001 — reported with the others at the end
                    failed.add(i)
                    failures[jobs[i].out_dir] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if progress:
                    done = n_total - len(todo) - len(running)
                    print(f"[jobs] {done}/{n_total} done ({time.perf_counter() - t0:.0f} s): {jobs[i].out_dir}"
                          + (" FAILED" if i in failed else ""), file=sys.stderr, flush=True)
    finally:
        if not isinstance(executor, Executor):
            ex.close()
    if failures:
        raise JobsFailedError(failures)
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- executors


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Executor:
    """``submit(job, progress) -> handle``, ``wait_any(handles) -> finished handles``, ``result(handle)``
    (the run record, or the job's exception), ``close()``."""

    workers: int = 1

    def submit(self, job: Job, progress: bool = False) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def wait_any(self, handles: list[Any]) -> list[Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def result(self, handle: Any) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class SerialExecutor(Executor):
    """This process, one job at a time (a job runs when it is submitted)."""

    workers = 1

    def submit(self, job: Job, progress: bool = False) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(run_job(job, progress))
        except Exception as e:  # noqa: BLE001
            fut.set_exception(e)
        return fut

    def wait_any(self, handles: list[Any]) -> list[Any]:
        return handles

    def result(self, handle: cf.Future) -> dict[str, Any]:
        return handle.result()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """Exit when the process that started this worker is gone (killed, or Ctrl-C'd without a clean shutdown):
    a pool worker must not train on for hours as an orphan. Its run stays resumable from the last checkpoint."""
    while True:
        time.sleep(every_s)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(threads: int) -> None:
    import threading

    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="exit-with-parent").start()
    from . import train  # noqa: F401 — the engine's imports are paid once per worker, at start, not by its first job


def _worker_pid(hold_s: float) -> int:
    """A warm-up task: holds its worker for ``hold_s`` so that the next task goes to another worker."""
    time.sleep(hold_s)
    return os.getpid()


class LocalExecutor(Executor):
    """A pool of ``workers`` spawned processes on this machine, ``threads`` torch threads each (default
    ``cores // workers``, at least 1)."""

    def __init__(self, workers: int, threads: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        cores = cpu_count()
        self.workers, self.threads = workers, threads or max(1, cores // workers)
        if workers * self.threads > cores:
            log.warning("%d workers × %d threads > %d cores: runs will slow each other down", workers,
                        self.threads, cores)
        self.pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                           initargs=(self.threads,))
        self._start_all()

    def _start_all(self, timeout_s: float = 300.0) -> None:
        """Start every worker now, in parallel, and wait until each has imported torch and the engine: spawned
        workers otherwise start on demand, and a worker still importing when the jobs arrive leaves the
        others to take its share (the pool's 2-worker speed-up was 1.66 for it, `benchmarks/scale.py`)."""
        pids: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(pids) < self.workers and time.monotonic() < deadline:
            pids |= set(self.pool.map(_worker_pid, [0.2] * self.workers))

    def submit(self, job: Job, progress: bool = False) -> cf.Future:
        return self.pool.submit(run_job, job, False)

    def wait_any(self, handles: list[Any]) -> list[Any]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def result(self, handle: cf.Future) -> dict[str, Any]:
        return handle.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor(Executor):
    """Ray tasks, ``num_cpus`` / ``num_gpus`` each, on a local Ray (started here, ``workers`` CPUs) or the
    cluster at ``address`` (e.g. ``"auto"`` or ``"ray://head:10001"``). Run directories must be on storage
    every node sees."""

    def __init__(self, workers: int = 1, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 connect_timeout_s: float = 30.0):
        try:
            import ray
        except ImportError:
            raise ValueError("the ray executor needs Ray: pip install 'darkknowledge[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            kw: dict[str, Any] = {"address": address} if address else {"num_cpus": workers}
            init = partial(ray.init, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                           runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(1, int(num_cpus)))}}, **kw)
            if address:
                _connect_ray(init, address, connect_timeout_s)
            else:
                init()
        self.workers = workers
        self.threads = max(1, int(num_cpus))
        self.remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=0)(_ray_job)

    def submit(self, job: Job, progress: bool = False) -> Any:
        return self.remote.remote(job, self.threads)

    def wait_any(self, handles: list[Any]) -> list[Any]:
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def result(self, handle: Any) -> dict[str, Any]:
        try:
            return self.ray.get(handle)
        except self.ray.exceptions.RayTaskError as e:  # re-raise the job's own exception
            raise e.as_instanceof_cause() from None


class RayConnectError(ValueError):
    """The Ray cluster at an address is malformed, unreachable or does not answer in time."""


def _connect_ray(init: Callable[[], Any], address: str, timeout_s: float) -> None:
    """``init()`` (``ray.init`` on ``address``) bounded by ``timeout_s``: a ``host:port`` that refuses or does not
    accept a TCP connection fails within ``min(10, timeout_s)`` s, one that accepts but never answers after
    ``timeout_s`` (Ray itself retries for minutes); the error names the address."""
    import socket
    import threading

    hostport = address.split("://", 1)[-1]
    if address != "auto":
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise RayConnectError(f"Ray address {address!r} is not 'auto' nor host:port (or ray://host:port)")
        try:
            socket.create_connection((host, int(port)), timeout=min(10.0, timeout_s)).close()
        except OSError as e:
            raise RayConnectError(f"cannot reach Ray at {address}: {e.strerror or type(e).__name__} — is the "
                                  "cluster running (ray start --head) and the address right?") from None
    box: dict[str, BaseException] = {}

    def go() -> None:
        try:
            init()
        except BaseException as e:  # noqa: BLE001 — reported below
            box["error"] = e

    th = threading.Thread(target=go, daemon=True, name="ray-connect")
    th.start()
    th.join(timeout_s)
    if th.is_alive():
        raise RayConnectError(f"Ray at {address} did not answer within {timeout_s:g} s — is it a Ray head node "
                              "(GCS port, default 6379; ray://host:10001 for Ray Client)?")
    if "error" in box:
        e = box["error"]
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RayConnectError(f"cannot connect to Ray at {address}: {first}") from None


def _ray_job(job: Job, threads: int) -> dict[str, Any]:
    _init_worker(threads)
    return run_job(job, False)


def make_executor(name: str = "local", workers: int = 1, **kw: Any) -> Executor:
    """``"local"`` (serial when ``workers == 1``) or ``"ray"``."""
    if name == "local":
        return SerialExecutor() if workers == 1 else LocalExecutor(workers, **kw)
    if name == "ray":
        return RayExecutor(workers, **kw)
    raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
