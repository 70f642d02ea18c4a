"""The report and figures of :mod:`.hinton_speech`: the paper's numbers, the "paper vs ours" rows as data, a
template, and three figures. Every number comes from the summary, ``details`` or :data:`PAPER`; this module
imports nothing of the experiment (the experiment passes the data facts and model files in)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..report import Results, SummaryView, Vs, markdown_table, paper_table, pct, pyplot, render, save_figure

__all__ = ["PAPER", "report", "figures", "posterior_figure"]

#: Table 1 (frame accuracy, WER) and Table 5 (3%: train / test frame accuracy) of the paper, as fractions
PAPER = {"baseline_frame_acc": 0.589, "ensemble_frame_acc": 0.611, "distilled_frame_acc": 0.608,
         "baseline_wer": 0.109, "ensemble_wer": 0.107, "distilled_wer": 0.107,
         "gain_kept": (0.608 - 0.589) / (0.611 - 0.589), "reg3pct_hard_test_frame_acc": 0.445,
         "reg3pct_soft_test_frame_acc": 0.570, "reg3pct_hard_train_frame_acc": 0.673,
         "reg3pct_soft_train_frame_acc": 0.654, "best_T": 2}


def _p(key: str | None, paper: float | str | None = None) -> Vs:
    """The paper's fraction (``PAPER[key]`` unless given) as ``58.9%`` beside ours as a percentage."""
    return Vs(key, PAPER.get(key) if paper is None and key else paper, scale=100.0, unit="%")


def table1_rows(members: int, best_t: Any, seeds: int) -> list[tuple[Any, ...]]:
    return [("single model (baseline; every member)", _p("baseline_frame_acc"), _p("baseline_wer")),
            (f"{members}× ensemble, arithmetic mean", _p("ensemble_frame_acc"), _p("ensemble_wer")),
            (f"{members}× ensemble, geometric mean", _p("ensemble_geo_frame_acc"), _p("ensemble_geo_wer")),
            (f"distilled single model (T = {best_t}, {seeds} seeds)", _p("distilled_frame_acc"), _p("distilled_wer"))]


REG3PCT_ROWS = [("baseline (100%; members)", _p(None, "63.4%"), _p("baseline_frame_acc", "58.9%")),
                ("hard targets (3%)", _p("reg3pct_hard_train_frame_acc"), _p("reg3pct_hard_test_frame_acc")),
                ("soft targets of a full-data model (3%)", _p("reg3pct_soft_train_frame_acc"),
                 _p("reg3pct_soft_test_frame_acc")),
                ("soft targets of the ensemble (3%)", _p(None), _p("reg3pct_ensemble_soft_test_frame_acc"))]
SPEAKER_ROWS = [("single model", "baseline"), ("ensemble", "ensemble"), ("distilled", "distilled")]

