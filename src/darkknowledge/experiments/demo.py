"""``darkknowledge demo``: a teacher, a label-trained student and a distilled student — trained every time —
then a table, a figure, and a comparison with the committed reference runs.

MNIST when its files are found (``--data-dir`` / ``DARKKNOWLEDGE_DATA``, or a download), otherwise
scikit-learn's bundled 8×8 digits (no files, no network). A small version of Hinton et al. (2015) §3:
a dropout-regularised teacher trained on every training image with random shifts, then two unregularised
students on the same 20% transfer set (unshifted) — one from the labels, one distilled from the teacher's
soft targets with a small hard-label term.

* ``darkknowledge demo`` trains into a fresh folder (default ``runs/demo/<time stamp>/``, outside the
  committed results; ``--resume`` continues the newest unfinished one) and never writes to the repository.
* ``darkknowledge reproduce demo`` / ``demo-digits`` (``--seeds 3``) write the reference runs
  ``results/demo`` / ``results/demo-digits`` (``--quick``: ``results/demo-digits/quick``) that every
  demo compares itself with, saying whether it agrees within seed noise.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..data import DatasetNotFoundError, load_dataset
from ..engine.jobs import Job, run_jobs
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..report import Results, SummaryView, fmt, markdown_table, provenance, render, summarize
from ..report.results import claim
from . import register_experiment

__all__ = ["run_demo", "demo_configs", "pick_dataset", "REFERENCE_DIRS", "DEMO", "DEMO_DIGITS"]

TRANSFER_FRACTION = 0.2  # the students' share of the training split
MODELS = ("teacher", "baseline", "distilled")
#: where the committed reference runs of each dataset live (relative to the repository root)
REFERENCE_DIRS = {"mnist": "results/demo", "digits": "results/demo-digits"}
#: the digits students' temperature and hard-label weight, chosen on the validation split (mean over the
#: full and quick settings, 3 seeds; ties: the lower T)
DIGITS_T, DIGITS_W_HARD = 4.0, 0.5


def demo_configs(dataset: str, out: Path, seed: int, quick: bool, data_dir: str | None) -> dict[str, dict[str, Any]]:
    """The three runs' configs (plain dicts validated by :class:`~darkknowledge.config.TrainConfig`).

    The teacher trains on the whole training split (bar validation) with shifted inputs; both students
    train on the same seeded 20% of it, the transfer set, without shifts. Seed 0 keeps the folder names
    of the original single-seed demo (``runs/teacher`` ...); other seeds get a ``_seed<k>`` suffix.
    """
    mnist = dataset == "mnist"
    sfx = "" if seed == 0 else f"_seed{seed}"
    data = {"dataset": dataset, "data_dir": data_dir, "val_size": 5000 if mnist else 200}
    if mnist:
        t_epochs, s_epochs = (3, 8) if quick else (12, 30)
        big, small, inf, shift, in_drop, temp, batch = [1200, 1200], [800, 800], 784, 2, 0.2, 20.0, 128
    else:  # digits: settings chosen on the validation split (tools/tune_demo_digits.py, results/demo-digits/tuning)
        t_epochs, s_epochs = (20, 30) if quick else (60, 60)
        big, small, inf, shift, in_drop, temp, batch = [256, 256], [64, 64], 64, 0, 0.1, DIGITS_T, 32
    s_optim = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine"}
    teacher = {"name": "teacher", "seed": seed, "epochs": t_epochs, "batch_size": batch,
               "out_dir": str(out / f"teacher{sfx}"),
               "model": {"name": "mlp", "args": {"in_features": inf, "hidden": big, "dropout": 0.5,
                                                 "input_dropout": in_drop, "max_norm": 15.0}},
               "data": {**data, "augment": [{"name": "shift", "max": shift}] if shift else []},
               "optim": {"name": "adam", "lr": 1e-3, "schedule": "cosine"}}
    baseline = {"name": "baseline", "seed": seed, "epochs": s_epochs, "batch_size": batch,
                "out_dir": str(out / f"baseline{sfx}"),
                "model": {"name": "mlp", "args": {"in_features": inf, "hidden": small}},
                "data": {**data, "fraction": TRANSFER_FRACTION}, "optim": s_optim}
    distilled = {**baseline, "name": "distilled", "out_dir": str(out / f"distilled{sfx}"),
                 "distill": {"teachers": [str(out / f"teacher{sfx}" / "best.safetensors")], "temperature": temp,
                             "w_soft": 1.0, "w_hard": DIGITS_W_HARD if not mnist else 0.1}}
    return {"teacher": teacher, "baseline": baseline, "distilled": distilled}


def pick_dataset(data_dir: str | None) -> str:
    try:
        load_dataset("mnist", data_dir)
        return "mnist"
    except DatasetNotFoundError as e:
        print(f"MNIST not available ({str(e).splitlines()[0]}); using scikit-learn's 8x8 digits instead")
        return "digits"


def _jobs(dataset: str, runs: Path, seed: int, quick: bool, data_dir: str | None) -> list[Job]:
    return [Job(c) for c in demo_configs(dataset, runs, seed, quick, data_dir).values()]


def _values(recs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Test metrics of the three models (the teacher's as measured in the distilled student's run)."""
    tests = {"teacher": recs["distilled"]["final"]["teacher_test"], "baseline": recs["baseline"]["final"]["test"],
             "distilled": recs["distilled"]["final"]["test"]}
    out = {f"{k}_{m}": float(t[m]) for k, t in tests.items() for m in ("errors", "accuracy", "nll", "ece", "brier")}
    out["distilled_agreement"] = float(tests["distilled"]["agreement"])
    out["distilled_kl_teacher_student"] = float(tests["distilled"]["kl_teacher_student"])
    return out


