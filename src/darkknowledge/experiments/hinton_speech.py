"""Hinton, Vinyals & Dean (2015) §4 and §6 on real speech: ``darkknowledge reproduce hinton-speech``.

The Free Spoken Digit Dataset stands in for the paper's 2,000 hours of voice search (spec §6.2): 40 log-mel
features per 10 ms frame, 10 past + 5 future context frames, "HMM states" digit × S segments (S = 3, 30
classes), frame classifiers that are plain ReLU MLPs, and word recognition by Viterbi over each digit's
left-to-right state chain with posteriors divided by the state priors (hybrid style; :mod:`~..speech`).

Stages (every run a job on the pool: ``--workers N``; ``--only STAGE``):

1. ``table1``   — ``M`` models differing only in seed on the official split (takes 0–4 test); the single-model
                  baseline is every member on its own (mean ± std over members); their arithmetic and geometric
                  combinations (Table 1's "10× ensemble"); one model of the same size trained on the ensemble's
                  soft targets at T ∈ T_LIST plus the hard term (weight 0.5, as the paper), ``seeds`` per T; the
                  reported T is the one with the best mean validation frame accuracy;
2. ``store``    — the ensemble's outputs written once per k as a store and one student (seed 0, the chosen T)
                  distilled from each;
3. ``speakers`` — the same on a split holding out two speakers (jackson, lucas): members, ensemble, distilled
                  at the chosen T (WER with unseen speakers);
4. ``reg3pct``  — 3% of the training recordings (Table 5): hard targets vs soft targets of member 0 (a
                  full-data model) and of the ensemble, train and test frame accuracy per epoch.

Selection (the epoch of every run, T) uses validation recordings carved from the training takes; the test
takes are only evaluated for reporting. Accuracies and WERs are fractions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..engine.jobs import Job, cached_eval, finished_record, run_cached
from ..engine.stages import Context, Experiment, Outcome, Stage
from ..report import Results
from . import hinton_speech_report as rep
from . import register_experiment

__all__ = ["EXPERIMENT", "PAPER", "Settings", "settings_for", "SUMMARY_KEYS", "speech_eval", "frame_splits"]

PAPER = rep.PAPER
SUMMARY_KEYS = ["baseline_frame_acc", "ensemble_frame_acc", "ensemble_geo_frame_acc", "distilled_frame_acc",
                "baseline_wer", "ensemble_wer", "ensemble_geo_wer", "distilled_wer", "gain_kept", "wer_gain_kept",
                "speaker_heldout_baseline_frame_acc", "speaker_heldout_ensemble_frame_acc",
                "speaker_heldout_distilled_frame_acc", "speaker_heldout_baseline_wer", "speaker_heldout_ensemble_wer",
                "speaker_heldout_distilled_wer", "reg3pct_hard_test_frame_acc", "reg3pct_soft_test_frame_acc",
                "reg3pct_ensemble_soft_test_frame_acc", "reg3pct_hard_train_frame_acc", "reg3pct_soft_train_frame_acc",
                "best_T"]
DATASETS = {"official": "fsdd-frames", "speaker": "fsdd-frames-speakers", "3pct": "fsdd-frames-3pct"}
STORE_KS: tuple[int | None, ...] = (1, 5, 10, None)  # None: all 30 classes


@dataclass(frozen=True)
class Settings:
    quick: bool
    members: int
    speaker_members: int
    seeds: int
    temperatures: tuple[float, ...]
    epochs: int
    reg_epochs: int
    hidden: tuple[int, ...] = (256, 256, 256)
    lr: float = 0.05
    batch_size: int = 256
    w_hard: float = 0.5  # the paper's "relative weight of 0.5 on the hard targets"
    threads: int = 1
    fraction: float = 1.0  # of the training frames (``--quick`` only: a pipeline check, not a result)


def settings_for(quick: bool) -> Settings:
    if quick:
        return Settings(True, members=3, speaker_members=2, seeds=1, temperatures=(1.0, 2.0), epochs=2, reg_epochs=4,
                        fraction=0.25)
    return Settings(False, members=10, speaker_members=5, seeds=3, temperatures=(1.0, 2.0, 5.0, 10.0), epochs=12,
                    reg_epochs=60)


# --------------------------------------------------------------------------- the runs


def cfg(ctx: Context, group: str, name: str, seed: int, split: str = "official", epochs: int | None = None,
        teachers: list[str] | None = None, temperature: float | None = None) -> dict[str, Any]:
    s = ctx.settings
    c: dict[str, Any] = {
        "name": name, "seed": seed, "epochs": epochs or s.epochs, "batch_size": s.batch_size, "threads": s.threads,
        "model": {"name": "mlp", "args": {"in_features": 16 * 40, "hidden": list(s.hidden)}},
        "data": {"dataset": DATASETS[split], "data_dir": ctx.data_dir, "fraction": s.fraction if split != "3pct" else 1.0},
        "optim": {"name": "sgd", "lr": s.lr, "momentum": 0.9, "schedule": "cosine", "warmup_epochs": 0.5},
        "out_dir": str(ctx.out / "runs" / group / name)}
    if teachers:
        c["distill"] = {"teachers": teachers, "temperature": temperature, "w_soft": 1.0, "w_hard": s.w_hard,
                        "combine": "arithmetic"}
    return c


def members(ctx: Context, split: str = "official") -> list[dict[str, Any]]:
    n = ctx.settings.members if split == "official" else ctx.settings.speaker_members
    return [cfg(ctx, "members" if split == "official" else "speakers", f"member{k}", k, split) for k in range(n)]


def weights(cfgs: list[dict[str, Any]]) -> list[str]:
    return [str(Path(c["out_dir"]) / "best.safetensors") for c in cfgs]


def distilled(ctx: Context, t: float, seed: int, split: str = "official") -> dict[str, Any]:
    return cfg(ctx, "distilled" if split == "official" else "speakers", f"distilled_T{t:g}_seed{seed}", 100 + seed,
               split, teachers=weights(members(ctx, split)), temperature=t)


def reg(ctx: Context, mode: str, seed: int) -> dict[str, Any]:
    teachers = {"hard": None, "soft": weights(members(ctx))[:1], "ensemble": weights(members(ctx))}[mode]
    return cfg(ctx, "reg3pct", f"{mode}_seed{seed}", 200 + seed, "3pct", epochs=ctx.settings.reg_epochs,
               teachers=teachers, temperature=2.0 if teachers else None)


def store_cfg(ctx: Context, k: int | None, best_t: float) -> dict[str, Any]:
    return cfg(ctx, "store", f"k{k or 'all'}", 100, teachers=[str(ctx.out / "stores" / f"k{k or 'all'}")],
               temperature=best_t)


# --------------------------------------------------------------------------- evaluation (frame accuracy, WER)


@functools.lru_cache(maxsize=4)
def frame_splits(split: str, data_dir: str | None):
    from ..data.fsdd import build_frame_splits

    return build_frame_splits(data_dir, split=split)


def _log_probs(files: list[str], x: torch.Tensor, combine: str = "arithmetic") -> torch.Tensor:
    from ..models import load_model
    from ..teachers import Ensemble

    return Ensemble([load_model(f) for f in files], combine).log_probs(x)


def speech_eval(files: list[str], split: str, data_dir: str | None, combine: str = "arithmetic") -> dict[str, Any]:
    """Test (and validation) frame accuracy and WER of the model(s) in ``files``."""
    from ..speech.decoding import evaluate_recognition, state_log_prior

    fs = frame_splits("speaker" if split == "speaker" else "official", data_dir)
    prior = state_log_prior(fs.train.y, fs.num_states)
    out: dict[str, Any] = {}
    for part in ("val", "test"):
        d = getattr(fs, part)
        lp = _log_probs(files, d.x, combine)
        rec = evaluate_recognition(lp.numpy(), d.recording.numpy(), fs.digit, fs.states_per_digit, prior)
        out[part] = {"frame_acc": float((lp.argmax(1) == d.y).float().mean()), **rec}
    return out


def evaluate(ctx: Context, cfgs: list[dict[str, Any]], split: str, combine: str | None = None) -> dict[str, Any]:
    """One run (``combine=None``) or the ensemble of ``cfgs``, cached in ``eval.json`` of the last run (tied to its
    record); the weights are rebuilt only when the cache is missing."""
    def compute() -> dict[str, Any]:
        for c in cfgs:
            run_cached(c, progress=ctx.progress, need_weights=True)
        return speech_eval(weights(cfgs), split, ctx.data_dir, combine or "arithmetic")

    key = "speech" if combine is None else f"ensemble_{len(cfgs)}_{combine}"
    return cached_eval(cfgs[-1]["out_dir"], key, compute)


# --------------------------------------------------------------------------- stages


def _mean(v: list[float]) -> float:
    return float(sum(v) / len(v))


def table1_jobs(ctx: Context) -> list[Job]:
    """Every run that does not depend on the chosen T: the members of both splits and the distilled models of
    every T (the held-out-speaker members train here, in the first batch, for a busy pool)."""
    s = ctx.settings
    return [Job(c) for c in members(ctx) + [distilled(ctx, t, k) for t in s.temperatures for k in range(s.seeds)]
            + members(ctx, "speaker")]


def table1(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    s, v = ctx.settings, {}
    mem = [evaluate(ctx, [c], "official") for c in members(ctx)]
    v["baseline_frame_acc"] = [m["test"]["frame_acc"] for m in mem]
    v["baseline_wer"] = [m["test"]["wer"] for m in mem]
    ens = {cb: evaluate(ctx, members(ctx), "official", cb) for cb in ("arithmetic", "geometric")}
    for key, cb in (("ensemble", "arithmetic"), ("ensemble_geo", "geometric")):
        v[f"{key}_frame_acc"], v[f"{key}_wer"] = [ens[cb]["test"]["frame_acc"]], [ens[cb]["test"]["wer"]]
    per_t = {t: [evaluate(ctx, [distilled(ctx, t, k)], "official") for k in range(s.seeds)] for t in s.temperatures}
    val_by_t = {t: _mean([e["val"]["frame_acc"] for e in es]) for t, es in per_t.items()}
    best_t = max(s.temperatures, key=lambda t: (val_by_t[t], -t))
    v["best_T"] = [best_t]
    v["distilled_frame_acc"] = [e["test"]["frame_acc"] for e in per_t[best_t]]
    v["distilled_wer"] = [e["test"]["wer"] for e in per_t[best_t]]
    base, ensa = _mean(v["baseline_frame_acc"]), v["ensemble_frame_acc"][0]
    v["gain_kept"] = [(d - base) / (ensa - base) if ensa != base else float("nan") for d in v["distilled_frame_acc"]]
    bw, ew = _mean(v["baseline_wer"]), v["ensemble_wer"][0]
    if bw != ew:  # undefined when the ensemble does not change the WER (e.g. 0 errors everywhere)
        v["wer_gain_kept"] = [(bw - d) / (bw - ew) for d in v["distilled_wer"]]
    temperature = {f"{t:g}": {"val_frame_acc": [e["val"]["frame_acc"] for e in es],
                              "test_frame_acc": [e["test"]["frame_acc"] for e in es],
                              "test_wer": [e["test"]["wer"] for e in es]} for t, es in per_t.items()}
    return Outcome(v, {"settings": s.__dict__, "runs": {}, "best_T": best_t, "temperature": temperature,
                       "ensemble": ens, "members": mem})


def store_jobs(ctx: Context) -> list[Job]:
    """Item 5 of issue 5: the ensemble's outputs on the transfer set written once per k as a store (fp16,
    memory-mapped shards, a manifest; :mod:`darkknowledge.store`). Rows: the training frames the engine sees,
    then validation and test frames. A store is (re)written only for a student still to train."""
    from ..config import validate
    from ..engine import prepare_data
    from ..models import load_model
    from ..store import StoredTeacher, data_fingerprint, member_sha256, write_store
    from ..teachers import Ensemble

    jobs = [Job(store_cfg(ctx, k, ctx.details["best_T"])) for k in STORE_KS]
    todo = [(Path(j.teachers[0]), k) for j, k in zip(jobs, STORE_KS) if finished_record(j.config) is None]
    if todo and ctx.allow_train:
        for c in members(ctx):  # the members' weights (retrained when only their records are here)
            run_cached(c, progress=ctx.progress, need_weights=True)
        splits = prepare_data(validate(jobs[0].config).data)
        x = torch.cat([splits.train.x, splits.val.x, splits.test.x])
        teacher = Ensemble([load_model(f) for f in weights(members(ctx))])
        for path, k in todo:
            try:
                StoredTeacher(path, member_sha256(teacher), data_fingerprint(x))
            except Exception:  # noqa: BLE001 — absent, stale or damaged: (re)write it
                write_store(teacher, x, path, k=k, overwrite=path.exists())
    return jobs


def store(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    from ..store import store_memory

    rows = {}
    for k, rec in zip(STORE_KS, recs):
        c, path = rec["config"], ctx.out / "stores" / f"k{k or 'all'}"
        size = cached_eval(c["out_dir"], "store_bytes", lambda p=path: {"bytes": store_memory(p)})
        rows[str(k or "all")] = {**size, **evaluate(ctx, [c], "official")["test"], "out_dir": c["out_dir"]}
    return Outcome(details={"store": rows})


def speaker_jobs(ctx: Context) -> list[Job]:
    return [Job(distilled(ctx, ctx.details["best_T"], k, "speaker")) for k in range(ctx.settings.seeds)]


def speakers(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    smem = [evaluate(ctx, [c], "speaker") for c in members(ctx, "speaker")]
    sens = evaluate(ctx, members(ctx, "speaker"), "speaker", "arithmetic")
    sdist = [evaluate(ctx, [distilled(ctx, ctx.details["best_T"], k, "speaker")], "speaker")
             for k in range(ctx.settings.seeds)]
    v = {}
    for key, rows in (("baseline", smem), ("distilled", sdist)):
        v[f"speaker_heldout_{key}_frame_acc"] = [m["test"]["frame_acc"] for m in rows]
        v[f"speaker_heldout_{key}_wer"] = [m["test"]["wer"] for m in rows]
    v["speaker_heldout_ensemble_frame_acc"], v["speaker_heldout_ensemble_wer"] = \
        [sens["test"]["frame_acc"]], [sens["test"]["wer"]]
    return Outcome(v, {"speakers": {"members": smem, "ensemble": sens, "distilled": sdist,
                                    "heldout": frame_splits("speaker", ctx.data_dir).params["heldout_speakers"]}})


def reg_jobs(ctx: Context) -> list[Job]:
    return [Job(reg(ctx, m, k), {"track_train": True, "track_test": True}) for m in ("hard", "soft", "ensemble")
            for k in range(ctx.settings.seeds)]


def reg3pct(ctx: Context, recs: list[dict[str, Any]]) -> Outcome:
    s, v, curves = ctx.settings, {}, {}
    for i, mode in enumerate(("hard", "soft", "ensemble")):
        rs = recs[i * s.seeds:(i + 1) * s.seeds]
        key = {"hard": "hard", "soft": "soft", "ensemble": "ensemble_soft"}[mode]
        v[f"reg3pct_{key}_test_frame_acc"] = [r["final"]["test"]["accuracy"] for r in rs]
        if mode != "ensemble":
            sel = [r["final"]["selected_epoch"] for r in rs]
            v[f"reg3pct_{key}_train_frame_acc"] = [r["epochs"][e - 1]["train"]["accuracy"] for r, e in zip(rs, sel)]
        curves[mode] = {"train": [[e["train"]["accuracy"] for e in r["epochs"]] for r in rs],
                        "test": [[e["test"]["accuracy"] for e in r["epochs"]] for r in rs],
                        "val": [[e["val"]["accuracy"] for e in r["epochs"]] for r in rs],
                        "selected_epoch": [r["final"]["selected_epoch"] for r in rs],
                        "n_train_frames": rs[0]["dataset"]["train"]}
    # summed in the order the runs were first made (a float sum in one order, so details.json re-renders byte
    # for byte): the first batch, the 3% runs, the held-out-speaker students, the students of the stores
    order = table1_jobs(ctx) + reg_jobs(ctx) + speaker_jobs(ctx) + [Job(store_cfg(ctx, k, ctx.details["best_T"]))
                                                                     for k in STORE_KS]
    seconds = float(sum(ctx.records[j.out_dir].get("wall_time_s", 0.0) for j in order if j.out_dir in ctx.records))
    return Outcome(v, {"reg3pct": curves, "train_seconds": seconds})


# --------------------------------------------------------------------------- report


def _report(ctx: Context, summary: dict[str, Any], prov: dict[str, Any]) -> str:
    fs = frame_splits("official", ctx.data_dir)
    facts = {"past": fs.past, "future": fs.future, "states_per_digit": fs.states_per_digit,
             "num_states": fs.num_states, "train": len(fs.train), "val": len(fs.val), "test": len(fs.test)}
    return rep.report(ctx.settings, summary, ctx.details, prov, facts, ctx.results.exists("posteriors.png"))


def _figures(ctx: Context, res: Results) -> None:
    """The two figures from ``details``, and the posteriors of one test recording (drawn only when the weights are
    on disk, e.g. not in a fresh clone)."""
    rep.figures(res, ctx.details)
    files = {"single model (member 0)": weights(members(ctx))[:1], "ensemble": weights(members(ctx))}
    if "best_T" in ctx.details:
        files["distilled"] = weights([distilled(ctx, float(ctx.details["best_T"]), 0)])
    if not all(Path(f).exists() for fs in files.values() for f in fs):
        return
    fs = frame_splits("official", ctx.data_dir)
    rec = int(fs.test.recording[0])
    x = fs.test.x[fs.test.recording == rec]
    spec = x[:, 10 * 40:11 * 40].numpy().T  # the centre frame's 40 normalised log-mel features
    rep.posterior_figure(res, spec, f"test recording {rec} (digit {int(fs.digit[rec])}): log-mel",
                         {name: _log_probs(f, x).exp().numpy().T for name, f in files.items()})


EXPERIMENT = register_experiment(Experiment(
    "hinton-speech", settings=settings_for, default_seeds=lambda s: s.seeds, options=frozenset({"only", "workers"}),
    stages=[Stage("table1", table1_jobs, table1, upfront=True),
            Stage("store", store_jobs, store, needs=("table1",)),
            Stage("speakers", speaker_jobs, speakers, needs=("table1",)),
            Stage("reg3pct", reg_jobs, reg3pct, needs=("table1",), upfront=True)],
    summary_keys=SUMMARY_KEYS, report=_report, figures=_figures,
    extra_provenance=lambda ctx: {"settings": ctx.settings.__dict__}))
