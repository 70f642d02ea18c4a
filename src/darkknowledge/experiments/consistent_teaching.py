"""Patient and consistent distillation (issue 24): ``darkknowledge reproduce consistent-teaching``.

Beyer et al. (2022), "Knowledge distillation: A good teacher is patient and consistent", and Stanton et al.
(2021): a student keeps more of its teacher when the teacher labels *exactly the augmented view the student
sees*, computed live (consistent teaching: ``data.augment`` with a live teacher, :mod:`~..data.augment`), and
when it trains long enough (patience). Per benchmark, with one augmentation list and one schedule for every
student:

- the ensemble, of members the student's size trained with the same augmentation (FSDD frames: 10 members;
  MNIST: 3 × 2×800 — the hinton-mnist 1200-1200 teacher needs 300 epochs, beyond one session; CIFAR-10:
  3 ``small_cnn``);
- the **labels-only student** (the fair control: same data, augmentation, schedule, size);
- the **distilled student**, consistent: ``kd`` with the live teacher on the augmented batch, in the form chosen
  on validation at the short length from function matching (``T = 1``, KL, no hard term; Beyer et al.) and the
  Hinton form (``T = 2``, hard term 0.5; Hinton et al. 2015 §2);
- both students at two training lengths (the curve of gain kept against length; the held-out speakers: one).

Gain kept = (distilled − labels) / (teacher − labels), accuracies on the test split, the labels-only mean as
the baseline, one value per distilled seed. Every choice (the form; each run's epoch) is made on validation.
Stages: ``members`` (teachers, labels students, the short-length students of both forms; one batch on the
pool), ``students`` (the chosen form at full length, and the held-out-speaker benchmark).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.jobs import Job
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..report import Results
from . import register_experiment

__all__ = ["EXPERIMENT", "Settings", "settings_for", "SUMMARY_KEYS", "BENCHMARKS", "FORMS"]

BENCHMARKS = ("mnist", "speech", "speech_heldout", "cifar10")
#: the distillation forms compared on validation (``method_args`` of kd)
FORMS = {"function_matching": {"temperature": 1.0, "w_soft": 1.0, "w_hard": 0.0, "kind": "kl"},
         "hinton": {"temperature": 2.0, "w_soft": 1.0, "w_hard": 0.5, "kind": "ce"}}
#: kd's (temperature, hard weight) tried at the short length on the first seed (the "defaults" stage): which
#: setting a user who changes nothing should get with consistent teaching (T = 2, 0.5 is the Hinton form above)
DEFAULT_GRID = ((2.0, 0.1), (2.0, 0.5), (4.0, 0.1), (4.0, 0.5))
SUMMARY_KEYS = ["mnist_teacher_errors", "mnist_labels_errors", "mnist_distilled_errors", "mnist_gain_kept",
                "speech_gain_kept", "speech_heldout_gain_kept", "cifar10_gain_kept"] + [
    f"{b}_{k}_acc" for b in BENCHMARKS for k in ("labels", "distilled", "teacher")]
SPEECH_AUG = [{"name": "time_mask", "width": 3}, {"name": "freq_mask", "width": 6}, {"name": "noise", "std": 0.1}]


@dataclass(frozen=True)
class Bench:
    """One benchmark: the data section, the teacher / member model and count, the student model, the
    augmentation, the optimiser, the members' epochs and the students' two lengths (short, full)."""
    data: dict[str, Any]
    teacher_model: dict[str, Any]
    members: int
    student_model: dict[str, Any]
    augment: list[dict[str, Any]]
    optim: dict[str, Any]
    member_epochs: int
    lengths: tuple[int, int]
    batch_size: int = 256
    member_optim: dict[str, Any] | None = None


@dataclass(frozen=True)
class Settings:
    quick: bool
    benches: dict[str, Bench] = field(default_factory=dict)
    seeds: int = 3
    threads: int = 1
    precision: str = "bf16"


def _benches(quick: bool) -> dict[str, Bench]:
    frac = {"fraction": 0.1} if quick else {}
    mlp = {"name": "mlp", "args": {"in_features": 784, "hidden": [800, 800]}}
    frames = {"name": "mlp", "args": {"in_features": 16 * 40, "hidden": [256, 256, 256]}}
    cnn = {"name": "small_cnn", "args": {"in_channels": 3, "image_size": 32, "width": 16, "dropout": 0.3}}
    sgd = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine", "warmup_epochs": 0.5, "grad_clip": 5.0}
    q = quick
    return {
        "mnist": Bench({"dataset": "mnist", "val_size": 5000, "split_seed": 0, **frac}, mlp, 2 if q else 3, mlp,
                       [{"name": "shift", "max": 2}], sgd, 2 if q else 24, (1, 2) if q else (8, 24), batch_size=128),
        "speech": Bench({"dataset": "fsdd-frames", "augment_shape": [16, 40], **frac}, frames, 2 if q else 10,
                        frames, SPEECH_AUG, sgd, 2 if q else 24, (1, 2) if q else (8, 24)),
        "speech_heldout": Bench({"dataset": "fsdd-frames-speakers", "augment_shape": [16, 40], **frac}, frames,
                                2 if q else 5, frames, SPEECH_AUG, sgd, 2 if q else 24, (2,) if q else (24,)),
        "cifar10": Bench({"dataset": "cifar10-jpeg", "val_size": 5000, **({"fraction": 0.04} if q else {})}, cnn,
                         2 if q else 3, cnn, [{"name": "crop", "padding": 4}, {"name": "hflip"}],
                         {**sgd, "weight_decay": 5e-4}, 2 if q else 12, (1, 2) if q else (4, 12), batch_size=128),
    }


def settings_for(quick: bool) -> Settings:
    return Settings(quick, _benches(quick), seeds=1 if quick else 3)


# --------------------------------------------------------------------------- the runs


def _cfg(ctx: Context, b: str, group: str, name: str, seed: int, model: dict[str, Any], epochs: int,
         optim: dict[str, Any] | None = None) -> dict[str, Any]:
    s, bench = ctx.settings, ctx.settings.benches[b]
    return {"name": name, "seed": seed, "epochs": epochs, "batch_size": bench.batch_size, "threads": s.threads,
            "precision": s.precision, "model": model,
            "data": {**bench.data, "data_dir": ctx.data_dir, "augment": bench.augment},
            "optim": dict(optim or bench.optim), "out_dir": str(ctx.out / "runs" / b / group / name)}


def members(ctx: Context, b: str) -> list[dict[str, Any]]:
    bench = ctx.settings.benches[b]
    return [_cfg(ctx, b, "members", f"member{k}", k, bench.teacher_model, bench.member_epochs, bench.member_optim)
            for k in range(bench.members)]


def labels(ctx: Context, b: str, length: int, seed: int) -> dict[str, Any]:
    bench = ctx.settings.benches[b]
    return _cfg(ctx, b, f"labels_{length}ep", f"labels_seed{seed}", 100 + seed, bench.student_model, length)


def distilled(ctx: Context, b: str, form: str, length: int, seed: int) -> dict[str, Any]:
    bench = ctx.settings.benches[b]
    c = _cfg(ctx, b, f"{form}_{length}ep", f"distilled_seed{seed}", 100 + seed, bench.student_model, length)
    c["distill"] = {"teachers": [str(Path(m["out_dir"]) / "best.safetensors") for m in members(ctx, b)],
                    "combine": "arithmetic"}
    c["method"], c["method_args"] = "kd", dict(FORMS[form])
    return c


def _short(ctx: Context, b: str) -> int:
    return ctx.settings.benches[b].lengths[0]


def _full(ctx: Context, b: str) -> int:
    return ctx.settings.benches[b].lengths[-1]


#: the benchmarks whose form is chosen on their own validation split (the held-out-speaker one uses speech's)
CHOOSE = ("mnist", "speech", "cifar10")


def first_jobs(ctx: Context) -> list[Job]:
    """Everything that does not wait for a choice: the teachers, the labels students at every length and the
    short-length distilled students of every form, first seed (they wait on the pool for their teachers)."""
    jobs = []
    for b in BENCHMARKS:
        jobs += [Job(c) for c in members(ctx, b)]
        jobs += [Job(labels(ctx, b, n, k)) for n in ctx.settings.benches[b].lengths for k in ctx.seeds]
        if b in CHOOSE:
            jobs += [Job(distilled(ctx, b, f, _short(ctx, b), ctx.seeds[0])) for f in FORMS]
    return jobs


def _acc(rec: dict[str, Any], part: str = "test") -> float:
    return float(rec["final"][part]["accuracy"])


def _mean(v: list[float]) -> float:
    return float(sum(v) / len(v))


def choose_forms(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    """The form of each benchmark: the better validation accuracy of the first seed at the short length."""
    forms: dict[str, Any] = {}
    for b in CHOOSE:
        val = {f: [_acc(ctx.records[distilled(ctx, b, f, _short(ctx, b), ctx.seeds[0])["out_dir"]], "val")]
               for f in FORMS}
        forms[b] = {"val_acc": val, "chosen": max(FORMS, key=lambda f: (_mean(val[f]), f == "function_matching"))}
    forms["speech_heldout"] = {"chosen": forms["speech"]["chosen"], "from": "speech"}
    return Outcome(details={"forms": forms})


def _form(ctx: Context, b: str) -> str:
    return ctx.details["forms"][b]["chosen"]


def student_jobs(ctx: Context) -> list[Job]:
    """The chosen form at every length and seed (the first seed's short run is done already)."""
    return [Job(distilled(ctx, b, _form(ctx, b), n, k)) for b in BENCHMARKS for n in ctx.settings.benches[b].lengths
            for k in ctx.seeds]


def grid_run(ctx: Context, b: str, t: float, w: float) -> dict[str, Any]:
    """The short-length, first-seed student of kd at (T, hard weight) — the Hinton form's run for (2, 0.5)."""
    if {"temperature": t, "w_soft": 1.0, "w_hard": w, "kind": "ce"} == FORMS["hinton"]:
        return distilled(ctx, b, "hinton", _short(ctx, b), ctx.seeds[0])
    c = distilled(ctx, b, "hinton", _short(ctx, b), ctx.seeds[0])
    c["method_args"] = {"temperature": t, "w_soft": 1.0, "w_hard": w, "kind": "ce"}
    c["out_dir"] = str(ctx.out / "runs" / b / f"kd_T{t:g}_w{w:g}_{_short(ctx, b)}ep" / f"distilled_seed{ctx.seeds[0]}")
    return c


def grid_jobs(ctx: Context) -> list[Job]:
    return [Job(grid_run(ctx, b, t, w)) for b in CHOOSE for t, w in DEFAULT_GRID]


def defaults(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    """Validation accuracy of each (T, hard weight) per benchmark, and its mean rank over the benchmarks (1 =
    best): the evidence for kd's defaults."""
    import numpy as np
    from scipy.stats import rankdata

    val = {b: [_acc(ctx.records[grid_run(ctx, b, t, w)["out_dir"]], "val") for t, w in DEFAULT_GRID] for b in CHOOSE}
    ranks = np.mean([rankdata([-v for v in val[b]]) for b in CHOOSE], 0)
    rows = [{"temperature": t, "w_hard": w, "val_acc": {b: val[b][i] for b in CHOOSE}, "mean_rank": float(ranks[i])}
            for i, (t, w) in enumerate(DEFAULT_GRID)]
    return Outcome(details={"defaults": rows})


def _gain(teacher: float, base: list[float], student: list[float]) -> list[float]:
    """(student − mean(base)) / (teacher − mean(base)), per student."""
    b = _mean(base)
    return [(s - b) / (teacher - b) if teacher != b else float("nan") for s in student]


def students(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    v: dict[str, list[float]] = {}
    det: dict[str, Any] = {}
    for b in BENCHMARKS:
        rec = {c["out_dir"]: ctx.records[c["out_dir"]] for c in members(ctx, b)}
        form = _form(ctx, b)
        curve = {}
        for n in ctx.settings.benches[b].lengths:
            lab = [ctx.records[labels(ctx, b, n, k)["out_dir"]] for k in ctx.seeds]
            dis = [ctx.records[distilled(ctx, b, form, n, k)["out_dir"]] for k in ctx.seeds]
            teacher = float(dis[0]["final"]["teacher_test"]["accuracy"])
            la, da = [_acc(r) for r in lab], [_acc(r) for r in dis]
            curve[str(n)] = {"labels_acc": la, "distilled_acc": da, "gain_kept": _gain(teacher, la, da),
                             "labels_s": [r["wall_time_s"] for r in lab], "distilled_s": [r["wall_time_s"] for r in dis]}
        full = curve[str(_full(ctx, b))]
        v[f"{b}_labels_acc"], v[f"{b}_distilled_acc"] = full["labels_acc"], full["distilled_acc"]
        v[f"{b}_teacher_acc"] = [teacher]
        v[f"{b}_gain_kept"] = full["gain_kept"]
        if b == "mnist":
            n_test = int(dis[0]["final"]["test"]["n"])
            v["mnist_teacher_errors"] = [round((1 - teacher) * n_test)]
            v["mnist_labels_errors"] = [float(r["final"]["test"]["errors"]) for r in lab]
            v["mnist_distilled_errors"] = [float(r["final"]["test"]["errors"]) for r in dis]
        det[b] = {"form": form, "curve": curve, "teacher_acc": teacher, "member_acc": [_acc(r) for r in rec.values()],
                  "member_s": [r["wall_time_s"] for r in rec.values()], "n_test": int(dis[0]["final"]["test"]["n"]),
                  "agreement": [r["final"]["test"].get("agreement") for r in dis]}
    return Outcome(v, {"benchmarks": det, "protocol_2015": protocol_2015(ctx)})


def protocol_2015(ctx: Context) -> dict[str, Any]:
    """The 2015 protocol's rows from the committed hinton-* results beside this folder (or the repository's)."""
    def load(name: str) -> dict[str, Any] | None:
        for root in (ctx.out.parent, Path(__file__).resolve().parents[3] / "results"):
            p = root / name / "summary.json"
            if p.is_file():
                return json.loads(p.read_text())
        return None

    def mean(s: dict[str, Any], key: str) -> float | None:
        return s[key]["mean"] if key in s else None

    out: dict[str, Any] = {}
    if (m := load("hinton-mnist")) is not None:
        out["mnist"] = {"teacher": mean(m, "teacher_errors"), "labels": mean(m, "baseline_errors"),
                        "distilled": mean(m, "distilled_errors"), "gain_kept": mean(m, "gap_closed"), "unit": "errors"}
    if (s := load("hinton-speech")) is not None:
        out["speech"] = {"teacher": mean(s, "ensemble_frame_acc"), "labels": mean(s, "baseline_frame_acc"),
                         "distilled": mean(s, "distilled_frame_acc"), "gain_kept": mean(s, "gain_kept"),
                         "unit": "accuracy"}
        if "speaker_heldout_ensemble_frame_acc" in s:
            t, lab, d = (mean(s, f"speaker_heldout_{k}_frame_acc") for k in ("ensemble", "baseline", "distilled"))
            out["speech_heldout"] = {"teacher": t, "labels": lab, "distilled": d, "unit": "accuracy",
                                     "gain_kept": (d - lab) / (t - lab) if t != lab else None}
    return out


# --------------------------------------------------------------------------- report


def _report(ctx: Context, summary: dict[str, Any], prov: dict[str, Any]) -> str:
    from . import consistent_teaching_report as rep

    return rep.report(ctx.settings, summary, ctx.details, prov)


def _figures(ctx: Context, res: Results) -> None:
    from . import consistent_teaching_report as rep

    rep.figures(res, ctx.details)


EXPERIMENT = register_experiment(Experiment(
    "consistent-teaching", settings=settings_for, default_seeds=lambda s: s.seeds,
    stages=[Stage("members", first_jobs, choose_forms, upfront=True),
            Stage("students", student_jobs, students, needs=("members",)),
            Stage("defaults", grid_jobs, defaults, needs=("members",))],
    summary_keys=SUMMARY_KEYS, report=_report, figures=_figures,
    extra_provenance=lambda ctx: {"settings": {"seeds": ctx.settings.seeds, "precision": ctx.settings.precision,
                                               "benches": {b: vars(x) for b, x in ctx.settings.benches.items()}}}))
