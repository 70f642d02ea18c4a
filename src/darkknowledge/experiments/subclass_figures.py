"""The figures of the subclass-distillation experiments, drawn from summaries, run records and cached subclass
evaluations (:func:`~darkknowledge.subclass.evaluate_subclasses` results: ``counts``, ``contingency``,
``recovery``, ``num_used``). Imports nothing of the experiments; one matplotlib setup
(:func:`~darkknowledge.report.pyplot`), figures saved atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..report import pyplot, save_figure

__all__ = ["usage_figure", "accuracy_figure", "subclasses_figure", "curves_figure", "data_efficiency_figure",
           "ablation_figure", "ctr_curves_figure"]


def usage_figure(path: Path, evals: Sequence[tuple[str, dict[str, Any]]], title: str, subclasses: int = 5) -> None:
    """Subclass-usage histogram: the share of test examples whose argmax is each of the ``n·s``
    subclasses, one bar group per model (``evals``: ``(label, subclass evaluation)``)."""
    k = len(evals[0][1]["counts"])
    width = 0.8 / len(evals)
    fig, ax = pyplot().subplots(figsize=(7, 3.4))
    for i, (label, ev) in enumerate(evals):
        c = np.asarray(ev["counts"], dtype=float)
        ax.bar(np.arange(k) + (i - (len(evals) - 1) / 2) * width, 100 * c / max(c.sum(), 1), width,
               label=f"{label} ({ev['num_used']} used)")
    ax.axhline(100 / k, color="grey", ls=":", lw=1, label="uniform")
    for b in range(subclasses, k, subclasses):
        ax.axvline(b - 0.5, color="k", lw=0.8)
    ax.set_xticks(range(k))
    ax.set_xlabel(f"predicted subclass (blocks of {subclasses} per class)")
    ax.set_ylabel("% of test examples")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def accuracy_figure(path: Path, summary: Mapping[str, Any], names: Sequence[str], reference: Mapping[str, float],
                    title: str) -> None:
    """Binary test accuracy (mean ± std over seeds) of each model, with single-run reference numbers."""
    fig, ax = pyplot().subplots(figsize=(6.5, 3.6))
    m = [summary[f"{n}_acc"]["mean"] for n in names]
    e = [summary[f"{n}_acc"]["std"] for n in names]
    ax.bar(names, m, yerr=e, capsize=4, color="#7aa6c2", label="ours (mean ± std over seeds)")
    for i, n in enumerate(names):
        if f"{n}_acc" in reference:
            ax.plot([i - 0.4, i + 0.4], [reference[f"{n}_acc"]] * 2, "r-", lw=2,
                    label="reference (1 run)" if n == "teacher" else None)
    lo = min(min(m) - 1.0, min(reference.values(), default=100) - 0.3)
    ax.set_ylim(lo, 100)
    ax.set_ylabel("binary test accuracy %")
    ax.set_title(f"{title}: teacher and students")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def subclasses_figure(path: Path, teacher_ev: dict[str, Any], student_ev: dict[str, Any], fine_name: str) -> None:
    """Teacher and student: the share of each predicted subclass's test examples per fine label."""
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 4))
    for ax, ev, title in ((axes[0], teacher_ev, "teacher"), (axes[1], student_ev, "subclass student")):
        c = np.asarray(ev["contingency"], dtype=float)
        c = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
        ax.imshow(c, cmap="Blues", vmin=0, vmax=1)
        ax.set_xlabel(f"true {fine_name}")
        ax.set_ylabel("predicted subclass (0–4: class 0, 5–9: class 1)")
        ax.set_xticks(range(c.shape[1]))
        ax.set_yticks(range(c.shape[0]))
        ax.set_title(f"{title}: recovery {100 * ev['recovery']:.1f}%")
    fig.suptitle(f"Share of each predicted subclass's test images per {fine_name} (first seed)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def curves_figure(path: Path, records: Mapping[str, Sequence[dict[str, Any]]]) -> None:
    """Validation accuracy per epoch, mean over the seeds' run records of each model."""
    fig, ax = pyplot().subplots(figsize=(6.5, 3.6))
    for n, recs in records.items():
        curves = np.array([[r["val"]["accuracy"] * 100 for r in rec["epochs"]] for rec in recs])
        ep = np.arange(1, curves.shape[1] + 1)
        ax.plot(ep, curves.mean(0), marker="o", ms=3, label=n)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy % (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def data_efficiency_figure(path: Path, summary: Mapping[str, Any], full: Mapping[str, list[float]],
                           percents: Sequence[int], methods: Sequence[str]) -> None:
    """Accuracy by the share of the transfer set (``full``: the 100 % runs, when present) and the gaps."""
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8))
    xs = list(percents) + ([100] if full else [])
    for m in methods:
        mean = [summary[f"{m}_acc_{p}pct"]["mean"] for p in percents]
        std = [summary[f"{m}_acc_{p}pct"]["std"] for p in percents]
        if full and m in full:
            mean.append(float(np.mean(full[m])))
            std.append(float(np.std(full[m], ddof=1)) if len(full[m]) > 1 else 0.0)
        axes[0].errorbar(xs[:len(mean)], mean, yerr=std, marker="o", capsize=3, label=m)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("% of the transfer set (log scale; 100 % from subclass-mnist-2x5)")
    axes[0].set_ylabel("binary test accuracy %")
    axes[0].legend()
    for m in ("scratch", "conventional"):
        d = [summary[f"subclass_minus_{m}_{p}pct"] for p in percents]
        axes[1].errorbar(percents, [e["mean"] for e in d], yerr=[e["std"] for e in d], marker="o", capsize=3,
                         label=f"subclass − {m}")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("% of the transfer set")
    axes[1].set_ylabel("accuracy difference (points)")
    axes[1].legend()
    fig.suptitle("MNIST-2x5 students with little transfer data (mean ± std over seeds)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def ablation_figure(path: Path, aux_ev: dict[str, Any], noaux_ev: dict[str, Any]) -> None:
    """Test images per (predicted subclass, digit) of the β = 1 and β = 0 teachers."""
    fig, axes = pyplot().subplots(1, 2, figsize=(9, 4))
    for ax, ev, title in ((axes[0], aux_ev, "β = 1 (with L_aux)"), (axes[1], noaux_ev, "β = 0 (no L_aux)")):
        c = np.asarray(ev["contingency"], dtype=float)
        ax.imshow(c / max(c.max(), 1), cmap="Blues", vmin=0, vmax=1)
        ax.set_xlabel("true digit")
        ax.set_ylabel("predicted subclass")
        ax.set_xticks(range(c.shape[1]))
        ax.set_yticks(range(c.shape[0]))
        ax.set_title(f"teacher {title}\nrecovery {100 * ev['recovery']:.1f}%, {ev['num_used']} subclasses used")
    fig.suptitle("Test images per (predicted subclass, digit), first seed")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def ctr_curves_figure(path: Path, curves: Mapping[str, list[list[dict[str, float]]]], summary: Mapping[str, Any],
                      batch_size: int) -> None:
    """Students' test log loss and AUC by training step (mean over seeds; band = min–max), with the teacher
    and the oracle."""
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4))
    for m, per_seed in curves.items():
        steps = np.array([c["step"] for c in per_seed[0]])
        for ax, key in zip(axes, ("logloss", "auc")):
            v = np.array([[c[key] for c in cur] for cur in per_seed])
            ax.plot(steps, v.mean(0), label=m)
            if v.shape[0] > 1:
                ax.fill_between(steps, v.min(0), v.max(0), alpha=0.2)
    for ax, key in zip(axes, ("logloss", "auc")):
        ax.axhline(summary[f"teacher_{key}"]["mean"], color="k", ls="--", lw=1, label="teacher")
        ax.axhline(summary[f"oracle_{key}"]["mean"], color="g", ls=":", lw=1, label="oracle (true click prob.)")
        ax.set_xlabel(f"student training steps (batch {batch_size})")
        ax.set_ylabel(f"test {'log loss' if key == 'logloss' else 'AUC'}")
        ax.legend(fontsize=8)
    lo = summary["oracle_logloss"]["mean"]
    axes[0].set_ylim(lo - 0.005, summary["base_rate_logloss"]["mean"] + 0.01)
    axes[1].set_ylim(0.5, summary["oracle_auc"]["mean"] + 0.01)
    fig.suptitle("SYNTHETIC clickthrough: students' learning curves (mean over seeds; band = min–max)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
