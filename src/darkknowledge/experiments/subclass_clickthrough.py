"""``darkknowledge reproduce subclass-clickthrough``: subclass distillation on SYNTHETIC clickthrough data.

No large real clickthrough set is available here, so this uses the seeded generator of
:mod:`darkknowledge.data.clickthrough` (spec §11.4): each row has a hidden user segment (8) and ad
segment (6); the 48 (user, ad) cells drive the click rate (``W[u, a] ~ N(0, 1.5²)``, mean CTR 4 %),
and the Criteo-like features (13 counts, 26 hashed categoricals, 5–20 % missing) only partly reveal
the segments. **The segments are never shown to any model**; they are used only to evaluate the
teacher's subclasses (NMI) and the true click probabilities give the oracle ("Bayes") log loss and
AUC. The results are not comparable with the paper's Criteo numbers.

Models (an embedding + MLP, ``ctr_mlp`` in :mod:`darkknowledge.models`): every categorical field is hashed into
``num_buckets`` buckets and embedded; the embeddings and the 26 dense inputs (13 ``log1p`` counts and
13 missing indicators) feed a ReLU MLP. One input tensor ``[N, 52]`` holds the dense values and the
bucket ids (as floats), split inside the model.

Stages:

1. ``teacher``   a wide ``ctr_mlp`` with a 2 × s subclass head, ``CE + β·L_aux`` (training engine;
                 epoch selected on validation log loss), one per seed;
2. ``students``  a small ``ctr_mlp`` trained for a fixed number of steps by labels only,
                 conventional distillation (grouped class logits) and subclass distillation (all
                 2·s subclass logits), with test log loss and AUC evaluated every ``eval_every``
                 steps (the engine's ``max_steps`` / ``eval_every_steps``);
3. ``criteo``    the Criteo TSV loader on the real 1,000-row sample (schema check + a tiny pipeline
                 fit; skipped when the sample is absent).

Every run is a job (kinds ``subclass-ctr``: on the generated rows, ``criteo-sample``: on the real sample)
on the shared stage runner (:mod:`darkknowledge.engine.stages`); the report is
``templates/subclass_clickthrough.md``.

Summary keys: ``<method>_logloss_final``, ``<method>_auc_final`` (test, after the last step),
``<method>_steps_to_scratch_best`` (first evaluated step at which the method's test log loss is at
most the best test log loss the labels-only student reaches anywhere on its curve, same seed) and
``<method>_steps_to_25pct_gain`` (first step closing 25 % of the gap between the base-rate log loss
and the oracle's); a target not reached is recorded as the total number of steps and flagged in the
report. Extras: ``<method>_logloss_best`` / ``<method>_auc_best``, the best points of the test curves
(selected on the test set itself, so optimistic; shown because labels-only students overfit).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import Splits, TensorData, load_dataset
from ..data.clickthrough import ClickthroughConfig, ClickthroughWorld, ctr_inputs
from ..engine.jobs import Job, cached_eval, register_job_kind, run_cached, run_jobs
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..models import load_model
from ..report import Results, markdown_table, render
from ..subclass import subclass_nmi, subclass_usage
from . import register_experiment
from .subclass_common import fmt_pm, run_provenance, runs_dir, stage_times, subclass_logits_of, template
from .subclass_figures import ctr_curves_figure

NAME = "subclass-clickthrough"
STAGES = ("teacher", "students", "criteo")
METHODS = ("scratch", "conventional", "subclass")
GAIN = 0.25  # the "steps to" target: close this fraction of the base-rate → oracle log-loss gap
STEPS_TO = ("steps_to_scratch_best", "steps_to_25pct_gain")
SUMMARY_KEYS = tuple(f"{m}_{k}" for m in METHODS for k in ("logloss_final", "auc_final", *STEPS_TO))
TEACHER_KEYS = ("teacher_logloss", "teacher_auc", "teacher_nmi_cell", "teacher_nmi_user", "teacher_nmi_ad",
                "teacher_subclasses_used")
CRITEO_KEYS = ("rows", "ctr", "heldout_logloss", "heldout_auc")
#: every summary key, in summary.json's order
ALL_KEYS = (*SUMMARY_KEYS, *TEACHER_KEYS, *(f"{m}_{k}" for m in METHODS for k in ("logloss_best", "auc_best")),
            *(f"criteo_sample_{k}" for k in CRITEO_KEYS), "oracle_logloss", "oracle_auc", "base_rate_logloss",
            "test_ctr")

__all__ = ["EXPERIMENT", "NAME", "METHODS", "SUMMARY_KEYS", "CtrSettings", "ctr_settings", "criteo_sample_check"]


# --------------------------------------------------------------------------------------------------
# settings and data


@dataclasses.dataclass(frozen=True)
class CtrSettings:
    train_rows: int = 300_000
    val_rows: int = 50_000
    test_rows: int = 100_000
    world_seed: int = 0
    num_buckets: int = 4096
    subclasses: int = 8
    teacher_emb: int = 8
    teacher_hidden: tuple[int, ...] = (256, 256)
    teacher_epochs: int = 3
    student_emb: int = 4
    student_hidden: tuple[int, ...] = (32,)
    batch_size: int = 512
    lr: float = 1e-3
    beta: float = 0.1  # not the demo's 1.0: see the report (β = 1 collapses p(click) towards 1/2 at 4 % CTR)
    aux_temperature: float = 1.0
    temperature: float = 4.0
    alpha: float = 0.5
    student_steps: int = 3000
    eval_every: int = 100
    threads: int = 1


def ctr_settings(quick: bool) -> CtrSettings:
    if quick:
        return CtrSettings(train_rows=20_000, val_rows=5_000, test_rows=10_000, teacher_epochs=2, student_steps=200,
                           eval_every=25)
    return CtrSettings()


@functools.lru_cache(maxsize=2)
def ctr_splits(st: CtrSettings) -> tuple[Splits, dict[str, Any], ClickthroughWorld]:
    """The world's train / val / test rows (row streams 1, 2, 3), their hidden segments, and the world. Memoised."""
    world = ClickthroughWorld(ClickthroughConfig(), st.world_seed)
    tds, segs = {}, {}
    for seed, (name, n) in enumerate((("train", st.train_rows), ("val", st.val_rows), ("test", st.test_rows)), 1):
        data, seg = world.sample(n, seed)
        tds[name] = TensorData(ctr_inputs(data, st.num_buckets), torch.from_numpy(data.labels).long())
        segs[name] = seg
    return Splits(tds["train"], tds["val"], tds["test"], 2, "synthetic-clickthrough"), segs, world


