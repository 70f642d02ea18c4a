"""The report and figure of :mod:`.consistent_teaching`. Every number comes from the summary or ``details``;
the prose is ``templates/consistent_teaching.md``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..report import Results, SummaryView, markdown_table, pyplot, render, save_figure
from ..report.numbers import fmt, summarize
from ..report.sections import template_sections

__all__ = ["report", "figures", "AIM"]

AIM = 0.86  # the paper's speech figure: (60.8 − 58.9) / (61.1 − 58.9)
NAMES = {"mnist": "MNIST", "speech": "FSDD frames (official split)", "speech_heldout": "FSDD frames (held-out speakers)",
         "cifar10": "CIFAR-10"}


def _t() -> dict[str, str]:
    return template_sections("darkknowledge.experiments", "templates/consistent_teaching.md")


def _entry(v: list[float]) -> dict[str, Any]:
    return summarize({"v": v})["v"]


def _acc(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _model(m: dict[str, Any]) -> str:
    a = m["args"]
    if m["name"] == "mlp":
        return f"MLP {a['in_features']}-" + "-".join(str(h) for h in a["hidden"]) + (
            f", dropout {a['dropout']:g}" if a.get("dropout") else "")
    return m["name"] + "(" + ", ".join(f"{k}={v}" for k, v in a.items()) + ")"


def _aug(aug: list[dict[str, Any]]) -> str:
    return ", ".join(d["name"] + "(" + ", ".join(f"{k} {v}" for k, v in d.items() if k != "name") + ")" for d in aug)


def _settings_table(settings: Any) -> str:
    rows = []
    for b, x in settings.benches.items():
        teacher = f"{x.members} × " if x.members > 1 else ""
        opt = x.optim
        rows.append((NAMES[b], f"{teacher}{_model(x.teacher_model)}, {x.member_epochs} epochs", _model(x.student_model),
                     _aug(x.augment), f"{opt['name'].upper()} lr {opt['lr']:g}, cosine, warm-up {opt['warmup_epochs']:g}"
                     f" ep, clip {opt.get('grad_clip')}, batch {x.batch_size}", " / ".join(str(n) for n in x.lengths)))
    return markdown_table(["benchmark", "teacher", "student", "augmentation (all runs)", "students' optimiser",
                           "student epochs"], rows)


def _main_table(summary: dict[str, Any], details: dict[str, Any]) -> str:
    old = details.get("protocol_2015", {})
    rows = []
    for b in details["benchmarks"]:
        o = old.get(b)
        if o is None:
            o15 = ["–"] * 4
        elif o["unit"] == "errors":
            o15 = [f"{o['teacher']:.0f} err", f"{o['labels']:.0f} err", f"{o['distilled']:.0f} err",
                   f"{o['gain_kept']:.2f}"]
        else:
            o15 = [_acc(o["teacher"]), _acc(o["labels"]), _acc(o["distilled"]),
                   "–" if o["gain_kept"] is None else f"{o['gain_kept']:.2f}"]
        ours = [fmt(summary.get(f"{b}_{k}_acc"), 2, 100.0) for k in ("teacher", "labels", "distilled")]
        if b == "mnist":
            ours = [f"{fmt(summary.get(f'mnist_{k}_errors'), 1)} err" for k in ("teacher", "labels", "distilled")]
        rows.append((NAMES[b], *o15, *ours, f"**{fmt(summary.get(f'{b}_gain_kept'), 2)}**"))
    return markdown_table(["benchmark", "2015: teacher", "2015: labels", "2015: distilled", "2015: gain kept",
                           "teacher", "labels + aug (control)", "consistent", "gain kept"], rows)


def _verdicts(summary: dict[str, Any], details: dict[str, Any]) -> str:
    out = []
    for b, d in details["benchmarks"].items():
        g = summary.get(f"{b}_gain_kept")
        if g is None:
            continue
        t, lab = summary[f"{b}_teacher_acc"]["mean"], summary[f"{b}_labels_acc"]["mean"]
        gap = 100 * (t - lab)
        side = "above" if gap > 0 else "below"
        line = (f"- **{NAMES[b]}**: the ensemble is {abs(gap):.2f} points {side} the labels-only control; the "
                f"consistent student ({d['form'].replace('_', ' ')}) keeps {g['mean']:.2f} ± {g['std']:.2f} of it")
        if gap <= 0:
            line += " — the teacher is not ahead of the control, so there is no gain to keep."
        elif g["mean"] >= AIM:
            line += f" — at or above the aim of {AIM:.2f}."
        else:
            line += f" — short of the aim of {AIM:.2f} by {AIM - g['mean']:.2f}"
            line += (" (the teacher's lead over the control is within about one std of the control, so the ratio is "
                     "dominated by noise)." if gap <= 100 * summary[f"{b}_labels_acc"]["std"] else ".")
        out.append(line)
    return "\n".join(out)


def _forms_table(details: dict[str, Any]) -> str:
    rows = []
    for b, f in details["forms"].items():
        if "val_acc" not in f:
            rows.append((NAMES[b], "–", "–", f"{f['chosen'].replace('_', ' ')} (from {f['from']})"))
            continue
        cells = [fmt(_entry(f["val_acc"][k]), 2, 100.0) for k in ("function_matching", "hinton")]
        rows.append((NAMES[b], *cells, f["chosen"].replace("_", " ")))
    return markdown_table(["benchmark", "function matching (T = 1), val acc %", "Hinton form (T = 2, hard 0.5), val acc %",
                           "chosen"], rows)


def _curve_table(details: dict[str, Any]) -> str:
    rows = []
    for b, d in details["benchmarks"].items():
        for n, c in d["curve"].items():
            rows.append((NAMES[b], n, fmt(_entry(c["labels_acc"]), 2, 100.0), fmt(_entry(c["distilled_acc"]), 2, 100.0),
                         fmt(_entry(c["gain_kept"]), 2)))
    return markdown_table(["benchmark", "student epochs", "labels + aug %", "consistent %", "gain kept"], rows)


def _more_training(details: dict[str, Any]) -> str:
    out = []
    for b, d in details["benchmarks"].items():
        if len(d["curve"]) < 2:
            continue
        (n0, c0), (n1, c1) = list(d["curve"].items())[:2]
        dl = 100 * (np.mean(c1["labels_acc"]) - np.mean(c0["labels_acc"]))
        dd = 100 * (np.mean(c1["distilled_acc"]) - np.mean(c0["distilled_acc"]))
        line = (f"- {NAMES[b]}: from {n0} to {n1} epochs the labels-only control gained {dl:+.2f} points, the "
                f"consistent student {dd:+.2f}")
        gains = [f"{float(np.mean(c['gain_kept'])):.2f}" if d["teacher_acc"] > np.mean(c["labels_acc"]) else
                 "undefined (the teacher is not ahead of the control)" for c in (c0, c1)]
        out.append(line + f"; gain kept {gains[0]} at {n0} epochs, {gains[1]} at {n1}.")
    return ("**What more training would give.** Two lengths per benchmark:\n\n" + "\n".join(out) + "\n\nWhere the "
            "labels-only control gains more from the longer schedule than the consistent student, the curve points "
            "away from the aim at this scale: distillation speeds up the first epochs, and the control catches up.")


def _cost_table(details: dict[str, Any]) -> str:
    rows = []
    for b, d in details["benchmarks"].items():
        n, c = list(d["curve"].items())[-1]
        ls, ds = float(np.mean(c["labels_s"])), float(np.mean(c["distilled_s"]))
        rows.append((NAMES[b], n, f"{ls:.0f}", f"{ds:.0f}", f"{ds / ls:.2f}×", f"{np.mean(d['member_s']):.0f}"))
    return markdown_table(["benchmark", "epochs", "labels-only run (s)", "consistent run (s)", "ratio",
                           "one teacher / member (s)"], rows) + (
        "\n\nWall times of runs made two at a time, beside other work on the same two cores: the ratios are rough "
        "(a ratio below 1 is load, not speed). `benchmarks/throughput.py` measures the clean same-process ratio of a "
        "live-teacher step to a labels-only step (`results/benchmarks/throughput.json`).")


def _defaults_table(details: dict[str, Any]) -> str:
    rows = details["defaults"]
    names = list(rows[0]["val_acc"])
    return markdown_table(["T", "hard weight", *(NAMES[b] for b in names), "mean rank"],
                          [(f"{r['temperature']:g}", f"{r['w_hard']:g}", *(f"{100 * r['val_acc'][b]:.2f}" for b in names),
                            f"{r['mean_rank']:.2f}") for r in rows])


def _defaults_verdict(details: dict[str, Any]) -> str:
    from ..config import KDArgs

    rows = details["defaults"]
    best = min(rows, key=lambda r: (r["mean_rank"], r["temperature"], r["w_hard"]))
    lib = KDArgs()
    agree = (lib.temperature, lib.w_hard) == (best["temperature"], best["w_hard"])
    return (f"Best mean rank: T = {best['temperature']:g}, hard weight {best['w_hard']:g}. The library's kd default "
            f"(`KDArgs`, and `dk.distill`) is T = {lib.temperature:g}, hard weight {lib.w_hard:g}"
            + (" — the same." if agree else " — not the best here."))


def report(settings: Any, summary: dict[str, Any], details: dict[str, Any], prov: dict[str, Any]) -> str:
    T = _t()
    train_min = sum(float(np.sum(c["labels_s"]) + np.sum(c["distilled_s"])) + 0.0
                    for d in details.get("benchmarks", {}).values() for c in d["curve"].values()) / 60 + sum(
        float(np.sum(d["member_s"])) for d in details.get("benchmarks", {}).values()) / 60
    head = render(T["header"], prov=prov, mode="quick" if settings.quick else "full",
                  seeds=", ".join(str(100 + k) for k in prov.get("seeds", [])), train_min=train_min)
    parts = [head] + ([T["quick"]] if settings.quick else [])
    parts.append(render(T["settings"], settings_table=_settings_table(settings)))
    if "benchmarks" in details:
        S = SummaryView(summary)
        parts += [render(T["headline"], S=S, main_table=_main_table(summary, details),
                         verdicts=_verdicts(summary, details)),
                  render(T["forms"], forms_table=_forms_table(details)),
                  render(T["curve"], curve_table=_curve_table(details), more_training=_more_training(details)),
                  render(T["cost"], cost_table=_cost_table(details))]
    if "defaults" in details:
        parts.append(render(T["defaults"], defaults_table=_defaults_table(details),
                            defaults_verdict=_defaults_verdict(details)))
    return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"


def figures(res: Results, details: dict[str, Any]) -> None:
    """Gain kept (mean ± std over seeds) against the students' training length, one line per benchmark."""
    if "benchmarks" not in details:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for b, d in details["benchmarks"].items():
        ns = [int(n) for n in d["curve"]]
        g = [d["curve"][str(n)]["gain_kept"] for n in ns]
        m = [float(np.mean(v)) for v in g]
        s = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in g]
        if all(math.isfinite(x) for x in m):
            ax.errorbar(ns, m, yerr=s, marker="o", capsize=3, label=NAMES[b])
    ax.axhline(AIM, color="grey", ls="--", lw=1, label=f"aim {AIM}")
    ax.axhline(1.0, color="black", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("student epochs")
    ax.set_ylabel("gain kept")
    ax.legend(fontsize=7)
    save_figure(fig, res.path("gain_kept_vs_length.png"))
