"""The capacity sweep of :mod:`.hinton_specialists` (issue 27): *when* do specialists pay?

Hinton et al. (2015, §5) found +4.4% relative accuracy from 61 specialists on JFT, where the generalist underfit
15,000 classes. Our sweep keeps the data (Omniglot, 242 characters) and the paper's protocol (specialists of the
generalist's architecture, initialised from its weights, trained on 50/50 data with a dustbin class, combined by
Eq. 5) and varies the generalist's capacity (``small_cnn`` width w, hidden h). Each sweep point is an ordinary
dataset setting of the experiment (``role="sweep"``), so every stage runs on it; the ``sweep`` stage only reads
what those stages found (``details["datasets"]``) and writes:

* ``capacity_sweep`` — one row per point: ``params`` (of the generalist), ``generalist_train_acc`` (its top-1 on the
  clean training set), ``generalist_acc``, ``specialists_acc`` (test), ``rel_gain = (specialists_acc −
  generalist_acc) / generalist_acc`` (per seed, then ``mean`` and ``rel_gain_std``: sample std over seeds), ``n``,
  and the distilled-back student's test accuracy;
* ``best_rel_gain`` — the per-seed relative gains of the best point: the one whose gain is most surely above 0,
  i.e. with the largest ``mean − 2 · standard error`` (the largest mean alone would pick the noisiest point);
* ``coverage_rows`` — Table 4 at that point, pooled over seeds: ``{covering, n_examples, rel_change}`` (rows with
  examples only; ``rel_change = Δ correct / the generalist's correct`` in the row);
* ``distilled_back_keeps`` — at that point, ``(mean distilled − mean generalist) / (mean combination − mean
  generalist)`` (test accuracy, over seeds): the share of the combination's gain one network of the generalist's
  size, trained on the combination's soft targets, keeps. A ratio of means, because a seed whose combination gained
  almost nothing makes its own ratio explode; ``std`` is the bootstrap std over seeds (2,000 resamples of the
  seeds, numpy seed 0) and ``values`` the per-seed ratios. Left out when the mean gain is not above 0;
* ``distilled_back_keeps_consistent`` — the same for the student taught consistently (the live combination on each
  augmented training batch instead of the stored distributions of the clean images).

The regime sentence of the report (:func:`regime`) is computed from the rows: a point "pays" when its mean
relative gain exceeds twice its std over seeds (the issue's bar); failing that, the sentence says where the mean
exceeds twice its standard error (std / √n).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.stages import Context, Outcome
from ..models import create_model
from ..report import Results, markdown_table, pyplot, save_figure
from ..specialists import pooled_gain_by_coverage

__all__ = ["params", "sweep", "regime", "table", "figure", "SWEEP_KEYS"]

SWEEP_KEYS = ["capacity_sweep", "best_rel_gain", "coverage_rows", "distilled_back_keeps",
              "distilled_back_keeps_consistent"]


def params(model_args: dict[str, Any], num_classes: int) -> int:
    """Parameters of the generalist (``small_cnn`` with ``model_args`` and ``num_classes`` outputs)."""
    return sum(p.numel() for p in create_model("small_cnn", **{**model_args, "num_classes": num_classes}).parameters())


def _std(xs: list[float]) -> float:
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def _row(key: str, d: dict[str, Any]) -> dict[str, Any]:
    comb, cl, dist = d["combination"], d["clusters"], d["distilled"]["seeds"]
    st = d["settings"]
    rel = [r["rel_gain"] for r in comb]
    g, s = [r["generalist_acc"] for r in comb], [r["specialists_acc"] for r in comb]
    b = [r["test_acc"] for r in dist]
    c = [r["test_acc"] for r in d["distilled"].get("consistent", [])]
    return {"key": key, "width": st["model_args"]["width"], "hidden": st["model_args"]["hidden"],
            "params": params(st["model_args"], len(d["class_names"])),
            "generalist_train_acc": float(np.mean([c["train_acc"] for c in cl])),
            "generalist_acc": float(np.mean(g)), "generalist_acc_std": _std(g),
            "specialists_acc": float(np.mean(s)), "specialists_acc_std": _std(s),
            "rel_gain": float(np.mean(rel)), "rel_gain_std": _std(rel), "n": len(rel),
            "rel_gain_sem": _std(rel) / np.sqrt(len(rel)), "seeds_gained": sum(x > 0 for x in rel),
            "distilled_back_acc": float(np.mean(b)) if b else None,  # None: no student (JSON has no NaN)
            "distilled_back_rel_gain": float(np.mean([(x - y) / y for x, y in zip(b, g)])) if b else None,
            "consistent_acc": float(np.mean(c)) if c else None,
            # a student that collapsed (test accuracy below 5/C; every generalist here is above 50/C): counted, and
            # kept in the means
            "distilled_at_chance": sum(x < 5 / len(d["class_names"]) for x in b),
            "consistent_at_chance": sum(x < 5 / len(d["class_names"]) for x in c),
            "consistent_rel_gain": float(np.mean([(x - y) / y for x, y in zip(c, g)])) if c else None,
            "n_specialists": float(np.mean([len(c["sets"]) for c in cl])),
            "mean_coverage": float(np.mean([r["mean_coverage"] for r in comb])),
            "share_true_class_in_active": float(np.mean([r["share_true_class_in_active"] for r in comb]))}


def _finite(x: float) -> float | None:
    """``None`` for NaN (a row whose base got nothing right): summaries stay plain JSON and compare equal."""
    return float(x) if np.isfinite(x) else None


def _pays(row: dict[str, Any]) -> bool:
    return row["n"] > 1 and row["rel_gain"] > 2 * row["rel_gain_std"]


def _likely(row: dict[str, Any]) -> bool:
    return row["n"] > 1 and row["rel_gain"] > 2 * row["rel_gain_sem"]


def _lower(row: dict[str, Any]) -> float:
    return row["rel_gain"] - 2 * row["rel_gain_sem"]


def sweep(ctx: Context, recs: list[dict[str, Any]] | None) -> Outcome:
    """The stage's collect: the summary keys above from ``details["datasets"]`` of the sweep points."""
    ds = ctx.details["datasets"]
    keys = [d.key for d in ctx.settings.sweep() if d.key in ds]
    if not keys:
        return Outcome()
    rows = sorted((_row(k, ds[k]) for k in keys), key=lambda r: r["params"])
    best = max(rows, key=_lower)
    bd = ds[best["key"]]
    comb = bd["combination"]
    cov = [{"covering": r["covering"], "n_examples": r["examples"], "rel_change": _finite(r["relative_change"]),
            "delta_correct": r["delta_correct"], "base_correct": r["base_correct"]}
           for r in pooled_gain_by_coverage([r["table4"] for r in comb]) if r["examples"]]
    values: dict[str, list[Any]] = {"capacity_sweep": rows, "best_rel_gain": [r["rel_gain"] for r in comb],
                                    "coverage_rows": cov}
    g, s = np.array([r["generalist_acc"] for r in comb]), np.array([r["specialists_acc"] for r in comb])
    for key, runs in (("distilled_back_keeps", bd["distilled"]["seeds"]),
                      ("distilled_back_keeps_consistent", bd["distilled"].get("consistent", []))):
        if (s - g).mean() > 0 and len(runs) == len(g):
            values[key] = kept_share(g, s, np.array([r["test_acc"] for r in runs]))
    by_cov = {k: [{"covering": r["covering"], "n_examples": r["examples"], "rel_change": _finite(r["relative_change"])}
                  for r in pooled_gain_by_coverage([c["table4"] for c in ds[k]["combination"]]) if r["examples"]]
              for k in keys}
    return Outcome(values, {"sweep": {"rows": rows, "best": best["key"], "coverage_by_point": by_cov,
                                      "regime": regime(rows)}})


