"""The report and figures of :mod:`.hinton_specialists`: the template ``templates/hinton_specialists.md`` filled
from the summary, ``details`` and the paper's numbers (passed in: this module imports nothing of the experiment),
its tables as rows of data, and two figures."""

from __future__ import annotations

from collections import Counter
from importlib.resources import files
from typing import Any

import numpy as np

from ..report import Results, fmt, markdown_table, pyplot, render, save_figure
from ..specialists import pooled_gain_by_coverage
from . import hinton_specialists_sweep as sweep_

__all__ = ["TITLES", "report", "figures"]

TITLES = {"cifar10": "CIFAR-10 (JPEG copy)", "omniglot": "Omniglot (242 characters)"}
TEMPLATE = "templates/hinton_specialists.md"


def main_datasets(details: dict[str, Any]) -> dict[str, Any]:
    """The datasets of the paper's protocol (``details["datasets"]`` without the capacity sweep's points)."""
    return {k: v for k, v in details["datasets"].items() if v["settings"].get("role", "main") == "main"}


def _title(key: str) -> str:
    return TITLES.get(key, key)


def _pct(entry: dict[str, Any] | None, digits: int = 2) -> str:
    return fmt(entry, digits, scale=100.0, show_n="multi")


def _count(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    return f"{entry['mean']:.1f}" + (f" ± {entry['std']:.1f}" if entry["std"] else "")


def _signed(values: Any) -> str:
    return ", ".join(f"{100 * x:+.2f}" for x in values)


# --------------------------------------------------------------------------- figures


def figures(res: Results, details: dict[str, Any], covariances: dict[str, np.ndarray | None],
            paper: dict[str, Any]) -> None:
    """``gain_by_coverage.png`` (Table 4, pooled over seeds, beside the paper's) and ``covariance_<key>.png`` (the
    covariance of the generalist's predictions, classes ordered by cluster, seed 0)."""
    plt = pyplot()
    ds = main_datasets(details)
    fig, axes = plt.subplots(1, len(ds) + 1, figsize=(3.6 * (len(ds) + 1), 3.2))
    axes[0].bar([r[0] for r in paper["table4"]], [100 * r[3] for r in paper["table4"]], color="grey")
    axes[0].set_title("paper (JFT, Table 4)", fontsize=9)
    axes[0].set_xlabel("# specialists covering the true class")
    axes[0].set_ylabel("relative accuracy change (%)")
    for ax, (key, d) in zip(axes[1:], ds.items()):
        rows = [r for r in pooled_gain_by_coverage([r["table4"] for r in d["combination"]]) if r["examples"]]
        xs = [r["covering"] for r in rows]
        ys = [100 * r["relative_change"] if np.isfinite(r["relative_change"]) else 0.0 for r in rows]
        ax.bar(xs, ys, color=["tab:green" if y >= 0 else "tab:red" for y in ys])
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(f"n={r['examples']}", (x, y), ha="center", va="bottom" if y >= 0 else "top", fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(xs)
        ax.set_title(f"ours: {_title(key)}", fontsize=9)
        ax.set_xlabel("# specialists covering the true class")
    fig.tight_layout()
    save_figure(fig, res.path("gain_by_coverage.png"))
    for key, d in ds.items():
        m = covariances.get(key)
        if m is not None:
            _covariance_figure(res, key, d, m)


def _covariance_figure(res: Results, key: str, d: dict[str, Any], m: np.ndarray) -> None:
    plt = pyplot()
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
    ax.set_title(f"{_title(key)}: cov of the generalist's predictions\n(T = {cl['temperature']:g}, "
                 f"classes ordered by cluster, seed 0)", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    save_figure(fig, res.path(f"covariance_{key}.png"))


# --------------------------------------------------------------------------- the report's tables and lines


def _setting_table(ds: dict[str, Any]) -> str:
    rows = []
    for key, d in ds.items():
        st, g = d["settings"], d["generalists"][0]
        overlap = (f"ratio rule, 1 + {st['overlap_ratio']:g}" if st.get("overlap_ratio") is not None
                   else ("none (disjoint)" if not st["overlap"] else f"{st['overlap']} next nearest"))
        rows.append([_title(key), st["note"], f"{g['train']:,} / {g['val']:,} / {g['test']:,}",
                     f"{st['epochs']} (lr {st['lr']:g}, batch {st['batch_size']})",
                     f"{st['spec_epochs']} (lr {st['spec_lr']:g}, from the generalist)", st["k"], overlap])
    return markdown_table(["dataset", "data", "train / val / test", "generalist & distilled epochs",
                           "specialist epochs", "K", "overlap"], rows)


def _cluster_rows(key: str, d: dict[str, Any]) -> list[list[Any]]:
    names, rows = d["class_names"], []
    for m, s in enumerate(d["clusters"][0]["sets"]):
        if key == "omniglot":
            alph = Counter(names[i].split("/")[0] for i in s)
            comp = ", ".join(f"{a} {n}" for a, n in alph.most_common(3)) + (" …" if len(alph) > 3 else "")
            ex = "; ".join(names[i] for i in s[:4]) + ("; …" if len(s) > 4 else "")
            rows.append([m, len(s), comp, ex])
        else:
            rows.append([m, len(s), "; ".join(names[i] for i in s)])
    return rows


def _clusters(ds: dict[str, Any]) -> str:
    blocks = []
    for key, d in ds.items():
        cl = d["clusters"][0]
        tried = ", ".join(f"T = {t}: {sz[:4]}{'…' if len(sz) > 4 else ''}" for t, sz in cl["sizes_by_temperature"].items())
        blocks.append(f"**{_title(key)}**: clustering temperature T = {cl['temperature']:g} (largest own clusters at "
                      f"each T tried: {tried}); {len(cl['sets'])} special sets; the generalist's training accuracy "
                      f"{100 * cl['train_acc']:.1f}%.")
        headers = (["set", "classes", "alphabets (most common)", "examples"] if key == "omniglot"
                   else ["set", "classes", "members"])
        blocks.append(markdown_table(headers, _cluster_rows(key, d)))
        blocks.append(f"![covariance {key}](covariance_{key}.png)")
    return "\n\n".join(blocks)


def _table3(ds: dict[str, Any], summary: dict[str, Any], paper: dict[str, Any]) -> str:
    S = summary.get  # noqa: N806
    rows = [["JFT (paper): baseline", "–", f"{100 * paper['generalist_cond_acc']:.1f}%",
             f"{100 * paper['generalist_acc']:.1f}%", "–"],
            [f"JFT (paper): + {paper['n_specialists']} specialists", "–", f"{100 * paper['specialists_cond_acc']:.1f}%",
             f"{100 * paper['specialists_acc']:.1f}%", f"+{100 * paper['rel_gain']:.1f}%"]]
    for key in ds:
        t = _title(key)
        rows += [[f"{t}: generalist", "–", _pct(S(f"{key}_generalist_cond_acc")), _pct(S(f"{key}_generalist_acc")),
                  "–"],
                 [f"{t}: + specialists", _count(S(f"{key}_n_specialists")), _pct(S(f"{key}_specialists_cond_acc")),
                  _pct(S(f"{key}_specialists_acc")), _pct(S(f"{key}_rel_gain"))],
                 [f"{t}: one network distilled from the combination", "–", "–", _pct(S(f"{key}_distilled_back_acc")),
                  "–"]]
    return markdown_table(["system", "# specialists", "conditional test accuracy (%)", "test accuracy (%)",
                           "relative gain (%)"], rows)


def _verdict(key: str, d: dict[str, Any]) -> str:
    comb = d["combination"]
    diffs = [r["specialists_acc"] - r["generalist_acc"] for r in comb]
    n = len(diffs)
    pos, neg = sum(x > 0 for x in diffs), sum(x < 0 for x in diffs)
    fixed, broken = sum(r["fixed"] for r in comb), sum(r["broken"] for r in comb)
    total = sum(r["n_test"] for r in comb)
    mean = 100 * float(np.mean(diffs))
    what = ("**help**" if pos == n and mean > 0 else "**hurt**" if neg == n and mean < 0
            else "**do not clearly help**")
    return (f"On {_title(key)} the specialists {what}: {mean:+.2f} points of test accuracy on average "
            f"(per seed: {_signed(diffs)}); over all seeds the combination fixes {fixed} "
            f"and breaks {broken} of {total} test predictions of the generalist.")


def _table4(ds: dict[str, Any], paper: dict[str, Any]) -> str:
    blocks = []
    for key, d in ds.items():
        ours = {r["covering"]: r for r in pooled_gain_by_coverage([r["table4"] for r in d["combination"]])
                if r["examples"]}
        theirs = {r[0]: r for r in paper["table4"]}
        rows = []
        for k in sorted(set(ours) | set(theirs)):
            o, p = ours.get(k), theirs.get(k)
            label = o["label"] if o else ("10 or more" if k == 10 else str(k))
            rows.append([label, f"{o['examples']:,}" if o else "0",
                         f"{o['delta_correct']:+,}" if o else "–",
                         f"{100 * o['relative_change']:+.1f}%" if o and np.isfinite(o["relative_change"]) else "–",
                         f"{p[1]:,}" if p else "–", f"{p[2]:+,}" if p else "–", f"{100 * p[3]:+.1f}%" if p else "–"])
        blocks.append(f"**{_title(key)}** (test examples summed over {len(d['combination'])} seed(s)):")
        blocks.append(markdown_table(["# covering", "ours: # test examples", "ours: Δ correct", "ours: relative change",
                                      "paper: # test examples", "paper: Δ correct", "paper: relative change"], rows))
    return "\n\n".join(blocks)


def _distilled_table(ds: dict[str, Any], summary: dict[str, Any]) -> str:
    S = summary.get  # noqa: N806
    rows = []
    for key, d in ds.items():
        dd = d["distilled"]
        by_t = "; ".join(f"T = {t}: val {100 * r['val_acc']:.2f}%" for t, r in dd["by_T_seed0"].items())
        agree = [r["agreement"] for r in dd["seeds"] if r.get("agreement") is not None]
        rows.append([_title(key), by_t, f"{dd['best_T']:g}", _pct(S(f"{key}_generalist_acc")),
                     _pct(S(f"{key}_specialists_acc")), _pct(S(f"{key}_distilled_back_acc")),
                     f"{100 * float(np.mean(agree)):.1f}%" if agree else "–"])
    return markdown_table(["dataset", "seed 0 validation accuracy by T", "chosen T", "generalist (%)",
                           "generalist + specialists (%)", "distilled back (%)", "top-1 agreement with the combination"],
                          rows)


def _distilled_gaps(ds: dict[str, Any]) -> str:
    lines = []
    for key, d in ds.items():
        g = np.array([r["generalist_acc"] for r in d["combination"]])
        b = np.array([r["test_acc"] for r in d["distilled"]["seeds"]])
        q = np.array([r["specialists_acc"] for r in d["combination"]])
        lines.append(f"{_title(key)}: distilled − generalist {100 * np.mean(b - g):+.2f} points (per seed "
                     f"{_signed(b - g)}); distilled − combination {100 * np.mean(b - q):+.2f} points. A generalist "
                     "retrained on its own soft targets would show how much of this is the combination's and how much "
                     "is self-distillation; that control is not run here (budget).")
    return "\n\n".join(lines)


def _diagnostics(ds: dict[str, Any]) -> str:
    rows = []
    for key, d in ds.items():
        for k, r in enumerate(d["combination"]):
            own = [x["test_acc_own_task"] for x in r["specialists"] if x["test_acc_own_task"] is not None]
            rows.append([_title(key), k, r["rule"],
                         f"{100 * r['val_acc_by_rule']['paper']:.2f} / {100 * r['val_acc_by_rule']['prior']:.2f}",
                         f"{min(r['shifts']):+.2f} … {max(r['shifts']):+.2f}",
                         f"{100 * r['share_true_class_in_active']:.1f}%", f"{r['mean_active']:.2f}",
                         f"{r['fixed']} / {r['broken']}", f"{100 * float(np.mean(own)):.1f}%" if own else "–",
                         r["solver"]["test"]["iterations"]])
    return markdown_table(["dataset", "seed", "dustbin rule", "val acc paper / prior rule (%)", "dustbin shifts",
                           "test examples whose true class an active specialist covers",
                           "active specialists per example", "fixed / broken",
                           "specialists' own-task test accuracy (mean)", "Eq. 5 EM evaluations (slowest)"], rows)


def _solver(speedup: float | None) -> str:
    if not speedup:
        return "the solver benchmark (`benchmarks/specialists_solver.py`) has not been run, so no speed-up is reported."
    return (f"`benchmarks/specialists_solver.py` measured it **{speedup:.0f}×** faster than a per-example scipy "
            "solve (`results/benchmarks/specialists_solver.json`).")


def report(summary: dict[str, Any], details: dict[str, Any], prov: dict[str, Any], paper: dict[str, Any]) -> str:
    """``report.md``: the template filled from the summary, ``details`` (whose ``settings`` are the experiment's,
    with the seeds used), the provenance and the paper's numbers."""
    s, ds, tm = details["settings"], main_datasets(details), details["time"]
    return render(
        files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"), prov=prov, s=s,
        mode="quick mode: a pipeline check, not a result" if s["quick"] else f"full mode, {s['seeds']} seeds",
        train_min=tm["cpu_s"] / 60, main_min=tm["main_cpu_s"] / 60, wall_min=prov["wall_time_s"] / 60,
        per_dataset_min=", ".join(f"{k} {v['cpu_s'] / 60:.1f}" for k, v in tm["by_dataset"].items()),
        setting_table=_setting_table(ds), temperatures=", ".join(f"{t:g}" for t in s["temperatures"]),
        cluster_temperatures=", ".join(f"{t:g}" for t in s["cluster_temperatures"]), clusters=_clusters(ds),
        table3=_table3(ds, summary, paper), verdicts="\n\n".join(_verdict(k, d) for k, d in ds.items()),
        table4=_table4(ds, paper), distilled_table=_distilled_table(ds, summary), distilled_gaps=_distilled_gaps(ds),
        diagnostics=_diagnostics(ds), solver=_solver(details.get("solver_speedup")), **_sweep_fields(summary, details))


def _sweep_fields(summary: dict[str, Any], details: dict[str, Any]) -> dict[str, str]:
    sw = details.get("sweep")
    if not sw:
        return {"sweep_regime": "The capacity sweep has not been run.", "sweep_table": "", "sweep_coverage": "",
                "sweep_setting": "", "sweep_keeps": ""}
    pts = {k: v["settings"] for k, v in details["datasets"].items() if v["settings"].get("role") == "sweep"}
    st = next(iter(pts.values()))
    keeps = [(what, summary.get(k)) for what, k in (("trained on the stored q", "distilled_back_keeps"),
                                                     ("taught consistently", "distilled_back_keeps_consistent"))]
    return {"sweep_regime": sw["regime"], "sweep_table": sweep_.table(summary),
            "sweep_coverage": sweep_.coverage_table(summary, details),
            "sweep_setting": (f"{len(pts)} generalist sizes × {summary['capacity_sweep'][0]['n']} seeds; each "
                              f"{st['epochs']} epochs (dropout {st['model_args']['dropout']:g}), K = {st['k']} clusters "
                              f"with overlap ratio {st['overlap_ratio']:g}, specialists {st['spec_epochs']} epochs"),
            "sweep_keeps": _keeps(sw["best"], keeps)}


def _keeps(best: str, keeps: list[tuple[str, dict[str, Any] | None]]) -> str:
    keeps = [(what, e) for what, e in keeps if e]
    if not keeps:
        return (f"At the best point ({best}) the share of the combination's gain a network distilled back keeps is "
                "undefined: the combination gained nothing on average (or no student has finished).")

    def seeds(e: dict[str, Any]) -> str:
        return ", ".join("–" if v is None else f"{v:.2f}" for v in e["values"])

    parts = [f"{fmt(e, 2, show_n='multi')} {what} (per seed: {seeds(e)})" for what, e in keeps]
    parts[0] = "ratio of the mean gains ± bootstrap std: " + parts[0]
    return (f"Share of the combination's gain kept by one network distilled back, at the best point ({best}): "
            f"{'; '.join(parts)}.")
