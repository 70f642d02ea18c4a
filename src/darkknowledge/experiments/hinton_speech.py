"""Hinton, Vinyals & Dean (2015) §4 and §6 on real speech: ``darkknowledge reproduce hinton-speech``.

The Free Spoken Digit Dataset stands in for the paper's 2,000 hours of voice search (spec §6.2): 40 log-mel
features per 10 ms frame, 10 past + 5 future context frames, "HMM states" digit × S segments (S = 3, 30
classes), frame classifiers that are plain ReLU MLPs, and word recognition by Viterbi over each digit's
left-to-right state chain with posteriors divided by the state priors (hybrid style; :mod:`~..speech`).

Stages (every run a job on the pool: ``--workers N``):

1. ``members``   — ``M`` models differing only in seed on the official split (takes 0–4 test); the single-model
                   baseline is every member on its own (mean ± std over members);
2. ``ensemble``  — their arithmetic and geometric combinations (Table 1's "10× ensemble");
3. ``distilled`` — one model of the same size trained on the ensemble's soft targets at T ∈ T_LIST plus the hard
                   term (weight 0.5, as the paper), ``seeds`` per T; the reported T is the one with the best mean
                   validation frame accuracy (Table 1's "distilled single model");
4. ``speakers``  — the same on a split holding out two speakers (jackson, lucas): members, ensemble, distilled
                   at the chosen T (WER with unseen speakers);
5. ``reg3pct``   — 3% of the training recordings (Table 5): hard targets vs soft targets of member 0 (a
                   full-data model) and of the ensemble, train and test frame accuracy per epoch.

Selection (the epoch of every run, T) uses validation recordings carved from the training takes; the test
takes are only evaluated for reporting. Accuracies and WERs are fractions.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine.jobs import Job, run_jobs
from ..report import provenance, write_summary
from ..utils import atomic_write_json
from . import register_experiment
from .runner import cached_eval, run_cached

__all__ = ["run", "PAPER", "Settings", "settings_for", "SUMMARY_KEYS"]

#: Table 1 (frame accuracy, WER) and Table 5 (3%: train / test frame accuracy) of the paper, as fractions
PAPER = {"baseline_frame_acc": 0.589, "ensemble_frame_acc": 0.611, "distilled_frame_acc": 0.608,
         "baseline_wer": 0.109, "ensemble_wer": 0.107, "distilled_wer": 0.107,
         "gain_kept": (0.608 - 0.589) / (0.611 - 0.589), "reg3pct_hard_test_frame_acc": 0.445,
         "reg3pct_soft_test_frame_acc": 0.570, "reg3pct_hard_train_frame_acc": 0.673,
         "reg3pct_soft_train_frame_acc": 0.654, "best_T": 2}
SUMMARY_KEYS = ["baseline_frame_acc", "ensemble_frame_acc", "ensemble_geo_frame_acc", "distilled_frame_acc",
                "baseline_wer", "ensemble_wer", "ensemble_geo_wer", "distilled_wer", "gain_kept", "wer_gain_kept",
                "speaker_heldout_baseline_frame_acc", "speaker_heldout_ensemble_frame_acc",
                "speaker_heldout_distilled_frame_acc", "speaker_heldout_baseline_wer", "speaker_heldout_ensemble_wer",
                "speaker_heldout_distilled_wer", "reg3pct_hard_test_frame_acc", "reg3pct_soft_test_frame_acc",
                "reg3pct_ensemble_soft_test_frame_acc", "reg3pct_hard_train_frame_acc", "reg3pct_soft_train_frame_acc",
                "best_T"]
DATASETS = {"official": "fsdd-frames", "speaker": "fsdd-frames-speakers", "3pct": "fsdd-frames-3pct"}


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


@dataclass
class Ctx:
    out: Path
    data_dir: str | None
    s: Settings
    progress: bool

    def cfg(self, group: str, name: str, seed: int, split: str = "official", epochs: int | None = None,
            teachers: list[str] | None = None, temperature: float | None = None) -> dict[str, Any]:
        s = self.s
        c: dict[str, Any] = {
            "name": name, "seed": seed, "epochs": epochs or s.epochs, "batch_size": s.batch_size, "threads": s.threads,
            "model": {"name": "mlp", "args": {"in_features": 16 * 40, "hidden": list(s.hidden)}},
            "data": {"dataset": DATASETS[split], "data_dir": self.data_dir,
                     "fraction": s.fraction if split != "3pct" else 1.0},
            "optim": {"name": "sgd", "lr": s.lr, "momentum": 0.9, "schedule": "cosine", "warmup_epochs": 0.5},
            "out_dir": str(self.out / "runs" / group / name)}
        if teachers:
            c["distill"] = {"teachers": teachers, "temperature": temperature, "w_soft": 1.0, "w_hard": s.w_hard,
                            "combine": "arithmetic"}
        return c

    def members(self, split: str = "official") -> list[dict[str, Any]]:
        n = self.s.members if split == "official" else self.s.speaker_members
        group = "members" if split == "official" else "speakers"
        return [self.cfg(group, f"member{k}", k, split) for k in range(n)]

    def member_files(self, split: str = "official") -> list[str]:
        return [str(Path(c["out_dir"]) / "best.safetensors") for c in self.members(split)]

    def distilled(self, t: float, seed: int, split: str = "official") -> dict[str, Any]:
        group = "distilled" if split == "official" else "speakers"
        return self.cfg(group, f"distilled_T{t:g}_seed{seed}", 100 + seed, split, teachers=self.member_files(split),
                        temperature=t)

    def reg(self, mode: str, seed: int) -> dict[str, Any]:
        teachers = {"hard": None, "soft": self.member_files()[:1], "ensemble": self.member_files()}[mode]
        return self.cfg("reg3pct", f"{mode}_seed{seed}", 200 + seed, "3pct", epochs=self.s.reg_epochs,
                        teachers=teachers, temperature=2.0 if teachers else None)


# --------------------------------------------------------------------------- evaluation (frame accuracy, WER)


@functools.lru_cache(maxsize=4)
def frame_splits(split: str, data_dir: str | None):
    from ..data.fsdd import build_frame_splits

    return build_frame_splits(data_dir, split=split)


def _log_probs(files: list[str], x: torch.Tensor, combine: str) -> torch.Tensor:
    """Frame log posteriors of one model or of an ensemble (arithmetic: log of the mean distribution;
    geometric: log-softmax of the mean logits, §2 of the paper)."""
    from ..metrics import predict_logits
    from ..models import load_model

    logits = torch.stack([predict_logits(load_model(f), x) for f in files], 1).float()  # [N, M, C]
    if combine == "geometric":
        return torch.log_softmax(logits.mean(1), -1)
    return torch.logsumexp(torch.log_softmax(logits, -1), 1) - float(np.log(logits.shape[1]))


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


def _eval_run(c: Ctx, cfg: dict[str, Any], split: str) -> dict[str, Any]:
    def compute() -> dict[str, Any]:
        run_cached(cfg, progress=c.progress, need_weights=True)
        return speech_eval([str(Path(cfg["out_dir"]) / "best.safetensors")], split, c.data_dir)

    return cached_eval(cfg["out_dir"], "speech", compute)


def _eval_ensemble(c: Ctx, split: str, combine: str) -> dict[str, Any]:
    """The ensemble's numbers, cached in ``eval.json`` of its last member (tied to that member's record)."""
    cfgs = c.members(split)

    def compute() -> dict[str, Any]:
        for cfg in cfgs:
            run_cached(cfg, progress=c.progress, need_weights=True)
        return speech_eval([str(Path(x["out_dir"]) / "best.safetensors") for x in cfgs], split, c.data_dir, combine)

    return cached_eval(cfgs[-1]["out_dir"], f"ensemble_{len(cfgs)}_{combine}", compute)


# --------------------------------------------------------------------------- the experiment


def first_jobs(c: Ctx) -> list[Job]:
    """Everything that does not depend on the chosen T: members of both splits, the distilled models of every T
    on the official split, the 3% runs."""
    s = c.s
    cfgs = c.members() + [c.distilled(t, k) for t in s.temperatures for k in range(s.seeds)] + c.members("speaker")
    jobs = [Job(x) for x in cfgs]
    jobs += [Job(c.reg(m, k), {"track_train": True, "track_test": True}) for m in ("hard", "soft", "ensemble")
             for k in range(s.seeds)]
    return jobs


STORE_KS: tuple[int | None, ...] = (1, 5, 10, None)  # None: all 30 classes


def store_stage(c: Ctx, best_t: float, pool: dict[str, Any] | None) -> dict[str, Any]:
    """Item 5 of the issue: the ensemble's outputs on the transfer set written once per k as a store (fp16,
    memory-mapped shards, a manifest; :mod:`darkknowledge.store`), and one student (seed 0, the chosen T)
    distilled from each. Rows: the training frames the engine sees, then validation and test frames (found
    by content when the engine evaluates the teacher). A store is (re)written only for a student still to train."""
    from ..config import validate
    from ..engine import prepare_data
    from ..models import load_model
    from ..store import StoredTeacher, data_fingerprint, member_sha256, store_memory, write_store
    from ..teachers import Ensemble
    from .runner import finished_record

    jobs, paths = [], {}
    for k in STORE_KS:
        path = c.out / "stores" / f"k{k or 'all'}"
        cfg = c.cfg("store", f"k{k or 'all'}", 100, teachers=[str(path)], temperature=best_t)
        jobs.append(Job(cfg))
        paths[str(k or "all")] = (path, cfg, k)
    todo = [(p, k) for p, cfg, k in paths.values() if finished_record(cfg) is None]
    if todo:
        for f in c.member_files():  # the members' weights (retrained when only their records are here)
            run_cached(next(m for m in c.members() if f.startswith(m["out_dir"])), progress=c.progress,
                       need_weights=True)
        splits = prepare_data(validate(jobs[0].config).data)
        x = torch.cat([splits.train.x, splits.val.x, splits.test.x])
        teacher = Ensemble([load_model(f) for f in c.member_files()])
        for path, k in todo:
            try:
                StoredTeacher(path, member_sha256(teacher), data_fingerprint(x))
            except Exception:  # noqa: BLE001 — absent, stale or damaged: (re)write it
                write_store(teacher, x, path, k=k, overwrite=path.exists())
    run_jobs(jobs, progress=c.progress, **(pool or {}))
    rows = {}
    for key, (path, cfg, _) in paths.items():
        size = cached_eval(cfg["out_dir"], "store_bytes", lambda p=path: {"bytes": store_memory(p)})
        rows[key] = {**size, **_eval_run(c, cfg, "official")["test"], "out_dir": cfg["out_dir"]}
    return rows


def _mean(v: list[float]) -> float:
    return float(sum(v) / len(v))


@register_experiment("hinton-speech")
def run(out: str | Path = "results/hinton-speech", data_dir: str | None = None, quick: bool = False,
        progress: bool = True, pool: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or reuse) every run on the pool, evaluate, write ``summary.json``, ``details.json``,
    ``provenance.json``, figures and ``report.md``."""
    from .hinton_speech_report import build_report, write_figures

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = Ctx(out, data_dir, settings_for(quick), progress)
    s = c.s
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    jobs = first_jobs(c)
    log(f"hinton-speech: {len(jobs)} runs, then {s.seeds} held-out-speaker students at the chosen T and "
        f"{len(STORE_KS)} students from stored outputs")
    records = run_jobs(jobs, progress=progress, **(pool or {}))
    by_dir = {r["config"]["out_dir"]: r for r in records}
    v: dict[str, list[float]] = {}
    details: dict[str, Any] = {"settings": s.__dict__, "runs": {}}

    # Table 1, official split
    mem = [_eval_run(c, x, "official") for x in c.members()]
    v["baseline_frame_acc"] = [m["test"]["frame_acc"] for m in mem]
    v["baseline_wer"] = [m["test"]["wer"] for m in mem]
    ens = {cb: _eval_ensemble(c, "official", cb) for cb in ("arithmetic", "geometric")}
    for key, cb in (("ensemble", "arithmetic"), ("ensemble_geo", "geometric")):
        v[f"{key}_frame_acc"], v[f"{key}_wer"] = [ens[cb]["test"]["frame_acc"]], [ens[cb]["test"]["wer"]]
    per_t = {t: [_eval_run(c, c.distilled(t, k), "official") for k in range(s.seeds)] for t in s.temperatures}
    val_by_t = {t: _mean([e["val"]["frame_acc"] for e in es]) for t, es in per_t.items()}
    best_t = max(s.temperatures, key=lambda t: (val_by_t[t], -t))
    v["best_T"] = [best_t]
    details["best_T"] = best_t
    v["distilled_frame_acc"] = [e["test"]["frame_acc"] for e in per_t[best_t]]
    v["distilled_wer"] = [e["test"]["wer"] for e in per_t[best_t]]
    base, ensa = _mean(v["baseline_frame_acc"]), v["ensemble_frame_acc"][0]
    v["gain_kept"] = [(d - base) / (ensa - base) if ensa != base else float("nan") for d in v["distilled_frame_acc"]]
    bw, ew = _mean(v["baseline_wer"]), v["ensemble_wer"][0]
    if bw != ew:  # undefined when the ensemble does not change the WER (e.g. 0 errors everywhere)
        v["wer_gain_kept"] = [(bw - d) / (bw - ew) for d in v["distilled_wer"]]
    details["temperature"] = {f"{t:g}": {"val_frame_acc": [e["val"]["frame_acc"] for e in es],
                                         "test_frame_acc": [e["test"]["frame_acc"] for e in es],
                                         "test_wer": [e["test"]["wer"] for e in es]} for t, es in per_t.items()}
    details["ensemble"] = ens
    details["members"] = mem
    details["store"] = store_stage(c, best_t, pool)

    # held-out speakers
    smem = [_eval_run(c, x, "speaker") for x in c.members("speaker")]
    sens = _eval_ensemble(c, "speaker", "arithmetic")
    sjobs = [Job(c.distilled(best_t, k, "speaker")) for k in range(s.seeds)]
    records += run_jobs(sjobs, progress=progress, **(pool or {}))
    sdist = [_eval_run(c, j.config, "speaker") for j in sjobs]
    for key, rows in (("baseline", smem), ("distilled", sdist)):
        v[f"speaker_heldout_{key}_frame_acc"] = [m["test"]["frame_acc"] for m in rows]
        v[f"speaker_heldout_{key}_wer"] = [m["test"]["wer"] for m in rows]
    v["speaker_heldout_ensemble_frame_acc"], v["speaker_heldout_ensemble_wer"] = \
        [sens["test"]["frame_acc"]], [sens["test"]["wer"]]
    details["speakers"] = {"members": smem, "ensemble": sens, "distilled": sdist,
                           "heldout": frame_splits("speaker", data_dir).params["heldout_speakers"]}

    # Table 5: 3% of the training recordings
    curves: dict[str, Any] = {}
    for mode in ("hard", "soft", "ensemble"):
        recs = [by_dir[c.reg(mode, k)["out_dir"]] for k in range(s.seeds)]
        key = {"hard": "hard", "soft": "soft", "ensemble": "ensemble_soft"}[mode]
        v[f"reg3pct_{key}_test_frame_acc"] = [r["final"]["test"]["accuracy"] for r in recs]
        if mode != "ensemble":
            sel = [r["final"]["selected_epoch"] for r in recs]
            v[f"reg3pct_{key}_train_frame_acc"] = [r["epochs"][e - 1]["train"]["accuracy"] for r, e in zip(recs, sel)]
        curves[mode] = {"train": [[e["train"]["accuracy"] for e in r["epochs"]] for r in recs],
                        "test": [[e["test"]["accuracy"] for e in r["epochs"]] for r in recs],
                        "val": [[e["val"]["accuracy"] for e in r["epochs"]] for r in recs],
                        "selected_epoch": [r["final"]["selected_epoch"] for r in recs],
                        "n_train_frames": recs[0]["dataset"]["train"]}
    details["reg3pct"] = curves
    store_recs = [json.loads((Path(r["out_dir"]) / "run.json").read_text()) for r in details["store"].values()]
    details["train_seconds"] = float(sum(r.get("wall_time_s", 0.0) for r in records + store_recs))

    summary = write_summary(out, {k: v[k] for k in SUMMARY_KEYS if k in v})
    atomic_write_json(out / "details.json", details)
    wall = time.perf_counter() - t0
    cmd = "darkknowledge reproduce hinton-speech" + (" --quick" if quick else "") + \
        (f" --workers {pool.get('workers', 1)}" if pool else "")
    prov = provenance(cmd, wall, list(range(s.seeds)))
    prov["settings"] = s.__dict__
    atomic_write_json(out / "provenance.json", prov)
    write_figures(c, details)
    from ..report import write_report

    write_report(out, build_report(c, summary, details, prov))
    log(f"hinton-speech: done in {wall:.0f} s; {out}/report.md")
    return summary