TEMPLATE = """\
# Hinton, Vinyals & Dean (2015) §4 and §6 on spoken digits (FSDD) — reproduction report

Command: `{prov[command]}` ({mode} mode). Commit `{prov[git_commit]}`; machine: {prov[machine][cpu]} \
({prov[machine][cpu_count]} cores); one torch thread per run. Summed training time of all runs: \
{train_min:.1f} min; this invocation {wall_min:.1f} min.

**Setting.** The Free Spoken Digit Dataset (3,000 recordings, 6 speakers, 8 kHz) stands in for 2,000 hours of \
voice search. Features: 40 log-mel filterbank energies on 25 ms windows, 10 ms hop, normalised with training \
statistics, a context of {f[past]} past + {f[future]} future frames (the paper: 20 + 5). Targets: \
{f[states_per_digit]} equal segments per digit = {f[num_states]} "HMM states". Models: ReLU MLPs \
640-{hidden}-{f[num_states]} (the paper: 8 × 2,560 over 14,000 states), SGD momentum 0.9, cosine schedule from lr \
{s.lr}, batch {s.batch_size}, {s.epochs} epochs, the epoch selected on validation frame accuracy. Split: takes 0–4 \
test (300 recordings, {f[test]:,} frames), 10% of the other recordings validation ({f[val]:,} frames), the rest \
training ({f[train]:,} frames). Word recognition: Viterbi through each digit's left-to-right state chain on log \
posteriors minus log state priors; WER = share of test recordings recognised wrongly.

**Chosen on validation:** the epoch of every run and T. **Fixed a priori** (not tuned here, for budget): S = 3, \
the context, the widths and the learning rate; the hard weight 0.5 is the paper's.

## Table 1 analogue: ensemble → one model (official split)

{table1}

Share of the ensemble's frame-accuracy gain kept by the distilled model, (distilled − baseline)/(ensemble − \
baseline): **{S.gain_kept:2}** (paper: {paper_gain:.2f}). WER gain kept: {S.wer_gain_kept:2}.

{beats}Distilled test frame accuracy (and validation) by temperature, mean over seeds:

{t_table}

![frame accuracy vs T](frame_accuracy_vs_T.png)

{posteriors}{store}## Held-out speakers ({heldout})

The official split has every speaker in training, so its WER is near 0; here two speakers are never heard in \
training ({s.speaker_members} members, the ensemble of them, and a model distilled from it at the T chosen above).

{speakers}

## Table 5 analogue: 3% of the training recordings

{n3:,} training frames (3% of the training recordings). Hard targets vs soft targets (T = 2, hard weight 0.5) \
from member 0 (trained on all the data) and from the ensemble; {s.reg_epochs} epochs each; the summary is at the \
validation-selected epoch.

{reg3pct}

Early stopping: the hard-target model's mean test frame accuracy peaks at {h_max:.2f}% (epoch {h_arg}) and ends \
at {h_end:.2f}%; the soft-target model peaks at {s_max:.2f}% and ends at {s_end:.2f}% ({verdict}; \
validation-selected epochs: hard {h_sel}, soft {s_sel}).

![3% curves](reg3pct_curves.png)
"""

BEATS = ("The ensemble {verb} the single models by more than 3 standard deviations of the members ({gain:+.2f} "
         "points vs 3 × {std:.2f}); the distilled model is {dist:+.2f} points from the baseline.\n\n")

STORE = """\
### The ensemble's outputs stored once, in full or as top-k logits

The {members} members' logits on every transfer frame, written once as fp16 memory-mapped shards with a manifest \
(member weights sha256, a data fingerprint, k; `darkknowledge.store`): for top-k each member keeps its k largest \
logits and one fill logit for the rest, chosen so that at T = 1 the other classes share the remaining probability \
equally. One student (seed 0, the chosen T) distilled from each store:

{table}

"""


def _beats(summary: Mapping[str, Any]) -> str:
    b, e, d = (summary.get(k) for k in ("baseline_frame_acc", "ensemble_frame_acc", "distilled_frame_acc"))
    if not (b and e and d):
        return ""
    return BEATS.format(verb="beats" if e["mean"] - b["mean"] > 3 * b["std"] else "does NOT beat",
                        gain=100 * (e["mean"] - b["mean"]), std=100 * b["std"], dist=100 * (d["mean"] - b["mean"]))


