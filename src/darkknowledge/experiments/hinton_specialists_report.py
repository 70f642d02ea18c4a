"""The report and figures of :mod:`.hinton_specialists`: every number comes from the summary, ``details`` or the
paper tables :data:`~.hinton_specialists.PAPER`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..report import fmt, markdown_table
from .hinton_specialists import PAPER, Settings

TITLES = {"cifar10": "CIFAR-10 (JPEG copy)", "omniglot": "Omniglot (242 characters)"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pct(entry: dict[str, Any] | None, digits: int = 2) -> str:
    return fmt(entry, digits, scale=100.0, show_n="multi")


def _count(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    return f"{entry['mean']:.1f}" + (f" ± {entry['std']:.1f}" if entry["std"] else "")


def pooled_table4(rows_by_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Table 4 rows summed over seeds: examples, base / new correct, Δ, relative change Δ / base correct."""
    acc: dict[int, dict[str, Any]] = {}
    for rows in rows_by_seed:
        for r in rows:
            a = acc.setdefault(r["covering"], {"covering": r["covering"], "label": r["label"], "examples": 0,
                                               "base_correct": 0, "new_correct": 0})
            for k in ("examples", "base_correct", "new_correct"):
                a[k] += r[k]
    out = []
    for k in sorted(acc):
        a = acc[k]
        a["delta_correct"] = a["new_correct"] - a["base_correct"]
        a["relative_change"] = a["delta_correct"] / a["base_correct"] if a["base_correct"] else float("nan")
        out.append(a)
    return out


