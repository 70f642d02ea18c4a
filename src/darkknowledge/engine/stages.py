"""The shared stage runner of the reproductions (``darkknowledge reproduce NAME``).

An experiment is data: an :class:`Experiment` with its settings, its stages and its report. A
:class:`Stage` names the jobs it needs (``jobs(ctx) -> [Job, ...]``, run on the job pool by
:func:`~.jobs.run_jobs`) and turns their finished records into numbers (``collect(ctx, records) ->
Outcome(values, details)``). :func:`run_experiment` does the rest, the same for every experiment:

1. settings (``quick``), seeds (``--seeds`` or the experiment's default), the stage selection (``--only``);
2. the jobs of every ``upfront`` stage in one batch (so a pool of workers stays busy across stages), then
   stage by stage: its jobs, then ``collect``; ``values`` (metric → one number per seed or run) and
   ``details`` (anything JSON-able) are merged into the context, where later stages read them;
3. ``summary.json`` (:func:`~darkknowledge.report.summarize` of the values, in ``summary_keys`` order),
   ``details.json`` (when there are details), figures and ``report.md`` through
   :class:`~darkknowledge.report.Results` (written as a whole; provenance kept when nothing changed).

``--only NAME`` trains the jobs of ``NAME`` and of the stages it ``needs``; every other stage trains nothing
and is reported with the most seeds ``0..n-1`` whose runs have all finished (left out when none have).

Example — a thin experiment (``experiments/my_exp.py``)::

    from ..engine.jobs import Job
    from ..engine.stages import Experiment, Outcome, Stage
    from ..report import Vs, paper_table, render
    from . import register_experiment

    PAPER = {"baseline_errors": 146}
    TEMPLATE = "# My experiment\n\nCommand: `{prov[command]}`.\n\n{table}\n"

    def runs(ctx):                     # which runs: configs on the pool
        return [Job(cfg(ctx, "baseline", k)) for k in ctx.seeds]

    def numbers(ctx, recs):            # finished records -> summary values (+ details)
        return Outcome(values={"baseline_errors": [r["final"]["test"]["errors"] for r in recs]})

    def report(ctx, summary, prov):    # a short template over summary + details
        rows = [("baseline", Vs("baseline_errors", PAPER["baseline_errors"], digits=1))]
        return render(TEMPLATE, prov=prov, table=paper_table(["system", "paper", "ours"], rows, summary))

    EXPERIMENT = register_experiment(Experiment(
        "my-exp", settings=lambda quick: Settings(quick), default_seeds=lambda s: 3,
        stages=[Stage("baseline", runs, numbers)], report=report))

A run that needs more than a config is a registered job kind (:func:`~.jobs.register_job_kind`), a ``Job``
with ``kind=``; evaluations of finished runs are cached with :func:`~.jobs.cached_eval`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..report import Results, provenance, summarize
from .jobs import Job, finished_record, run_jobs

__all__ = ["Experiment", "Stage", "Outcome", "Context", "run_experiment"]


@dataclass
class Outcome:
    """What a stage reports: ``values`` (summary metric → numbers) and ``details`` (JSON-able)."""

    values: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a stage's functions see: where, which settings and seeds, and what earlier stages found."""

    name: str
    out: Path
    data_dir: str | None
    settings: Any
    seeds: list[int]
    quick: bool = False
    progress: bool = True
    pool: dict[str, Any] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    #: every record run so far in this invocation, by out_dir
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: seconds per stage in this invocation
    times: dict[str, float] = field(default_factory=dict)
    #: False in a stage ``--only`` did not select: its runs must be finished already
    allow_train: bool = True
    results: Results | None = None

    def log(self, msg: str) -> None:
        if self.progress:
            print(msg, file=sys.stderr, flush=True)

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any]]:
        """Run ``jobs`` on the pool (a job repeated by out_dir runs once) and return their records in order."""
        unique = list({j.out_dir: j for j in reversed(list(jobs))}.values())[::-1]
        for rec in run_jobs(unique, progress=self.progress, **self.pool):
            self.records[rec["config"]["out_dir"]] = rec
        return [self.records[j.out_dir] for j in jobs]

    def train_seconds(self) -> float:
        """Summed training wall time of every run of this invocation (finished earlier or now)."""
        return float(sum(r.get("wall_time_s", 0.0) for r in self.records.values()))


def _no_jobs(ctx: Context) -> list[Job]:
    return []


@dataclass(frozen=True)
class Stage:
    """``name``; ``jobs(ctx)``: the runs it needs; ``collect(ctx, records) -> Outcome | None``: its numbers;
    ``needs``: stages whose jobs ``--only name`` runs too (e.g. the teachers); ``upfront``: its jobs depend on
    the settings only, so they run in the first batch with every other upfront stage's."""

    name: str
    jobs: Callable[[Context], Sequence[Job]] = _no_jobs
    collect: Callable[[Context, list[dict[str, Any]]], Outcome | None] | None = None
    needs: tuple[str, ...] = ()
    upfront: bool = False