def report(s: Any, summary: dict[str, Any], details: dict[str, Any], prov: dict[str, Any], facts: dict[str, Any],
           has_posteriors: bool) -> str:
    """The report: settings ``s``, the summary, ``details``, provenance and ``facts`` of the official split
    (``past``, ``future``, ``states_per_digit``, ``num_states``, ``train``/``val``/``test`` frame counts)."""
    S = SummaryView(summary)  # noqa: N806
    temps = sorted(details["temperature"].items(), key=lambda x: float(x[0]))
    t_table = markdown_table(["T", "val frame acc (%)", "test frame acc (%)", "test WER (%)"], [
        [t, f"{100 * np.mean(r['val_frame_acc']):.2f}", f"{100 * np.mean(r['test_frame_acc']):.2f}",
         f"{100 * np.mean(r['test_wer']):.2f}"] for t, r in temps])
    st = details.get("store")
    store = STORE.format(members=s.members, table=markdown_table(
        ["k", "store size (MB)", "test frame acc (%)", "test WER (%)"],
        [[k, f"{r['bytes'] / 1e6:.1f}", f"{100 * r['frame_acc']:.2f}", f"{100 * r['wer']:.2f}"] for k, r in st.items()]
    )) if st else ""
    speakers = markdown_table(["system", "frame acc (%)", "WER (%)"], [
        [label, pct(summary.get(f"speaker_heldout_{k}_frame_acc")), pct(summary.get(f"speaker_heldout_{k}_wer"))]
        for label, k in SPEAKER_ROWS])
    r = details["reg3pct"]
    h_test, so_test = np.mean(r["hard"]["test"], 0), np.mean(r["soft"]["test"], 0)
    return render(
        TEMPLATE, S=S, s=s, f=facts, prov=prov, mode="quick" if s.quick else "full",
        train_min=details["train_seconds"] / 60, wall_min=prov["wall_time_s"] / 60, hidden="-".join(map(str, s.hidden)),
        table1=paper_table(["system", "paper frame acc", "ours frame acc (%)", "paper WER", "ours WER (%)"],
                           table1_rows(s.members, details.get("best_T", "?"), s.seeds), summary),
        paper_gain=PAPER["gain_kept"], beats=_beats(summary), t_table=t_table,
        posteriors="![posteriors](posteriors.png)\n\n" if has_posteriors else "", store=store,
        heldout=", ".join(details["speakers"]["heldout"]), speakers=speakers, n3=r["hard"]["n_train_frames"],
        reg3pct=paper_table(["system", "paper train", "ours train (%)", "paper test", "ours test (%)"], REG3PCT_ROWS,
                            summary),
        h_max=100 * h_test.max(), h_arg=int(h_test.argmax()) + 1, h_end=100 * h_test[-1], s_max=100 * so_test.max(),
        s_end=100 * so_test[-1], h_sel=r["hard"]["selected_epoch"], s_sel=r["soft"]["selected_epoch"],
        verdict="hard targets need early stopping" if h_test.max() - h_test[-1] > 0.005 else "no collapse after the peak")


def figures(res: Results, details: dict[str, Any]) -> None:
    """Frame accuracy vs T, and the 3% runs' curves."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ts = sorted(details["temperature"], key=float)
    for part, style in (("val", "o--"), ("test", "o-")):
        ys = [100 * np.mean(details["temperature"][t][f"{part}_frame_acc"]) for t in ts]
        ax.plot([float(t) for t in ts], ys, style, label=f"distilled ({part})")
    ax.axhline(100 * details["ensemble"]["arithmetic"]["test"]["frame_acc"], color="g", ls=":", label="ensemble (test)")
    ax.axhline(100 * np.mean([m["test"]["frame_acc"] for m in details["members"]]), color="r", ls=":",
               label="single model (test)")
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("frame accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, res.path("frame_accuracy_vs_T.png"), dpi=120)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for mode, color in (("hard", "r"), ("soft", "b"), ("ensemble", "g")):
        cur = details["reg3pct"][mode]
        tr, te = np.mean(cur["train"], 0), np.mean(cur["test"], 0)
        ep = np.arange(1, len(tr) + 1)
        ax.plot(ep, 100 * tr, color + "--", lw=1, label=f"{mode} train")
        ax.plot(ep, 100 * te, color + "-", lw=1.5, label=f"{mode} test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("frame accuracy (%)")
    ax.set_title("3% of the training recordings", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, res.path("reg3pct_curves.png"), dpi=120)


def posterior_figure(res: Results, spec: np.ndarray, title: str, posteriors: dict[str, np.ndarray]) -> None:
    """A test recording's log-mel spectrogram (``spec``, [features, frames]) over the state posteriors
    ([states, frames]) of each named system."""
    plt = pyplot()
    fig, axes = plt.subplots(1 + len(posteriors), 1, figsize=(6, 1.6 * (1 + len(posteriors))), sharex=True)
    axes[0].imshow(spec, aspect="auto", origin="lower", cmap="magma")
    axes[0].set_title(title, fontsize=8)
    for ax, (name, p) in zip(axes[1:], posteriors.items()):
        ax.imshow(p, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{name}: state posteriors (30 states)", fontsize=8)
    axes[-1].set_xlabel("frame (10 ms)")
    fig.tight_layout()
    save_figure(fig, res.path("posteriors.png"), dpi=110)