@register_job_kind("subclass-ctr")
def train_on_clickthrough(config: dict[str, Any], *, progress: bool, need_weights: bool,
                          quick: bool = False) -> dict[str, Any]:
    """A run on the synthetic clickthrough rows of ``ctr_settings(quick)`` (``run_cached``)."""
    return run_cached(config, splits=ctr_splits(ctr_settings(quick))[0], progress=progress, need_weights=need_weights)


def _click_prob(logits: Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=1)[:, 1].numpy()


def binary_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    p = np.clip(p, 1e-7, 1 - 1e-7)
    ll = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return {"logloss": ll, "auc": float(roc_auc_score(y, p))}


@functools.lru_cache(maxsize=2)
def floors(st: CtrSettings) -> dict[str, float]:
    """The oracle's (true click probabilities) and the base rate's test metrics, and the "25 % of the gain"
    target log loss."""
    splits, segs, _ = ctr_splits(st)
    yt = splits.test.y.numpy()
    oracle = binary_metrics(segs["test"].click_prob, yt)
    base = binary_metrics(np.full(len(yt), float(splits.train.y.float().mean())), yt)
    return {"oracle_logloss": oracle["logloss"], "oracle_auc": oracle["auc"], "base_rate_logloss": base["logloss"],
            "test_ctr": float(yt.mean()), "target_ll": base["logloss"] - GAIN * (base["logloss"] - oracle["logloss"])}


# --------------------------------------------------------------------------------------------------
# the runs


def _job(ctx: Context, cfg: dict[str, Any]) -> Job:
    return Job(cfg, {"quick": ctx.quick}, kind="subclass-ctr")