@dataclass(frozen=True)
class Experiment:
    """A reproduction as data.

    ``settings(quick) -> settings``; ``stages``; ``report(ctx, summary, provenance) -> markdown``;
    ``figures(ctx, results)`` writes figures to ``results.path(name)``; ``summary_keys``: the order (and
    choice) of summary.json's keys (default: every value, in the order collected); ``default_seeds(settings)
    -> n``; ``options``: the ``reproduce`` options it takes, of ``seeds``, ``only``, ``workers`` (the job pool:
    ``--workers``, ``--executor``); ``folder(out, quick) -> results folder``;
    ``check(data_dir)``: raises a clear error before anything is written (e.g. missing data);
    ``extra_provenance(ctx) -> dict``: fields added to provenance.json."""

    name: str
    settings: Callable[[bool], Any]
    stages: Sequence[Stage]
    report: Callable[[Context, dict[str, Any], dict[str, Any]], str]
    figures: Callable[[Context, Results], None] | None = None
    summary_keys: Sequence[str] | None = None
    default_seeds: Callable[[Any], int] = lambda s: 1
    options: frozenset[str] = frozenset({"seeds", "only", "workers"})
    folder: Callable[[Path, bool], Path] = lambda out, quick: out
    check: Callable[[str | None], None] | None = None
    extra_provenance: Callable[[Context], dict[str, Any]] | None = None

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def _selected(exp: Experiment, only: str | None) -> set[str]:
    if only is None:
        return set(exp.stage_names())
    by_name = {s.name: s for s in exp.stages}
    if only not in by_name:
        raise ValueError(f"unknown stage {only!r}; stages: {', '.join(by_name)}")
    todo, sel = [only], set()
    while todo:
        name = todo.pop()
        if name not in sel:
            sel.add(name)
            todo += list(by_name[name].needs)
    return sel


def _finished(jobs: Sequence[Job]) -> list[dict[str, Any]] | None:
    recs = [finished_record(j.config) for j in jobs]
    return None if any(r is None for r in recs) else recs  # type: ignore[return-value]


def command(exp: Experiment, quick: bool, seeds: int | None, only: str | None, pool: dict[str, Any]) -> str:
    return (f"darkknowledge reproduce {exp.name}" + (" --quick" if quick else "")
            + (f" --seeds {seeds}" if seeds is not None else "") + (f" --only {only}" if only else "")
            + (f" --workers {pool.get('workers', 1)}" if pool else ""))


def run_experiment(exp: Experiment, out: str | Path, data_dir: str | None = None, quick: bool = False,
                   seeds: int | None = None, only: str | None = None, progress: bool = True,
                   pool: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or re-render) ``exp`` into ``out``; returns the summary. See the module docstring."""
    t0 = time.perf_counter()
    for opt, value in (("seeds", seeds), ("only", only), ("workers", pool)):
        if value is not None and opt not in exp.options:
            raise ValueError(f"experiment {exp.name!r} takes no --{opt} — run it without --{opt}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    selected = _selected(exp, only)
    if exp.check is not None:
        exp.check(data_dir)
    settings = exp.settings(quick)
    n_seeds = seeds if seeds is not None else exp.default_seeds(settings)
    ctx = Context(exp.name, exp.folder(Path(out), quick), data_dir, settings, list(range(n_seeds)), quick, progress,
                  dict(pool or {}))
    res = ctx.results = Results(ctx.out)
    try:
        upfront = [j for s in exp.stages if s.upfront and s.name in selected for j in s.jobs(ctx)]
        if upfront:
            ctx.log(f"{exp.name}: {len(upfront)} runs first")
            ctx.run(upfront)
        for stage in exp.stages:
            ctx.allow_train = stage.name in selected
            ts = time.perf_counter()
            recs = None
            if ctx.allow_train:
                ctx.log(f"== stage {stage.name}")
                recs = ctx.run(stage.jobs(ctx))
            else:  # reported with the most seeds whose runs have all finished
                all_seeds = ctx.seeds
                for n in range(len(all_seeds), 0, -1):
                    ctx.seeds = all_seeds[:n]
                    jobs = stage.jobs(ctx)
                    recs = _finished(jobs)
                    if recs is not None:
                        ctx.records.update((j.out_dir, r) for j, r in zip(jobs, recs))
                        break
                if recs is None:
                    ctx.seeds = all_seeds
                    continue
            outcome = stage.collect(ctx, recs) if stage.collect is not None else None
            if outcome is not None:
                ctx.values.update(outcome.values)
                ctx.details.update(outcome.details)
            ctx.seeds = list(range(n_seeds))
            ctx.times[stage.name] = time.perf_counter() - ts
        keys = exp.summary_keys if exp.summary_keys is not None else list(ctx.values)
        summary = summarize({k: ctx.values[k] for k in keys if k in ctx.values})
        res.write_json("summary.json", summary)
        if ctx.details:
            res.write_json("details.json", ctx.details)
        if exp.figures is not None:
            exp.figures(ctx, res)
        wall = time.perf_counter() - t0
        prov = provenance(command(exp, quick, seeds, only, ctx.pool), wall, ctx.seeds)
        prov["stage_wall_time_s"] = ctx.times
        prov.update(exp.extra_provenance(ctx) if exp.extra_provenance is not None else {})
        changed = res.commit(prov, lambda p: exp.report(ctx, summary, p))
    except BaseException:
        res.discard()
        raise
    ctx.log(f"{exp.name}: {'written' if changed else 'unchanged'} in {time.perf_counter() - t0:.0f} s: "
            f"{ctx.out}/report.md")
    return summary