def write_figures(out: Path, details: dict[str, Any], covariances: dict[str, np.ndarray | None]) -> None:
    plt = _plt()
    ds = details["datasets"]
    # accuracy gain by coverage (Table 4), pooled over seeds, beside the paper's
    fig, axes = plt.subplots(1, len(ds) + 1, figsize=(3.6 * (len(ds) + 1), 3.2))
    p_cov = [r[0] for r in PAPER["table4"]]
    axes[0].bar(p_cov, [100 * r[3] for r in PAPER["table4"]], color="grey")
    axes[0].set_title("paper (JFT, Table 4)", fontsize=9)
    axes[0].set_xlabel("# specialists covering the true class")
    axes[0].set_ylabel("relative accuracy change (%)")
    for ax, (key, d) in zip(axes[1:], ds.items()):
        rows = [r for r in pooled_table4([r["table4"] for r in d["combination"]]) if r["examples"]]
        xs = [r["covering"] for r in rows]
        ys = [100 * r["relative_change"] if np.isfinite(r["relative_change"]) else 0.0 for r in rows]
        ax.bar(xs, ys, color=["tab:green" if y >= 0 else "tab:red" for y in ys])
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(f"n={r['examples']}", (x, y), ha="center", va="bottom" if y >= 0 else "top", fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(xs)
        ax.set_title(f"ours: {TITLES.get(key, key)}", fontsize=9)
        ax.set_xlabel("# specialists covering the true class")
    fig.tight_layout()
    fig.savefig(out / "gain_by_coverage.png", dpi=120)
    plt.close(fig)
    # covariance of the generalist's predictions, classes ordered by cluster (seed 0)
    for key, d in ds.items():
        m = covariances.get(key)
        if m is None:
            continue
        cl = d["clusters"][0]
        order = np.asarray(cl["order"])
        own = np.asarray(cl["own_cluster"])[order]
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
        lim = np.quantile(np.abs(m), 0.99) or 1.0
        im = ax.imshow(m[np.ix_(order, order)], cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        for b in np.flatnonzero(np.diff(own)) + 0.5:
            ax.axhline(b, color="k", lw=0.4)
            ax.axvline(b, color="k", lw=0.4)
        if len(order) <= 20:
            names = [d["class_names"][i] for i in order]
            ax.set_xticks(range(len(order)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(order)), names, fontsize=7)
        ax.set_title(f"{TITLES.get(key, key)}: cov of the generalist's predictions\n(T = {cl['temperature']:g}, "
                     f"classes ordered by cluster, seed 0)", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
        fig.tight_layout()
        fig.savefig(out / f"covariance_{key}.png", dpi=120)
        plt.close(fig)


def _cluster_rows(key: str, d: dict[str, Any]) -> list[list[Any]]:
    names = d["class_names"]
    cl = d["clusters"][0]
    rows = []
    for m, s in enumerate(cl["sets"]):
        if key == "omniglot":
            alph = Counter(names[i].split("/")[0] for i in s)
            comp = ", ".join(f"{a} {n}" for a, n in alph.most_common(3)) + (" …" if len(alph) > 3 else "")
            ex = "; ".join(names[i] for i in s[:4]) + ("; …" if len(s) > 4 else "")
            rows.append([m, len(s), comp, ex])
        else:
            rows.append([m, len(s), "; ".join(names[i] for i in s)])
    return rows


def _verdict(key: str, d: dict[str, Any]) -> str:
    comb = d["combination"]
    diffs = [r["specialists_acc"] - r["generalist_acc"] for r in comb]
    n = len(diffs)
    pos, neg = sum(x > 0 for x in diffs), sum(x < 0 for x in diffs)
    fixed, broken = sum(r["fixed"] for r in comb), sum(r["broken"] for r in comb)
    total = sum(r["n_test"] for r in comb)
    mean = 100 * float(np.mean(diffs))
    if pos == n and mean > 0:
        what = "**help**"
    elif neg == n and mean < 0:
        what = "**hurt**"
    else:
        what = "**do not clearly help**"
    return (f"On {TITLES.get(key, key)} the specialists {what}: {mean:+.2f} points of test accuracy on average "
            f"(per seed: {', '.join(f'{100 * x:+.2f}' for x in diffs)}); over all seeds the combination fixes {fixed} "
            f"and breaks {broken} of {total} test predictions of the generalist.")


def build_report(s: Settings, summary: dict[str, Any], details: dict[str, Any], prov: dict[str, Any]) -> str:
    S = summary.get  # noqa: N806
    ds = details["datasets"]
    tm = details["time"]
    lines: list[str] = []
    add = lines.append
    add("# Hinton, Vinyals & Dean (2015) §5: specialists — and distilling them back into one network\n")
    mode = "quick mode: a pipeline check, not a result" if s.quick else f"full mode, {s.seeds} seeds"
    per_ds = ", ".join(f"{k} {v['cpu_s'] / 60:.1f}" for k, v in tm["by_dataset"].items())
    add(f"Command: `{prov['command']}` ({mode}). Commit `{prov['git_commit']}`; machine: {prov['machine'].get('cpu')} "
        f"({prov['machine'].get('cpu_count')} cores); one torch thread per run. Training: {tm['cpu_s'] / 60:.1f} "
        f"CPU-min summed over the runs ({per_ds}); clustering and Eq. 5 inference in the main process "
        f"{tm['main_cpu_s'] / 60:.1f} CPU-min; this invocation {prov['wall_time_s'] / 60:.1f} min of wall time "
        "(cached runs are not retrained).\n")

    add("## Setting\n")
    add("The paper's JFT (100M images, 15,000 classes, 61 specialists of 300 classes) is replaced by two small real "
        "datasets. Every network is `small_cnn` (conv32-pool-conv64-pool-FC128, dropout 0.3), SGD with Nesterov "
        "momentum 0.9, weight decay 5e-4, cosine schedule, bf16 autocast for the training forwards (losses and all "
        "evaluation in fp32).\n")
    rows = []
    for key, d in ds.items():
        st = d["settings"]
        g = d["generalists"][0]
        overlap = (f"ratio rule, 1 + {st['overlap_ratio']:g}" if st.get("overlap_ratio") is not None
                   else ("none (disjoint)" if not st["overlap"] else f"{st['overlap']} next nearest"))
        rows.append([TITLES.get(key, key), st["note"], f"{g['train']:,} / {g['val']:,} / {g['test']:,}",
                     f"{st['epochs']} (lr {st['lr']:g}, batch {st['batch_size']})",
                     f"{st['spec_epochs']} (lr {st['spec_lr']:g}, from the generalist)", st["k"], overlap])
    add(markdown_table(["dataset", "data", "train / val / test", "generalist & distilled epochs",
                        "specialist epochs", "K", "overlap"], rows) + "\n")
    add("**Chosen on validation:** the epoch of every run (specialists: on a 50/50 validation sample of their own "
        "task), the dustbin correction rule (the paper's `log(0.5/f)` or the exact prior shift `log((1−f)/f)`; the one "
        "whose combination is more accurate on the validation split), the distillation temperature T ∈ "
        f"{{{', '.join(f'{t:g}' for t in s.temperatures)}}} (seed 0's students). **Label-free rules on the training "
        "set's predictions:** the clustering temperature (the smallest T of "
        f"{{{', '.join(f'{t:g}' for t in s.cluster_temperatures)}}} for which no K-means cluster holds more than "
        f"{s.max_cluster_share:g} × C/K classes) and, on Omniglot, the overlap (a class also joins every cluster whose "
        "centre is at most 1 + ratio times as far from its covariance column as its own centre). **Fixed a priori** "
        "(budget): K, the epochs, learning rates, the hard-target weight "
        f"{s.w_hard:g} of the distilled student, n = {s.top_n} (the paper's).\n")

    add("## Table 2 analogue: clusters of the covariance of the generalist's predictions (seed 0)\n")
    for key, d in ds.items():
        cl = d["clusters"][0]
        tried = ", ".join(f"T = {t}: {sz[:4]}{'…' if len(sz) > 4 else ''}" for t, sz in cl["sizes_by_temperature"].items())
        add(f"**{TITLES.get(key, key)}**: clustering temperature T = {cl['temperature']:g} (largest own clusters at "
            f"each T tried: {tried}); {len(cl['sets'])} special sets; the generalist's training accuracy "
            f"{100 * cl['train_acc']:.1f}%.\n")
        if key == "omniglot":
            add(markdown_table(["set", "classes", "alphabets (most common)", "examples"], _cluster_rows(key, d)) + "\n")
        else:
            add(markdown_table(["set", "classes", "members"], _cluster_rows(key, d)) + "\n")
        add(f"![covariance {key}](covariance_{key}.png)\n")
    add("Paper (JFT): e.g. *Tea party; Easter; Bridal shower; Baby shower; Easter Bunny; …* — *Bridge; Cable-stayed "
        "bridge; Suspension bridge; Viaduct; Chimney; …* — *Toyota Corolla E100; Opel Signum; Opel Astra; Mazda "
        "Familia; …*\n")

    add("## Table 3 analogue: generalist vs generalist + specialists (Eq. 5, n = 1)\n")
    rows = [["JFT (paper): baseline", "–", f"{100 * PAPER['generalist_cond_acc']:.1f}%",
             f"{100 * PAPER['generalist_acc']:.1f}%", "–"],
            [f"JFT (paper): + {PAPER['n_specialists']} specialists", "–", f"{100 * PAPER['specialists_cond_acc']:.1f}%",
             f"{100 * PAPER['specialists_acc']:.1f}%", f"+{100 * PAPER['rel_gain']:.1f}%"]]
    for key in ds:
        t = TITLES.get(key, key)
        rows.append([f"{t}: generalist", "–", _pct(S(f"{key}_generalist_cond_acc")), _pct(S(f"{key}_generalist_acc")),
                     "–"])
        rows.append([f"{t}: + specialists", _count(S(f"{key}_n_specialists")),
                     _pct(S(f"{key}_specialists_cond_acc")), _pct(S(f"{key}_specialists_acc")),
                     _pct(S(f"{key}_rel_gain"))])
        rows.append([f"{t}: one network distilled from the combination", "–", "–",
                     _pct(S(f"{key}_distilled_back_acc")), "–"])
    add(markdown_table(["system", "# specialists", "conditional test accuracy (%)", "test accuracy (%)",
                        "relative gain (%)"], rows) + "\n")
    add("Mean ± std over seeds. Conditional accuracy counts only test examples of classes some specialist covers, "
        "with the prediction restricted to those classes; here every class is covered by at least one specialist, so "
        "it equals the test accuracy (in the paper 52% of the test examples had no covering specialist).\n")
    for key, d in ds.items():
        add(_verdict(key, d) + "\n")

    add("## Table 4 analogue: improvement by the number of specialists covering the correct class\n")
    for key, d in ds.items():
        ours = {r["covering"]: r for r in pooled_table4([r["table4"] for r in d["combination"]]) if r["examples"]}
        paper = {r[0]: r for r in PAPER["table4"]}
        add(f"**{TITLES.get(key, key)}** (test examples summed over {len(d['combination'])} seed(s)):\n")
        rows = []
        for k in sorted(set(ours) | set(paper)):
            o, p = ours.get(k), paper.get(k)
            label = o["label"] if o else ("10 or more" if k == 10 else str(k))
            rows.append([label, f"{o['examples']:,}" if o else "0",
                         f"{o['delta_correct']:+,}" if o else "–",
                         f"{100 * o['relative_change']:+.1f}%" if o and np.isfinite(o["relative_change"]) else "–",
                         f"{p[1]:,}" if p else "–", f"{p[2]:+,}" if p else "–", f"{100 * p[3]:+.1f}%" if p else "–"])
        add(markdown_table(["# covering", "ours: # test examples", "ours: Δ correct", "ours: relative change",
                            "paper: # test examples", "paper: Δ correct", "paper: relative change"], rows) + "\n")
    add("A row with 0 of our test examples: no class has that many covering specialists (with disjoint clusters, as "
        "on CIFAR-10, every class has exactly one). Relative change = Δ correct / the generalist's correct examples "
        "in the row, as in the paper.\n")
    add("![gain by coverage](gain_by_coverage.png)\n")

    add("## Beyond the paper: the combination distilled back into one network\n")
    add("The Eq. 5 distributions q of generalist + specialists on the training set are computed once and are the soft "
        "targets (`kd`: T² · KL at temperature T plus "
        f"{s.w_hard:g} · CE with the labels) of one `small_cnn` trained from scratch with the generalist's recipe "
        "plus a one-epoch warm-up and gradient clipping at 5 (without them a T = 2 student died in its first epoch "
        "on 2 of 6 tries); "
        "on Omniglot the training images are shifted as for the generalist and keep the soft target of their clean "
        "image. The paper has not done this (its JFT result is an ensemble).\n")
    rows = []
    for key, d in ds.items():
        dd = d["distilled"]
        by_t = "; ".join(f"T = {t}: val {100 * r['val_acc']:.2f}%" for t, r in dd["by_T_seed0"].items())
        agree = [r["agreement"] for r in dd["seeds"] if r.get("agreement") is not None]
        rows.append([TITLES.get(key, key), by_t, f"{dd['best_T']:g}", _pct(S(f"{key}_generalist_acc")),
                     _pct(S(f"{key}_specialists_acc")), _pct(S(f"{key}_distilled_back_acc")),
                     f"{100 * float(np.mean(agree)):.1f}%" if agree else "–"])
    add(markdown_table(["dataset", "seed 0 validation accuracy by T", "chosen T", "generalist (%)",
                        "generalist + specialists (%)", "distilled back (%)", "top-1 agreement with the combination"],
                       rows) + "\n")
    for key, d in ds.items():
        g = np.array([r["generalist_acc"] for r in d["combination"]])
        b = np.array([r["test_acc"] for r in d["distilled"]["seeds"]])
        q = np.array([r["specialists_acc"] for r in d["combination"]])
        add(f"{TITLES.get(key, key)}: distilled − generalist {100 * np.mean(b - g):+.2f} points (per seed "
            f"{', '.join(f'{100 * x:+.2f}' for x in b - g)}); distilled − combination {100 * np.mean(b - q):+.2f} "
            "points. A generalist retrained on its own soft targets would show how much of this is the combination's "
            "and how much is self-distillation; that control is not run here (budget).\n")

    add("## Diagnostics\n")
    rows = []
    for key, d in ds.items():
        for k, r in enumerate(d["combination"]):
            own = [x["test_acc_own_task"] for x in r["specialists"] if x["test_acc_own_task"] is not None]
            rows.append([TITLES.get(key, key), k, r["rule"],
                         f"{100 * r['val_acc_by_rule']['paper']:.2f} / {100 * r['val_acc_by_rule']['prior']:.2f}",
                         f"{min(r['shifts']):+.2f} … {max(r['shifts']):+.2f}",
                         f"{100 * r['share_true_class_in_active']:.1f}%", f"{r['mean_active']:.2f}",
                         f"{r['fixed']} / {r['broken']}", f"{100 * float(np.mean(own)):.1f}%" if own else "–",
                         r["solver"]["test"]["iterations"]])
    add(markdown_table(["dataset", "seed", "dustbin rule", "val acc paper / prior rule (%)", "dustbin shifts",
                        "test examples whose true class an active specialist covers", "active specialists per example",
                        "fixed / broken", "specialists' own-task test accuracy (mean)", "Eq. 5 EM evaluations (slowest)"],
                       rows) + "\n")
    sp = details.get("solver_speedup")
    add(("Eq. 5 is solved for a whole batch at once (SQUAREM-accelerated EM, float64); "
         + (f"`benchmarks/specialists_solver.py` measured it **{sp:.0f}×** faster than a per-example scipy solve "
            "(`results/benchmarks/specialists_solver.json`)." if sp else
            "the solver benchmark (`benchmarks/specialists_solver.py`) has not been run, so no speed-up is reported."))
        + "\n")
    add("**What limits the gain here.** A specialist is the generalist's own small architecture with the same inputs, "
        "fine-tuned for a few epochs, so it has no capacity the generalist lacks — on JFT the generalist was "
        "underfitting 15,000 classes and a specialist could spend its capacity on 300. With n = 1 only the specialists "
        "covering the generalist's top class are active, so a mistake whose true class is in another cluster cannot be "
        "fixed; the share of test examples whose true class an active specialist covers is in the table above. "
        "CIFAR-10 has only 10 classes in 4 clusters, far from the many-class regime the method was built for; Omniglot "
        "has 13 training images per character.\n")
    return "\n".join(lines)