def teacher_job(ctx: Context, seed: int) -> Job:
    st = ctx.settings
    return _job(ctx, {
        "name": f"ctr_teacher_seed{seed}", "seed": seed, "epochs": st.teacher_epochs, "batch_size": st.batch_size,
        "eval_batch_size": 10000, "threads": st.threads, "select_metric": "nll",
        "optim": {"name": "adam", "lr": st.lr, "schedule": "constant"},
        "data": {"dataset": f"synthetic-clickthrough(world {st.world_seed}, {st.train_rows} rows)"},
        "model": {"name": "subclass", "args": {"backbone": "ctr_mlp", "subclasses": st.subclasses,
                                               "num_buckets": st.num_buckets, "emb_dim": st.teacher_emb,
                                               "hidden": list(st.teacher_hidden)}},
        "method": "subclass_teacher", "method_args": {"beta": st.beta, "aux_temperature": st.aux_temperature},
        "out_dir": str(runs_dir(ctx) / f"teacher_seed{seed}")})


def student_job(ctx: Context, method: str, seed: int) -> Job:
    """One student: ``st.student_steps`` Adam steps through the engine, the test curve every ``eval_every``."""
    st = ctx.settings
    args = {"num_buckets": st.num_buckets, "emb_dim": st.student_emb, "hidden": list(st.student_hidden)}
    model = ({"name": "subclass", "args": {"backbone": "ctr_mlp", "subclasses": st.subclasses, **args}}
             if method == "subclass" else {"name": "ctr_mlp", "args": args})
    steps_per_epoch = -(-st.train_rows // st.batch_size)
    cfg: dict[str, Any] = {
        "name": f"{method}_seed{seed}", "seed": seed, "epochs": -(-st.student_steps // steps_per_epoch),
        "max_steps": st.student_steps, "eval_every_steps": st.eval_every, "batch_size": st.batch_size,
        "eval_batch_size": 20000, "threads": st.threads, "select_metric": "nll",
        "optim": {"name": "adam", "lr": st.lr, "schedule": "constant"},
        "data": {"dataset": f"synthetic-clickthrough(world {st.world_seed}, {st.train_rows} rows)"},
        "model": model, "method": {"scratch": "labels", "conventional": "kd", "subclass": "subclass_kd"}[method],
        "out_dir": str(runs_dir(ctx) / f"{method}_seed{seed}")}
    if method != "scratch":  # conventional: the teacher's class probabilities (its subclasses grouped)
        cfg["distill"] = {"teachers": [str(Path(teacher_job(ctx, seed).out_dir) / "best.safetensors")],
                          "temperature": st.temperature, "w_soft": st.alpha, "w_hard": 1 - st.alpha}
    if method == "subclass":
        cfg["method_args"] = {"temperature": st.temperature, "alpha": st.alpha}
    return _job(ctx, cfg)


def learning_curve(rec: dict[str, Any]) -> list[dict[str, float]]:
    """The run record's test curve as ``{"step", "logloss", "auc"}`` rows (log loss = the test NLL)."""
    return [{"step": c["step"], "logloss": c["nll"], "auc": c["auc"]} for c in rec["curve"]]


def _first_step(curve: list[dict[str, float]], target: float, total: int) -> tuple[int, bool]:
    for c in curve:
        if c["logloss"] <= target:
            return int(c["step"]), True
    return total, False


# --------------------------------------------------------------------------------------------------
# stages


def teachers(ctx: Context) -> list[Job]:
    return [teacher_job(ctx, s) for s in ctx.seeds]


def teacher_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    st = ctx.settings
    splits, segs, _ = ctr_splits(st)
    yt = splits.test.y.numpy()
    v: dict[str, list[float]] = {}
    for j in teachers(ctx):
        def evaluate(j: Job = j) -> dict[str, Any]:
            run_jobs([dataclasses.replace(j, need_weights=True)], progress=ctx.progress)  # rebuilt if missing
            z_test = subclass_logits_of(load_model(Path(j.out_dir) / "best.safetensors"), splits.test.x, 20000)
            met = binary_metrics(_click_prob(torch.logsumexp(z_test.view(len(yt), 2, -1), -1)), yt)
            pred = z_test.argmax(1).numpy()
            return {"teacher_logloss": met["logloss"], "teacher_auc": met["auc"],
                    "teacher_nmi_cell": subclass_nmi(pred, segs["test"].cell),
                    "teacher_nmi_user": subclass_nmi(pred, segs["test"].user),
                    "teacher_nmi_ad": subclass_nmi(pred, segs["test"].ad),
                    "teacher_subclasses_used": subclass_usage(pred, 2, st.subclasses)["num_used"]}

        for k, x in cached_eval(j.out_dir, "ctr_teacher_test", evaluate).items():
            v.setdefault(k, []).append(x)
    fl = floors(st)
    v.update({k: [fl[k]] for k in ("oracle_logloss", "oracle_auc", "base_rate_logloss", "test_ctr")})
    return Outcome(v)


def student_jobs(ctx: Context) -> list[Job]:
    return teachers(ctx) + [student_job(ctx, m, s) for s in ctx.seeds for m in METHODS]


def students(ctx: Context) -> tuple[dict[str, list[float]], dict[str, int], dict[str, list[list[dict[str, float]]]]]:
    """From the students' records: summary values, how many seeds never reached each "steps to" target
    (counted as the total number of steps), and the test curves per method."""
    st, target_ll = ctx.settings, floors(ctx.settings)["target_ll"]
    v: dict[str, list[float]] = {}
    censored: dict[str, int] = {}
    curves: dict[str, list[list[dict[str, float]]]] = {}
    for s in ctx.seeds:
        curve = {m: learning_curve(ctx.records[student_job(ctx, m, s).out_dir]) for m in METHODS}
        scratch_best = min(c["logloss"] for c in curve["scratch"])
        for m, cv in curve.items():
            curves.setdefault(m, []).append(cv)
            v.setdefault(f"{m}_logloss_final", []).append(cv[-1]["logloss"])
            v.setdefault(f"{m}_auc_final", []).append(cv[-1]["auc"])
            v.setdefault(f"{m}_logloss_best", []).append(min(c["logloss"] for c in cv))
            v.setdefault(f"{m}_auc_best", []).append(max(c["auc"] for c in cv))
            for key, target in zip(STEPS_TO, (scratch_best, target_ll)):
                step, ok = _first_step(cv, target, st.student_steps)
                v.setdefault(f"{m}_{key}", []).append(step)
                censored[f"{m}_{key}"] = censored.get(f"{m}_{key}", 0) + (not ok)
    return v, censored, curves


def student_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    return Outcome(students(ctx)[0])


# the real Criteo sample


@functools.lru_cache(maxsize=2)
def _criteo_sample(data_dir: str | None) -> Any:
    from ..data.common import DatasetNotFoundError
    from ..data.criteo import load_criteo_sample

    try:
        return load_criteo_sample("train", data_dir)
    except (DatasetNotFoundError, FileNotFoundError):
        return None


@register_job_kind("criteo-sample")
def train_on_criteo_sample(config: dict[str, Any], *, progress: bool, need_weights: bool,
                           data_dir: str | None = None) -> dict[str, Any]:
    """A run on the real Criteo sample: rows 0–799 train, 800–999 test, no validation (``run_cached``)."""
    splits = load_dataset("criteo-sample", data_dir, val_size=0)
    return run_cached(config, splits=splits, progress=progress, need_weights=need_weights)


def criteo_job(data_dir: str | None, out_dir: Path, num_buckets: int = 4096, seed: int = 0) -> Job:
    """A tiny labels-only ``ctr_mlp`` on 800 rows of the Criteo sample, evaluated on the other 200."""
    return Job({"name": "criteo_sample", "seed": seed, "epochs": 8, "batch_size": 100, "threads": 1,
                "eval_every_steps": 64, "optim": {"name": "adam", "lr": 3e-3, "schedule": "constant"},
                "data": {"dataset": "criteo-sample", "val_size": 0},
                "model": {"name": "ctr_mlp", "args": {"num_buckets": num_buckets, "emb_dim": 4, "hidden": [32]}},
                "out_dir": str(out_dir)}, {"data_dir": data_dir}, kind="criteo-sample")


def criteo_facts(data_dir: str | None, rec: dict[str, Any]) -> dict[str, Any]:
    """The sample's size, clicks and missing rates, and the fitted model's held-out metrics beside the base
    rate's (fitted on the 800 training rows)."""
    data = _criteo_sample(data_dir)
    y = torch.from_numpy(data.labels).long()
    end = rec["curve"][-1]
    base = float(y[:800].float().mean())
    yt = y[800:].float()
    base_ll = float(-(yt * np.log(base) + (1 - yt) * np.log(1 - base)).mean())
    return {"rows": int(len(y)), "clicks": int(y.sum()), "ctr": float(y.float().mean()),
            "int_missing_rate": float(np.isnan(data.ints).mean()), "cat_missing_rate": float((data.cats == -1).mean()),
            "heldout_logloss": end["nll"], "heldout_auc": end["auc"], "heldout_base_rate_logloss": base_ll}


def criteo_sample_check(data_dir: str | None, out_dir: Path, num_buckets: int = 4096, seed: int = 0,
                        progress: bool = False) -> dict[str, Any] | None:
    """Read the real 1,000-row Criteo sample with the TSV loader, featurise it, and fit a tiny labels-only
    ``ctr_mlp`` through the engine as a pipeline check (:func:`criteo_job`); ``None`` when the sample is absent."""
    if _criteo_sample(data_dir) is None:
        return None
    (rec,) = run_jobs([criteo_job(data_dir, out_dir, num_buckets, seed)], progress=progress)
    return criteo_facts(data_dir, rec)


def criteo_jobs(ctx: Context) -> list[Job]:
    if _criteo_sample(ctx.data_dir) is None:
        return []
    return [criteo_job(ctx.data_dir, runs_dir(ctx) / "criteo_sample", ctx.settings.num_buckets)]


def criteo(ctx: Context) -> dict[str, Any] | None:
    jobs = criteo_jobs(ctx)
    return criteo_facts(ctx.data_dir, ctx.records[jobs[0].out_dir]) if jobs and jobs[0].out_dir in ctx.records \
        else None


def criteo_numbers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    facts = criteo(ctx)
    return Outcome({f"criteo_sample_{k}": [facts[k]] for k in CRITEO_KEYS} if facts else {})


# --------------------------------------------------------------------------------------------------
# report


def figures(ctx: Context, res: Results) -> None:
    if all(f"{m}_logloss_final" in ctx.values for m in METHODS) and "teacher_auc" in ctx.values:
        from ..report import summarize

        ctr_curves_figure(res.path("curves.png"), students(ctx)[2], summarize(ctx.values), ctx.settings.batch_size)


def _paired(summary: dict[str, Any], a: str, b: str) -> np.ndarray:
    return np.asarray(summary[a]["values"]) - np.asarray(summary[b]["values"])


def _sd(d: np.ndarray) -> float:
    return float(d.std(ddof=1)) if d.size > 1 else 0.0


def report(ctx: Context, summary: dict[str, Any], prov: dict[str, Any]) -> str:
    if not all(k in summary for k in (*SUMMARY_KEYS, *TEACHER_KEYS)):
        return f"# {NAME}\n\nIncomplete: rerun `darkknowledge reproduce {NAME}` without --only.\n"
    st, censored, sec = ctx.settings, students(ctx)[1], template(NAME.replace("-", "_"))

    def steps(key: str) -> str:
        e, c = summary[key], censored.get(key, 0)
        return f"{e['mean']:.0f} ± {e['std']:.0f}" + (f" ({c}/{e['n']} never reached: counted as {st.student_steps})"
                                                      if c else "")

    def plain(key: str) -> str:
        return f"{summary[key]['mean']:.4f}"

    rows = [[m, *(fmt_pm(summary[f"{m}_{k}"], 4) for k in ("logloss_final", "auc_final", "logloss_best", "auc_best")),
             *(steps(f"{m}_{k}") for k in STEPS_TO)] for m in METHODS]
    rows += [["teacher (wide, subclass head)", fmt_pm(summary["teacher_logloss"], 4), fmt_pm(summary["teacher_auc"], 4),
              "", "", "", ""],
             ["oracle (true click probability)", plain("oracle_logloss"), plain("oracle_auc"), "", "", "", ""],
             ["base rate (constant CTR)", plain("base_rate_logloss"), "0.5", "", "", "", ""]]
    table = markdown_table(["student", "test log loss (final)", "test AUC (final)", "best log loss on the curve (*)",
                            "best AUC on the curve (*)", "steps to labels-only's best log loss",
                            f"steps to {100 * GAIN:.0f}% of the oracle gain"], rows)
    ll, auc, llb = ({m: summary[f"{m}_{k}"]["mean"] for m in METHODS} for k in ("logloss_final", "auc_final",
                                                                               "logloss_best"))
    better = ll["subclass"] < min(ll["scratch"], ll["conventional"]) and auc["subclass"] > max(auc["scratch"],
                                                                                               auc["conventional"])
    faster = summary["subclass_steps_to_25pct_gain"]["mean"] < min(summary[f"{m}_steps_to_25pct_gain"]["mean"]
                                                                   for m in ("scratch", "conventional"))
    d_ll = _paired(summary, "subclass_logloss_final", "conventional_logloss_final")
    d_ll_s = _paired(summary, "subclass_logloss_final", "scratch_logloss_final")
    d_auc = _paired(summary, "subclass_auc_final", "conventional_auc_final")

    def clear(d: np.ndarray, sign: float) -> bool:  # a mean difference inside seed noise is not a win
        return bool(sign * d.mean() > 0 and abs(d.mean()) > _sd(d))

    verdict_b = sec["holds" if better and clear(d_ll, -1.0) and clear(d_auc, 1.0) else
                    "within_noise" if better else "not_holds"]
    facts = criteo(ctx)
    return render(
        sec[""], name=NAME, quick_note=sec["quick_note"] if ctx.quick else "", st=st, summary=summary,
        ctr_pct=100 * summary["test_ctr"]["mean"], n_seeds=len(ctx.seeds), table=table, gain=100 * GAIN,
        target_ll=floors(st)["target_ll"], verdict_b=verdict_b, d_ll=d_ll.mean(), d_ll_sd=_sd(d_ll),
        d_ll_s=d_ll_s.mean(), d_ll_s_sd=_sd(d_ll_s), auc=auc, llb=llb,
        lower="lower" if llb["subclass"] < min(llb["scratch"], llb["conventional"]) else "NOT lower",
        verdict_f=sec["holds" if faster else "not_holds"],
        nmi=render(sec["nmi"], cell=fmt_pm(summary["teacher_nmi_cell"], 3), user=fmt_pm(summary["teacher_nmi_user"], 3),
                   ad=fmt_pm(summary["teacher_nmi_ad"], 3), used=fmt_pm(summary["teacher_subclasses_used"], 1),
                   k=2 * st.subclasses),
        teacher_hidden=list(st.teacher_hidden), student_hidden=list(st.student_hidden), k=2 * st.subclasses,
        seeds=ctx.seeds, crit=render(sec["criteo"], c=facts, ctr=100 * facts["ctr"],
                                     ints=100 * facts["int_missing_rate"], cats=100 * facts["cat_missing_rate"])
        if facts else sec["no_criteo"],
        prov=prov, stages=stage_times(prov),
        run_min=prov["run_wall_time_total_s"] / 60, runs="runs-quick" if ctx.quick else "runs")


EXPERIMENT = register_experiment(Experiment(
    NAME, settings=ctr_settings, default_seeds=lambda st: 3,
    stages=[Stage("teacher", teachers, teacher_numbers),
            Stage("students", student_jobs, student_numbers, needs=("teacher",)),
            Stage("criteo", criteo_jobs, criteo_numbers)],
    summary_keys=ALL_KEYS, report=report, figures=figures,
    extra_provenance=lambda ctx: run_provenance(
        ctx, settings=dataclasses.asdict(ctx.settings), world=repr(ctr_splits(ctx.settings)[2]),
        censored_steps_to=students(ctx)[1] if "scratch_logloss_final" in ctx.values else {},
        criteo_sample=criteo(ctx), target_logloss_25pct_gain=floors(ctx.settings)["target_ll"])))
