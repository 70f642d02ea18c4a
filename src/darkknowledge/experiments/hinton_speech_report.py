"""The report and figures of :mod:`.hinton_speech`: every number comes from the summary, ``details`` or
the paper table :data:`~.hinton_speech.PAPER`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..report import fmt, markdown_table
from .hinton_speech import PAPER, Ctx, frame_splits


def _pct(entry: dict[str, Any] | None) -> str:
    return fmt(entry, 2, scale=100.0)


def _paper(key: str) -> str:
    v = PAPER.get(key)
    return "–" if v is None else (f"{100 * v:.1f}%" if isinstance(v, float) and v < 1.5 and key != "gain_kept"
                                  else (f"{v:.2f}" if isinstance(v, float) else str(v)))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figures(c: Ctx, details: dict[str, Any]) -> None:
    plt = _plt()
    # frame accuracy vs T
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
    fig.savefig(c.out / "frame_accuracy_vs_T.png", dpi=120)
    plt.close(fig)
    # 3% curves
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
    fig.savefig(c.out / "reg3pct_curves.png", dpi=120)
    plt.close(fig)
    _posterior_figure(c, details)


def _posterior_figure(c: Ctx, details: dict[str, Any]) -> None:
    """Log-mel spectrogram of one test recording with the frame posteriors of a single model, the ensemble and the
    distilled model (skipped when the weights are not on disk, e.g. in a fresh clone)."""
    from .hinton_speech import _log_probs

    best_t = float(details["best_T"]) if "best_T" in details else None
    files = {"single model (member 0)": c.member_files()[:1], "ensemble": c.member_files()}
    if best_t is not None:
        files["distilled"] = [str(Path(c.distilled(best_t, 0)["out_dir"]) / "best.safetensors")]
    if not all(Path(f).exists() for fs in files.values() for f in fs):
        return
    fs = frame_splits("official", c.data_dir)
    rec = int(fs.test.recording[0])
    keep = fs.test.recording == rec
    x = fs.test.x[keep]
    spec = x[:, 10 * 40:11 * 40].numpy().T  # the centre frame's 40 normalised log-mel features
    plt = _plt()
    fig, axes = plt.subplots(1 + len(files), 1, figsize=(6, 1.6 * (1 + len(files))), sharex=True)
    axes[0].imshow(spec, aspect="auto", origin="lower", cmap="magma")
    axes[0].set_title(f"test recording {rec} (digit {int(fs.digit[rec])}): log-mel", fontsize=8)
    for ax, (name, f) in zip(axes[1:], files.items()):
        p = _log_probs(f, x, "arithmetic").exp().numpy().T
        ax.imshow(p, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{name}: state posteriors (30 states)", fontsize=8)
    axes[-1].set_xlabel("frame (10 ms)")
    fig.tight_layout()
    fig.savefig(c.out / "posteriors.png", dpi=110)
    plt.close(fig)


def build_report(c: Ctx, summary: dict[str, Any], details: dict[str, Any], prov: dict[str, Any]) -> str:
    S = summary.get  # noqa: N806
    s = c.s
    lines: list[str] = []
    add = lines.append
    add("# Hinton, Vinyals & Dean (2015) §4 and §6 on spoken digits (FSDD) — reproduction report\n")
    add(f"Command: `{prov['command']}` ({'quick' if s.quick else 'full'} mode). Commit `{prov['git_commit']}`; "
        f"machine: {prov['machine'].get('cpu')} ({prov['machine'].get('cpu_count')} cores); one torch thread per run. "
        f"Summed training time of all runs: {details['train_seconds'] / 60:.1f} min; this invocation "
        f"{prov['wall_time_s'] / 60:.1f} min.\n")
    fsp = frame_splits("official", c.data_dir)
    add("**Setting.** The Free Spoken Digit Dataset (3,000 recordings, 6 speakers, 8 kHz) stands in for 2,000 hours "
        "of voice search. Features: 40 log-mel filterbank energies on 25 ms windows, 10 ms hop, normalised with "
        f"training statistics, a context of {fsp.past} past + {fsp.future} future frames (the paper: 20 + 5). Targets: "
        f"{fsp.states_per_digit} equal segments per digit = {fsp.num_states} \"HMM states\". Models: ReLU MLPs "
        f"{16 * 40}-{'-'.join(map(str, s.hidden))}-{fsp.num_states} (the paper: 8 × 2,560 over 14,000 states), SGD "
        f"momentum 0.9, cosine schedule from lr {s.lr}, batch {s.batch_size}, {s.epochs} epochs, the epoch selected "
        "on validation frame accuracy. Split: takes 0–4 test (300 recordings, "
        f"{len(fsp.test):,} frames), 10% of the other recordings validation ({len(fsp.val):,} frames), the rest "
        f"training ({len(fsp.train):,} frames). Word recognition: Viterbi through each digit's left-to-right state "
        "chain on log posteriors minus log state priors; WER = share of test recordings recognised wrongly.\n")
    add("**Chosen on validation:** the epoch of every run and T. **Fixed a priori** (not tuned here, for budget): "
        "S = 3, the context, the widths and the learning rate; the hard weight 0.5 is the paper's.\n")

    add("## Table 1 analogue: ensemble → one model (official split)\n")
    n_m = s.members
    rows = [["single model (baseline; every member)", _paper("baseline_frame_acc"), _pct(S("baseline_frame_acc")),
             _paper("baseline_wer"), _pct(S("baseline_wer"))],
            [f"{n_m}× ensemble, arithmetic mean", _paper("ensemble_frame_acc"), _pct(S("ensemble_frame_acc")),
             _paper("ensemble_wer"), _pct(S("ensemble_wer"))],
            [f"{n_m}× ensemble, geometric mean", "–", _pct(S("ensemble_geo_frame_acc")), "–",
             _pct(S("ensemble_geo_wer"))],
            [f"distilled single model (T = {details.get('best_T', '?')}, {s.seeds} seeds)", _paper("distilled_frame_acc"),
             _pct(S("distilled_frame_acc")), _paper("distilled_wer"), _pct(S("distilled_wer"))]]
    add(markdown_table(["system", "paper frame acc", "ours frame acc (%)", "paper WER", "ours WER (%)"], rows) + "\n")
    g, wg = S("gain_kept"), S("wer_gain_kept")
    add(f"Share of the ensemble's frame-accuracy gain kept by the distilled model, (distilled − baseline)/(ensemble − "
        f"baseline): **{fmt(g, 2)}** (paper: {PAPER['gain_kept']:.2f}). WER gain kept: {fmt(wg, 2)}.\n")
    b, e, d = S("baseline_frame_acc"), S("ensemble_frame_acc"), S("distilled_frame_acc")
    if b and e and d:
        beats = e["mean"] - b["mean"] > 3 * b["std"]
        add(f"The ensemble {'beats' if beats else 'does NOT beat'} the single models by more than 3 standard deviations "
            f"of the members ({100 * (e['mean'] - b['mean']):+.2f} points vs 3 × {100 * b['std']:.2f}); the distilled "
            f"model is {100 * (d['mean'] - b['mean']):+.2f} points from the baseline.\n")
    add("Distilled test frame accuracy (and validation) by temperature, mean over seeds:\n")
    add(markdown_table(["T", "val frame acc (%)", "test frame acc (%)", "test WER (%)"], [
        [t, f"{100 * np.mean(r['val_frame_acc']):.2f}", f"{100 * np.mean(r['test_frame_acc']):.2f}",
         f"{100 * np.mean(r['test_wer']):.2f}"]
        for t, r in sorted(details["temperature"].items(), key=lambda x: float(x[0]))])
        + "\n")
    add("![frame accuracy vs T](frame_accuracy_vs_T.png)\n")
    if (c.out / "posteriors.png").exists():
        add("![posteriors](posteriors.png)\n")

    st = details.get("store")
    if st:
        add("### The ensemble's outputs stored once, in full or as top-k logits\n")
        add(f"The {n_m} members' logits on every transfer frame, written once as fp16 memory-mapped shards with a manifest "
            "(member weights sha256, a data fingerprint, k; `darkknowledge.store`): for top-k each member keeps its k "
            "largest logits and one fill logit for the rest, chosen so that at T = 1 the other classes share the remaining "
            "probability equally. One student (seed 0, the chosen T) distilled from each store:\n")
        add(markdown_table(["k", "store size (MB)", "test frame acc (%)", "test WER (%)"], [
            [k, f"{r['bytes'] / 1e6:.1f}", f"{100 * r['frame_acc']:.2f}", f"{100 * r['wer']:.2f}"]
            for k, r in st.items()]) + "\n")

    sp = details["speakers"]
    add(f"## Held-out speakers ({', '.join(sp['heldout'])})\n")
    add(f"The official split has every speaker in training, so its WER is near 0; here two speakers are never heard "
        f"in training ({s.speaker_members} members, the ensemble of them, and a model distilled from it at the T "
        "chosen above).\n")
    add(markdown_table(["system", "frame acc (%)", "WER (%)"], [
        ["single model", _pct(S("speaker_heldout_baseline_frame_acc")), _pct(S("speaker_heldout_baseline_wer"))],
        ["ensemble", _pct(S("speaker_heldout_ensemble_frame_acc")), _pct(S("speaker_heldout_ensemble_wer"))],
        ["distilled", _pct(S("speaker_heldout_distilled_frame_acc")), _pct(S("speaker_heldout_distilled_wer"))]]) + "\n")

    r = details["reg3pct"]
    add("## Table 5 analogue: 3% of the training recordings\n")
    add(f"{r['hard']['n_train_frames']:,} training frames (3% of the training recordings). Hard targets vs soft targets "
        f"(T = 2, hard weight 0.5) from member 0 (trained on all the data) and from the ensemble; {s.reg_epochs} "
        "epochs each; the summary is at the validation-selected epoch.\n")
    add(markdown_table(["system", "paper train", "ours train (%)", "paper test", "ours test (%)"], [
        ["baseline (100%; members)", "63.4%", "–", "58.9%", _pct(S("baseline_frame_acc"))],
        ["hard targets (3%)", _paper("reg3pct_hard_train_frame_acc"), _pct(S("reg3pct_hard_train_frame_acc")),
         _paper("reg3pct_hard_test_frame_acc"), _pct(S("reg3pct_hard_test_frame_acc"))],
        ["soft targets of a full-data model (3%)", _paper("reg3pct_soft_train_frame_acc"),
         _pct(S("reg3pct_soft_train_frame_acc")), _paper("reg3pct_soft_test_frame_acc"),
         _pct(S("reg3pct_soft_test_frame_acc"))],
        ["soft targets of the ensemble (3%)", "–", "–", "–", _pct(S("reg3pct_ensemble_soft_test_frame_acc"))]]) + "\n")
    h, so = r["hard"], r["soft"]
    h_test, so_test = np.mean(h["test"], 0), np.mean(so["test"], 0)
    add(f"Early stopping: the hard-target model's mean test frame accuracy peaks at {100 * h_test.max():.2f}% (epoch "
        f"{int(h_test.argmax()) + 1}) and ends at {100 * h_test[-1]:.2f}%; the soft-target model peaks at "
        f"{100 * so_test.max():.2f}% and ends at {100 * so_test[-1]:.2f}% "
        f"({'hard targets need early stopping' if h_test.max() - h_test[-1] > 0.005 else 'no collapse after the peak'}"
        f"; validation-selected epochs: hard {h['selected_epoch']}, soft {so['selected_epoch']}).\n")
    add("![3% curves](reg3pct_curves.png)\n")
    return "\n".join(lines)