def kept_share(g: np.ndarray, s: np.ndarray, b: np.ndarray, draws: int = 2000) -> dict[str, Any]:
    """``(mean b − mean g) / (mean s − mean g)`` over paired seeds (generalist, combination, distilled), its
    bootstrap std over seeds (resamples whose mean gain is not above 0 are skipped), and the per-seed ratios."""
    idx = np.random.default_rng(0).integers(0, len(g), size=(draws, len(g)))
    gain, kept = s[idx].mean(1) - g[idx].mean(1), b[idx].mean(1) - g[idx].mean(1)
    boot = kept[gain > 0] / gain[gain > 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_seed = [float(x) if np.isfinite(x) else None for x in (b - g) / (s - g)]  # None: no gain on that seed
    return {"mean": float((b - g).mean() / (s - g).mean()), "std": float(boot.std(ddof=1)) if len(boot) > 1 else 0.0,
            "n": len(g), "values": per_seed, "estimator": "ratio of means; std: bootstrap over seeds"}


def crossing(rows: list[dict[str, Any]]) -> float | None:
    """The generalist training accuracy at which the mean relative gain crosses 0 going up the sweep (linear
    interpolation between the two points around the last sign change from + to −), or ``None``."""
    pts = sorted(rows, key=lambda r: r["generalist_train_acc"])
    for a, b in zip(pts[::-1][1:], pts[::-1][:-1]):  # from the most accurate down
        if a["rel_gain"] > 0 >= b["rel_gain"]:
            t = a["rel_gain"] / (a["rel_gain"] - b["rel_gain"])
            return a["generalist_train_acc"] + t * (b["generalist_train_acc"] - a["generalist_train_acc"])
    return None


def regime(rows: list[dict[str, Any]]) -> str:
    """One sentence a user can act on, from the rows (see the module docstring)."""
    pays = [r for r in rows if _pays(r)]
    cross = crossing(rows)
    where = (f" The mean gain crosses 0 at a generalist training accuracy of about {100 * cross:.0f}%." if cross
             else "")
    if not pays:
        likely = [r for r in rows if _likely(r)]
        if likely:
            top = max(r["generalist_train_acc"] for r in likely)
            above = [r for r in rows if r["generalist_train_acc"] > top]
            gave = ", ".join(f"{100 * r['rel_gain']:+.1f} ± {100 * r['rel_gain_std']:.1f}%" for r in above)
            seeds = ", ".join(f"{r['seeds_gained']}/{r['n']}" for r in likely)
            rest = f"; above it: {gave}" if above else ""
            return (f"Specialists paid {_span(likely)} relative test accuracy when the generalist's training accuracy "
                    f"was at most {100 * top:.0f}% (mean more than 2 standard errors above 0, gained on {seeds} "
                    f"seeds; but no point gained more than 2 std over seeds){rest}.{where}")
        b = max(rows, key=lambda r: r["rel_gain"])
        return (f"Specialists did not pay at any point of the sweep: no point gained more than 2 standard errors "
                f"over seeds; the best was {100 * b['rel_gain']:+.1f} ± {100 * b['rel_gain_std']:.1f}% relative at a "
                f"generalist training accuracy of {100 * b['generalist_train_acc']:.0f}% ({b['params']:,} "
                f"parameters).{where}")
    top = max(r["generalist_train_acc"] for r in pays)
    above = [r for r in rows if r["generalist_train_acc"] > top]
    gave = ", ".join(f"{100 * r['rel_gain']:+.1f}%" for r in above)
    rest = f"; above it they gave {gave}" if above else ""
    return (f"Specialists paid {_span(pays)} relative test accuracy (each more than 2 std over seeds) when the "
            f"generalist's training accuracy was at most {100 * top:.0f}%{rest}.{where}")


def _span(rows: list[dict[str, Any]]) -> str:
    lo, hi = min(r["rel_gain"] for r in rows), max(r["rel_gain"] for r in rows)
    return f"{100 * lo:+.1f}% to {100 * hi:+.1f}%" if len(rows) > 1 else f"{100 * hi:+.1f}%"


def table(summary: dict[str, Any]) -> str:
    rows = summary.get("capacity_sweep") or []
    out = [[f"w{r['width']} h{r['hidden']}", f"{r['params']:,}", f"{100 * r['generalist_train_acc']:.1f}",
            f"{100 * r['generalist_acc']:.2f} ± {100 * r['generalist_acc_std']:.2f}",
            f"{100 * r['specialists_acc']:.2f} ± {100 * r['specialists_acc_std']:.2f}",
            ("**{}**" if _pays(r) else "{}").format(f"{100 * r['rel_gain']:+.2f} ± {100 * r['rel_gain_std']:.2f} "
                                                    f"(SE {100 * r['rel_gain_sem']:.2f})"),
            f"{r['seeds_gained']}/{r['n']}",
            _acc_gain(r["distilled_back_acc"], r["distilled_back_rel_gain"]) + _chance(r["distilled_at_chance"]),
            _acc_gain(r["consistent_acc"], r["consistent_rel_gain"]) + _chance(r["consistent_at_chance"]),
            f"{r['n_specialists']:.0f}",
            f"{r['mean_coverage']:.2f}", f"{100 * r['share_true_class_in_active']:.1f}", r["n"]] for r in rows]
    return markdown_table(["small_cnn", "params", "generalist train acc (%)", "generalist test (%)",
                           "+ specialists test (%)", "relative gain ± std (SE) (%)", "seeds gained",
                           "distilled back: stored q, test (rel. gain) (%)",
                           "distilled back: consistent, test (rel. gain) (%)", "# specialists", "mean coverage",
                           "true class in an active set (%)", "seeds"], out)


def _chance(n: int) -> str:
    return f" [{n} collapsed]" if n else ""


def _acc_gain(acc: float | None, gain: float | None) -> str:
    return "–" if acc is None else f"{100 * acc:.2f} ({100 * gain:+.2f})"


def coverage_table(summary: dict[str, Any], details: dict[str, Any]) -> str:
    rows = summary.get("coverage_rows") or []
    best = details.get("sweep", {}).get("best", "–")
    body = markdown_table(["# covering", "test examples (all seeds)", "Δ correct", "relative change"],
                          [[r["covering"], f"{r['n_examples']:,}", f"{r['delta_correct']:+,}",
                            "–" if r["rel_change"] is None else f"{100 * r['rel_change']:+.1f}%"] for r in rows])
    return f"At the best point ({best}):\n\n{body}"


def figure(res: Results, rows: list[dict[str, Any]]) -> None:
    """``capacity_sweep.png``: relative gain (mean ± std over seeds) of the combination and of the distilled-back
    network over the generalist (``rows``: ``capacity_sweep``), against the generalist's parameters and its
    training accuracy."""
    if not rows:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, x, label in ((axes[0], [r["params"] for r in rows], "generalist parameters"),
                         (axes[1], [100 * r["generalist_train_acc"] for r in rows], "generalist training accuracy (%)")):
        ax.errorbar(x, [100 * r["rel_gain"] for r in rows], [100 * r["rel_gain_std"] for r in rows], marker="o",
                    capsize=3, label="generalist + specialists")
        for key, style, name in (("distilled_back_rel_gain", "s--", "distilled back (stored q)"),
                                 ("consistent_rel_gain", "^:", "distilled back (consistent)")):
            ax.plot(x, [np.nan if r[key] is None else 100 * r[key] for r in rows], style, label=name)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel(label)
        ax.set_ylabel("relative test-accuracy gain (%)")
    axes[0].set_xscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle("Omniglot (242 classes): when do specialists pay?", fontsize=9)
    fig.tight_layout()
    save_figure(fig, res.path("capacity_sweep.png"))