# --------------------------------------------------------------------------- the reference runs

REFERENCE_REPORT = """# darkknowledge demo — reference runs ({dataset}{quick})

Command: `{prov[command]}`. Commit `{prov[git_commit]}`; {prov[machine][cpu]}; training time \
{prov[runs_wall_time_s]:.0f} s over {runs} runs. `darkknowledge demo` compares itself with these numbers.

{table}

The distilled student beats the label-trained one in {wins} of {seeds} seeds (mean accuracy \
{S.distilled_accuracy[mean]:.2%} vs {S.baseline_accuracy[mean]:.2%}).
"""


def _reference_runs(dataset: str, ctx: Context) -> list[Job]:
    return [j for k in ctx.seeds for j in _jobs(dataset, ctx.out / "runs", k, ctx.quick, ctx.data_dir)]


def _reference_values(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    values: dict[str, list[float]] = {}
    for i in range(0, len(recs), len(MODELS)):
        for k, v in _values(dict(zip(MODELS, recs[i:i + len(MODELS)]))).items():
            values.setdefault(k, []).append(v)
    return Outcome(values)


def _reference_report(dataset: str, ctx: Context, summary: dict[str, Any], prov: dict[str, Any]) -> str:
    d, b = summary["distilled_accuracy"]["values"], summary["baseline_accuracy"]["values"]
    rows = [[m, fmt(summary[f"{m}_errors"], 1), fmt(summary[f"{m}_accuracy"], 2, 100)] for m in MODELS]
    return render(REFERENCE_REPORT, dataset=dataset, quick=", quick" if ctx.quick else "",
                  prov=prov, runs=3 * len(ctx.seeds), seeds=len(ctx.seeds), wins=sum(x > y for x, y in zip(d, b)),
                  table=markdown_table(["model", "test errors", "test accuracy %"], rows), S=SummaryView(summary))


def _reference_provenance(dataset: str, ctx: Context) -> dict[str, Any]:
    recs = ctx.records.values()
    return {"runs_wall_time_s": sum(r["wall_time_s"] for r in recs),
            "runs_cpu_time_s": sum(r.get("cpu_time_s", 0.0) for r in recs),
            "settings": demo_configs(dataset, Path("runs"), 0, ctx.quick, None)}


def _check_mnist(data_dir: str | None) -> None:
    load_dataset("mnist", data_dir)  # a clear error now rather than after creating the folder


def _reference(name: str, dataset: str) -> Experiment:
    """The reference runs of ``darkknowledge demo`` on ``dataset``: ``--seeds`` seeds (default 3) of its three
    runs; ``--quick`` writes into ``<out>/quick``."""
    return Experiment(
        name, settings=lambda quick: None, default_seeds=lambda s: 3, options=frozenset({"seeds"}),
        stages=[Stage("runs", partial(_reference_runs, dataset), _reference_values)],
        report=partial(_reference_report, dataset), folder=lambda out, quick: out / ("quick" if quick else ""),
        check=_check_mnist if dataset == "mnist" else None, extra_provenance=partial(_reference_provenance, dataset))


DEMO = register_experiment(_reference("demo", "mnist"))
DEMO_DIGITS = register_experiment(_reference("demo-digits", "digits"))


# --------------------------------------------------------------------------- the demo itself


def _fresh_dir(base: Path, resume: bool) -> Path:
    """``base/<time stamp>``; with ``resume`` the newest unfinished one (or the newest, if all finished)."""
    if resume:
        olds = sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []
        if not olds:
            raise ValueError(f"--resume: no earlier demo in {base}/ to continue")
        unfinished = [p for p in olds if not (p / "summary.json").exists()]
        return (unfinished or olds)[-1]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d, k = base / stamp, 1
    while d.exists():
        d, k = base / f"{stamp}-{k}", k + 1
    return d


def _find_reference(dataset: str, quick: bool) -> tuple[Path | None, dict[str, Any] | None]:
    rel = Path(REFERENCE_DIRS[dataset]) / ("quick" if quick else "")
    for root in (Path.cwd(), Path(__file__).resolve().parents[3]):
        p = root / rel / "summary.json"
        if p.is_file():
            return p.parent, json.loads(p.read_text())
    return None, None


def _agrees(x: float, ref: dict[str, Any], n_test: int) -> str:
    """Within seed noise: |x − mean| ≤ 3·std + one test example (the std of n ≥ 2 reference seeds)."""
    if ref["n"] < 2:
        return "– (reference has 1 seed)"
    ok = abs(x - ref["mean"]) <= 3 * ref["std"] + 1.0 / n_test
    return "yes" if ok else f"**no** ({(x - ref['mean']) / max(ref['std'], 1e-12):+.1f} std)"


DEMO_REPORT = """# darkknowledge demo ({dataset}{quick})

{quick_note}{setup}

{table}

{verdict} {refnote} Seed {seed}; epochs selected on the validation split; the test set is used only for this \
table. Training wall time {prov[runs_wall_time_s]:.0f} s; commit {prov[git_commit]}.

![test errors and the teacher's soft targets](demo.png)
"""


def run_demo(out: str | Path | None = None, data_dir: str | None = None, quick: bool = False, seed: int = 0,
             progress: bool = True, dataset: str | None = None, resume: bool = False) -> dict[str, Any]:
    """Train the demo's three models into a fresh folder, print the table, write report and figure."""
    t0 = time.perf_counter()
    if out is not None:
        claim(out, "darkknowledge demo")  # not over the committed reference runs (`reproduce demo`) or others
    dataset = dataset or pick_dataset(data_dir)
    out = Path(out) if out is not None else _fresh_dir(Path("runs/demo"), resume)
    recs = dict(zip(MODELS, run_jobs(_jobs(dataset, out / "runs", seed, quick, data_dir), progress=progress)))
    values = _values(recs)
    res = Results(out)
    summary = summarize({k: [v] for k, v in values.items()})
    res.write_json("summary.json", summary)
    ref_dir, ref = _find_reference(dataset, quick)
    n_test = int(recs["baseline"]["final"]["test"]["n"])
    rows = []
    for m in MODELS:
        acc = values[f"{m}_accuracy"]
        r = (ref or {}).get(f"{m}_accuracy")
        rows.append([m, int(values[f"{m}_errors"]), f"{100 * acc:.2f}",
                     fmt(r, 2, 100) if r else "–", _agrees(acc, r, n_test) if r else "–"])
    table = markdown_table(["model", f"test errors (of {n_test})", "accuracy %", "reference accuracy % (mean ± std)",
                            "agrees within seed noise"], rows)
    ahead = values["distilled_accuracy"] > values["baseline_accuracy"]
    from .demo_figure import demo_figure

    demo_figure(res.path("demo.png"), recs, values, ref, dataset, data_dir)
    prov = provenance(f"darkknowledge demo{' --quick' if quick else ''}", time.perf_counter() - t0, [seed])
    prov["runs_wall_time_s"] = sum(r["wall_time_s"] for r in recs.values())
    fields = dict(
        dataset=dataset, quick=", quick" if quick else "", seed=seed, table=table,
        quick_note="**QUICK MODE**: a few epochs; the numbers check the pipeline, not the method.\n\n" if quick else "",
        setup=(f"Dataset: {dataset}. Teacher: {recs['teacher']['dataset']['train']} training images with random "
               f"shifts; both students: the same {recs['baseline']['dataset']['train']}-image transfer set "
               f"({TRANSFER_FRACTION:.0%} of the training split), no shifts; the distilled one at T = "
               f"{TrainConfig.model_validate(recs['distilled']['config']).method_args['temperature']:g}."),
        verdict=(f"Distilled student {'ahead of' if ahead else 'NOT ahead of'} the label-trained one "
                 f"({int(values['distilled_errors'])} vs {int(values['baseline_errors'])} test errors)."),
        refnote=(f"Reference: `{ref_dir}` ({ref['teacher_accuracy']['n']} seeds)." if ref else
                 "No committed reference runs found for this dataset and mode."))
    res.commit(prov, lambda p: render(DEMO_REPORT, prov=p, **fields))
    print("\n" + fields["quick_note"].replace("**", "") + fields["setup"] + "\n\n" + table + "\n")
    print(f"{fields['verdict']} {fields['refnote']}\nResults in {out}/ (report.md, demo.png; wall time "
          f"{time.perf_counter() - t0:.0f} s).")
    return summary
