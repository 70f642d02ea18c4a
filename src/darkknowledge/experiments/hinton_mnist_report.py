"""The figures and ``report.md`` of ``reproduce hinton-mnist``: the prose is ``templates/hinton_mnist.md`` (one
section per block), the tables are rows as data; every number comes from the summary, the run records (via
``details``), the provenance (commit, training times) or the paper table :data:`~.hinton_mnist_setup.PAPER`.
This module imports nothing of the experiment module (no cycle); the experiment passes its context's parts in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..report import Results, Vs, fmt, markdown_table, paper_table, pyplot, render, save_figure, summarize
from ..report.scalars import duration, num
from .hinton_mnist_recipes import (
    T,
    _optim_text,
    _student_recipes,
    _teacher_recipes,
    candidate_recipes,
    probe_base,
)
from .hinton_mnist_setup import (
    FRACTIONS,
    PAPER,
    STAGES,
    STUDENT_ALTERNATIVES,
    T_LIST,
    WIDTHS,
    Settings,
    mean,
    t_label,
)

__all__ = ["build_report", "write_figures"]


# --------------------------------------------------------------------------- figures


def write_figures(res: Results, details: dict[str, Any]) -> None:
    if "curves" in details.get("temperature", {}):
        save_figure(_figure_temperature(details["temperature"]["curves"]), res.path("temperature.png"), dpi=110)
    if "curves" in details.get("regulariser", {}):
        save_figure(_figure_regulariser(details["regulariser"]["curves"]), res.path("regulariser.png"), dpi=110)


def _figure_temperature(curves: dict[str, dict[str, Any]]) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6))
    for ax, (w, cv) in zip(axes, curves.items()):
        ax.errorbar(T_LIST, cv["test_mean"], yerr=[summarize({"t": v})["t"]["std"] for v in cv["test"]], fmt="o-", capsize=2,
                    label="test errors (of 10,000), mean ± std")
        ax.plot(T_LIST, [v * 2 for v in cv["val_mean"]], "s--", alpha=0.6, label="val errors × 2 (of 5,000), mean")
        ax.set_xscale("log")
        ax.set_xticks(T_LIST)
        ax.set_xticklabels([t_label(t) for t in T_LIST], fontsize=7)
        ax.set_xlabel("temperature T")
        ax.set_title(f"student 784-{w}-{w}-10")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("errors")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _figure_regulariser(curves: dict[str, dict[str, Any]]) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.4 * len(curves), 3.6))
    for ax, (p, cv) in zip(axes, curves.items()):
        for mode, color in (("hard", "tab:red"), ("soft", "tab:blue")):
            x = range(1, len(cv[mode]["train"]) + 1)
            ax.plot(x, cv[mode]["train"], "--", color=color, label=f"{mode}: train")
            ax.plot(x, cv[mode]["test"], "-", color=color, label=f"{mode}: test")
            for e in sorted(set(cv[mode]["selected_epochs"])):
                ax.axvline(e, color=color, lw=0.8, ls=":")
        ax.set_title(f"{p}% of the training set ({cv['hard']['n_train']} images)")
        ax.set_xlabel("epoch (mean over seeds; dotted: selected epochs)")
        lo = min(min(cv[m]["test"]) for m in ("hard", "soft"))
        ax.set_ylim(max(lo - 1, 0), 100.2)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy %")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- report

def block(name: str, **fields: Any) -> str:
    """The section ``name`` of templates/hinton_mnist.md rendered with ``fields`` (the paper's numbers are ``P``)."""
    return render(T[name], P=PAPER, **fields)


def build_report(summary: dict[str, Any], details: dict[str, Any], s: Settings, seeds: Sequence[int],
                 prov: dict[str, Any], exists: Callable[[str], bool]) -> str:
    """``report.md``; ``exists(name)``: whether the figure ``name`` is in the results folder."""
    times = prov["stage_wall_time_s"]
    S = summary.get  # noqa: N806
    lines: list[str] = []
    add = lines.append
    partial = {st: d["seeds"] for st, d in details.items() if len(d.get("seeds", seeds)) < len(seeds)}
    seeds_note = "" if not partial else " **Not every stage has all seeds yet**: " + "; ".join(
        f"{st}: seeds {v}" for st, v in partial.items()) + " (the other seeds' runs had not finished)."
    add(block("header", prov=prov, s=s, mode="quick (subset)" if s.quick else "full", seeds=seeds,
              seeds_note=seeds_note, train_total=duration(sum(times["train"].values())),
              single_seed=duration(times.get("single_seed", 0.0))) + "\n")
    if s.quick:
        add(block("quick", s=s) + "\n")
    _settings_section(add, s, details, times, len(seeds))
    _headline_section(add, S, len(seeds), s)
    _shift_section(add, details)
    _temperature_section(add, S, details, exists)
    _transfer_sections(add, S, details, s)
    _regulariser_section(add, S, details, exists)
    _jitter_section(add, S, details, s)
    add(block("wall_time", table=markdown_table(
        ["stage", "training time (run records)", "this invocation"],
        [[st, duration(times["train"].get(st, 0.0)), duration(times["invocation"].get(st, 0.0))]
         for st in STAGES if st in times["train"]]
        + [["total", duration(sum(times["train"].values())), duration(sum(times["invocation"].values()))]])) + "\n")
    add(block("shortfalls", items="\n".join(f"- {t}" for t in _shortfalls(summary, details, s))) + "\n")
    return "\n".join(lines)


def _settings_section(add, s: Settings, details: dict[str, Any], times: dict[str, Any], n_seeds: int) -> None:
    ta = s.teacher_overrides()
    t5 = details.get("temperature", {}).get("curves", {}).get("800", {}).get("best_T_val_mean")
    t_note = "" if s.transfer_temperature == s.temperature else block(
        "t_note", stage5=f"T = {t_label(t5)}" if t5 is not None else "stage 5 not present",
        differs="" if t5 is None or t5 == s.transfer_temperature else " — DIFFERENT from the T used here")
    t_optim = {"name": s.teacher_optim, "lr": s.teacher_lr, "momentum": 0.9, "nesterov": s.teacher_nesterov,
               "warmup_epochs": s.teacher_warmup, **ta.get("optim", {})}
    add(block("settings", s=s, max_norm=ta.get("model_args", {}).get("max_norm", s.teacher_max_norm),
              teacher_optim=f"{_optim_text(t_optim)}, batch {ta.get('batch_size', s.batch_size)}"
              + (f", {ta['precision']} autocast" if ta.get("precision") else ""),
              teacher_epochs=ta.get("epochs", s.teacher_epochs), headline_t=t_label(_headline_t(s)),
              student_optim=_recipe_optim(s), student_epochs=_recipe_epochs(s), widths=", ".join(map(str, WIDTHS)),
              temperatures=", ".join(map(t_label, T_LIST)), n_seeds=n_seeds, transfer_t=t_label(s.transfer_temperature),
              t_note=t_note, reg_epochs=", ".join(f"{p}%: {e}" for p, e in s.reg_epochs.items())) + "\n")
    _teacher_recipes(add, s, details)
    _student_recipes(add, s, details)


def _headline_t(s: Settings) -> float:
    return STUDENT_ALTERNATIVES[s.student_recipe].get("distill", {}).get("temperature", s.temperature)


def _recipe_optim(s: Settings) -> str:
    o = STUDENT_ALTERNATIVES[s.student_recipe].get("optim", {})
    if not o:
        return "as baseline"
    text = _optim_text({"name": "sgd", "lr": s.student_lr, "momentum": 0.9, "warmup_epochs": s.student_warmup, **o})
    return text + (f", gradient norm clipped at {o['grad_clip']:g}" if o.get("grad_clip") else "") + \
        f", batch {s.batch_size} (recipe `{s.student_recipe}`)"


def _recipe_epochs(s: Settings) -> int:
    return int(STUDENT_ALTERNATIVES[s.student_recipe].get("epochs", s.student_epochs))


def _headline_section(add, S, n_seeds: int, s: Settings) -> None:  # noqa: N803
    ht = t_label(_headline_t(s))
    add(block("headline", table=paper_table(["metric", "paper", "ours (mean ± std (n))"], [
        ("1. teacher test errors (1200-1200, dropout, shifts)", _vs("teacher_errors")),
        ("2. baseline test errors (800-800, labels)", _vs("baseline_errors")),
        (f"3. distilled test errors (800-800, T = {ht}; paper: T = 20)", _vs("distilled_errors")),
        ("3. gap closed (baseline − distilled)/(baseline − teacher)", _vs("gap_closed", 3, 3)),
        ("4. logit matching test errors (800-800)", _vs("logit_matching_errors")),
    ], {k: S(k) for k in ("teacher_errors", "baseline_errors", "distilled_errors", "gap_closed",
                          "logit_matching_errors")})) + "\n")
    if s.targets:
        add(_targets_text(S, s.targets) + "\n")
    b, d = S("baseline_errors"), S("distilled_errors")
    if b and d:
        diff, big = b["mean"] - d["mean"], max(b["std"], d["std"])
        text = block("distilled_vs_baseline", diff=abs(diff), fewer="fewer" if diff >= 0 else "MORE", b=b, d=d)
        if n_seeds > 1:
            text += block("criterion", bound=3 * big, met="met" if diff > 3 * big else "NOT met")
        add(text + "\n")
    lm = S("logit_matching_errors")
    if lm and d:
        add(block("logit_matching", lm=lm, d=d, headline_t=ht) + "\n")


def _vs(key: str, digits: int = 1, paper_digits: int = 0) -> Vs:
    """Ours (``digits``) beside the paper's number of :data:`PAPER` (``paper_digits``; ``–`` when it has none)."""
    return Vs(key, PAPER.get(key), digits=digits, paper_digits=paper_digits)


def _targets_text(S, targets: dict[str, tuple[str, float]]) -> str:  # noqa: N803
    """``Settings.targets`` checked against the summary means: met, or missed by how much."""
    parts = []
    for key, (op, bound) in targets.items():
        e = S(key)
        if op not in ("<=", ">="):
            raise ValueError(f"target {key}: operator must be '<=' or '>=', not {op!r}")
        sym = "≤" if op == "<=" else "≥"
        if not e:
            parts.append(f"`{key}` {sym} {bound:g}: no result")
            continue
        m, digits = e["mean"], 3 if abs(bound) < 10 else 1
        short = m - bound if op == "<=" else bound - m
        parts.append(f"`{key}` {sym} {bound:g}: " + (f"**met** ({m:.{digits}f})" if short <= 0 else
                                                      f"**missed by {short:.{digits}f}** ({m:.{digits}f})"))
    return "**Targets** (`Settings.targets`, means over the seeds): " + "; ".join(parts) + "."


def _shift_section(add, details: dict[str, Any]) -> None:
    """Where the stage-3 student departs from its teacher: unshifted transfer set, shifted, test."""
    sk = details.get("distilled", {}).get("shift_knowledge")
    if not sk:
        return
    sets = (("transfer", "transfer set (55,000 unshifted training images)"),
            ("transfer_shifted", "the same images shifted by up to ±2 px (one fixed random shift each)"),
            ("test", "test set (10,000)"))

    def avg(m: str, k: str, f: str) -> float:
        return sum(x[m][k][f] for x in sk) / len(sk)

    rows = [[label] + [f"{avg(m, k, 'errors'):.0f}" for m in ("teacher", "baseline", "distilled")]
            + [f"{avg(m, k, 'disagree_teacher'):.0f}" for m in ("baseline", "distilled")] for k, label in sets]
    add(block("shift", n=len(sk), table=markdown_table(["images", "teacher errors", "baseline errors", "distilled errors",
                                                         "baseline ≠ teacher", "distilled ≠ teacher"], rows)) + "\n")
    t, b, d = (avg(m, "transfer_shifted", "errors") for m in ("teacher", "baseline", "distilled"))
    tt, bt, dt = (avg(m, "test", "errors") for m in ("teacher", "baseline", "distilled"))
    if b > t and bt > tt:
        add(block("shift_reading", b=b, t=t, d=d, shifted_share=(b - d) / (b - t), test_share=(bt - dt) / (bt - tt),
                  disagree=avg("distilled", "transfer", "disagree_teacher")) + "\n")


def _temperature_section(add, S, details: dict[str, Any], exists: Callable[[str], bool]) -> None:  # noqa: N803
    curves = details.get("temperature", {}).get("curves", {})
    rows = []
    for w in WIDTHS:
        cells = [num((S(f"sweep_{w}_T{t_label(t)}_errors") or {}).get("mean"), 0) for t in T_LIST]
        cv = curves.get(str(w), {})
        rows.append([f"2×{w}"] + cells + [", ".join(t_label(t) for t in cv.get("best_T_per_seed", [])) or "–",
                                          t_label(cv["best_T_val_mean"]) if cv else "–",
                                          t_label(cv["best_T_test_mean"]) if cv else "–"])
    claims = [["≥ 300 units: every T > 8 similar", "yes", _flat_above8(S)]]
    for w in (30, 300, 800):
        claims.append([f"{w} units: best T", PAPER[f"best_T_{w}"], _best_t_text(S, w, curves)])
    add(block("temperature", table=markdown_table(
        ["width"] + [f"T={t_label(t)}" for t in T_LIST]
        + ["best T per seed (val)", "best T (mean val)", "best T (mean test, reference)"], rows),
        claims=markdown_table(["claim", "paper", "ours"], claims)) + "\n")
    if exists("temperature.png"):
        add(block("temperature_figure") + "\n")


def _flat_above8(S) -> str:  # noqa: N803
    parts = []
    for w in (800, 300):
        vals = [(S(f"sweep_{w}_T{t_label(t)}_errors") or {}).get("mean") for t in T_LIST if t > 8]
        if vals and all(v is not None for v in vals):
            parts.append(f"2×{w}: {min(vals):.0f}–{max(vals):.0f} errors for T ∈ "
                         f"{{{', '.join(t_label(t) for t in T_LIST if t > 8)}}}")
    return "; ".join(parts) or "–"


def _best_t_text(S, w: int, curves: dict[str, Any]) -> str:  # noqa: N803
    cv = curves.get(str(w))
    if not cv:
        return "–"
    vm = cv["val_mean"]
    i = T_LIST.index(cv["best_T_val_mean"])
    spread = [max(v) - min(v) for v in cv["val"]]
    close = [t_label(T_LIST[j]) for j in range(len(T_LIST)) if j != i and vm[j] - vm[i] <= spread[i] / 2]
    txt = (f"T = {t_label(cv['best_T_val_mean'])} on mean validation errors ({vm[i]:.1f} of 5,000; per seed "
           f"{', '.join(t_label(t) for t in cv['best_T_per_seed'])})")
    txt += (f"; within half the seed range of it: T = {', '.join(close)}" if close else
            "; no other T within half its seed range")
    return txt


def _transfer_sections(add, S, details: dict[str, Any], s: Settings) -> None:  # noqa: N803
    o = details.get("omit3", {})
    n3 = (o.get("n_test_3s") or [None])[0]
    add(block("omit3", table=markdown_table(["metric", "paper", "ours"], [
        ["test errors, no correction", PAPER["omit3_errors_before"], fmt(S("omit3_errors_before"), 0)],
        [f"errors on the {num(n3)} test 3s, no correction", PAPER["omit3_errors_on3_before"],
         fmt(S("omit3_errors_on3_before"), 0)],
        ["class-3 bias shift (chosen on validation)", "–", fmt(S("omit3_bias_shift"), 1)],
        ["test errors after the validation-chosen shift", "–", fmt(S("omit3_errors_after"), 0)],
        ["errors on test 3s after the validation-chosen shift", "–", fmt(S("omit3_errors_on3_after"), 0)],
        ["class-3 bias shift (tuned on test, as the paper did; mean)", f"+{PAPER['omit3_bias_shift']}",
         num(mean(o.get("test_tuned_shift")), 1)],
        ["test errors after the test-tuned shift (mean)", PAPER["omit3_errors_after"],
         num(mean(o.get("test_tuned_errors")), 1)],
        ["errors on test 3s after the test-tuned shift (mean)", PAPER["omit3_errors_on3_after"],
         num(mean(o.get("test_tuned_errors_on3")), 1)],
    ])) + "\n")
    if o:
        add(block("omit3_reading", o=o, s=s, val_before=num(mean(o["val_errors_before"]), 1),
                  val_after=num(mean(o["val_errors_after"]), 1)) + "\n")
    q = details.get("only78", {})
    add(block("only78", table=markdown_table(["metric", "paper", "ours"], [
        ["test error rate %, no correction", PAPER["only78_error_rate_before"], fmt(S("only78_error_rate_before"), 2)],
        ["7 and 8 bias shift (chosen on validation; mean)", "–", num(mean(q.get("shift")), 1)],
        ["test error rate % after the validation-chosen shift", "–", fmt(S("only78_error_rate_after"), 2)],
        ["7 and 8 bias shift (tuned on test, as the paper did; mean)", PAPER["only78_bias_shift"],
         num(mean(q.get("test_tuned_shift")), 1)],
        ["test error rate % after the test-tuned shift (mean)", PAPER["only78_error_rate_after"],
         num(mean(q.get("test_tuned_error_rate")), 2)],
    ])) + "\n")
    if q:
        add(block("only78_reading", q=q, val_before=mean(q["val_error_rate_before"]),
                  val_after=mean(q["val_error_rate_after"])) + "\n")


def _regulariser_section(add, S, details: dict[str, Any], exists: Callable[[str], bool]) -> None:  # noqa: N803
    rc = details.get("regulariser", {}).get("curves", {})
    rows = []
    for p in FRACTIONS:
        for mode in ("hard", "soft"):
            cv = rc.get(str(p), {}).get(mode, {})
            paper = p == 3
            rows.append([f"{p}% ({cv.get('n_train', '–')} images)", "hard labels" if mode == "hard" else "soft targets",
                         num(PAPER[f"reg3pct_{mode}_train_acc"], 1, "%") if paper else "–",
                         fmt(S(f"reg{p}pct_{mode}_train_acc"), 2),
                         num(PAPER[f"reg3pct_{mode}_test_acc"], 1, "%") if paper else "–",
                         fmt(S(f"reg{p}pct_{mode}_test_acc"), 2),
                         ", ".join(map(str, cv.get("selected_epochs", []))) or "–", num(cv.get("final_train"), 2),
                         num(cv.get("final_test"), 2), num(cv.get("selected_test_nll"), 3),
                         num(cv.get("final_test_nll"), 3)])
    add(block("regulariser", table=markdown_table(
        ["training set", "targets", "paper train acc", "ours train acc % (selected epoch)", "paper test acc",
         "ours test acc % (selected epoch)", "selected epochs", "final-epoch train %", "final-epoch test %",
         "test NLL (selected)", "test NLL (final)"], rows)) + "\n")
    if rc:
        add("\n\n".join(_regulariser_text(p, cv["hard"], cv["soft"]) for p, cv in rc.items()) + "\n")
    if exists("regulariser.png"):
        add(block("regulariser_figure") + "\n")


def _regulariser_text(p: str, h: dict[str, Any], so: dict[str, Any]) -> str:
    """One fraction of stage 8: where each model peaked and ended, and whether the hard-label one overfits."""
    hard = ("hard_overfits" if h["best_test"] - h["final_test"] > 0.3 else
            "hard_nll_overfits" if h["final_test_nll"] > h["selected_test_nll"] * 1.05 else None)
    soft = "soft_converges" if so["best_test"] - so["final_test"] <= 0.3 else "soft_declines"
    return block("regulariser_fraction", p=p, h=h, so=so, hard_reading=block(hard) if hard else "",
                 soft_reading=block(soft))


def _jitter_section(add, S, details: dict[str, Any], s: Settings) -> None:  # noqa: N803
    j = details.get("jitter")
    if not j:
        return
    t5 = details.get("temperature", {}).get("curves", {}).get("800", {}).get("best_T_val_mean")
    pinned = j.get("teacher_recipe", s.teacher_recipe) != s.teacher_recipe
    rows = [("2. baseline (labels, no shifts; stage 2)", _vs("baseline_errors")),
            ("9a. baseline, labels + ±2 px shifts", _vs("baseline_jitter_errors")),
            ("3. distilled, unshifted transfer set (stage 3)", _vs("distilled_errors")),
            ("9b. distilled, shifted transfer set", _vs("distilled_jitter_errors")),
            ("1. teacher", _vs("teacher_errors"))]
    summary = {k: S(k) for k in ("baseline_errors", "baseline_jitter_errors", "distilled_errors",
                                 "distilled_jitter_errors", "teacher_errors", "gap_closed_jitter")}
    if pinned:
        summary["jitter_teachers"] = summarize({"t": j["teacher_errors"]})["t"]
        rows += [(f"9t. the teachers of 9b (recipe `{j['teacher_recipe']}`)", _vs("jitter_teachers"))]
    rows += [(f"9b. gap closed (stage-2 baseline − 9b)/(stage-2 baseline − {'9t' if pinned else 'teacher'})",
              Vs("gap_closed_jitter", PAPER["gap_closed"], digits=3, paper_digits=3))]
    add(block("jitter", j=j, t=t_label(j["temperature"]),
              stage5="T = " + t_label(t5) if t5 is not None else "stage 5 not present",
              differs="" if t5 is None or t5 == j["temperature"] else " — DIFFERENT from the T used here",
              own_teachers=block("jitter_own_teachers", j=j, s=s) if pinned else "",
              table=paper_table(["test errors", "paper", "ours (mean ± std (n))"], rows, summary)) + "\n")
    bj, dj = S("baseline_jitter_errors"), S("distilled_jitter_errors")
    if bj and dj:
        diff, big = bj["mean"] - dj["mean"], max(bj["std"], dj["std"])
        add(block("jitter_reading", j=j, diff=abs(diff), fewer="fewer" if diff >= 0 else "MORE", bound=3 * big,
                  beyond="beyond" if diff > 3 * big else "NOT beyond") + "\n")


def _shortfalls(summary: dict[str, Any], details: dict[str, Any], s: Settings) -> list[str]:
    S = summary.get  # noqa: N806
    out = [block("short_quick")] if s.quick else []

    def gap(key: str) -> tuple[float, float] | None:
        e = S(key)
        return (e["mean"], PAPER[key]) if e and isinstance(PAPER.get(key), (int, float)) else None

    t, bl, dd, g = gap("teacher_errors"), gap("baseline_errors"), gap("distilled_errors"), gap("gap_closed")
    te = s.teacher_overrides().get("epochs", s.teacher_epochs)
    if t and t[0] > t[1]:
        out.append(block("short_teacher", t=t, excess=t[0] - t[1], epochs=te, examples=te * 55))
    if bl and bl[0] > bl[1]:
        out.append(block("short_baseline_worse", bl=bl, excess=bl[0] - bl[1]))
    elif bl and bl[0] < bl[1]:
        out.append(block("short_baseline_better", bl=bl))
    if dd and dd[0] > dd[1] and t and g:
        out.append(block("short_distilled", dd=dd, t=t, g=g, excess=dd[0] - dd[1]))
    dj, bj, gj = S("distilled_jitter_errors"), S("baseline_jitter_errors"), S("gap_closed_jitter")
    if dd and dj and gj:
        out.append(block("short_jitter", dj=dj, gj=gj, dd=dd, control=block("short_jitter_control", bj=bj) if bj else ""))
    recipes = details.get("distilled", {}).get("recipes") or {}
    if g and g[0] < g[1]:
        late = details.get("distilled", {}).get("late_val_improvement")
        if late is not None:
            probes = "".join(block("short_gap_probe", k=k, v=v, s=s, at_budget=v["val_curve"][s.student_epochs - 1],
                                   best=min(v["val_curve"])) for k, v in recipes.items()
                             if v["epochs"] > s.student_epochs and probe_base(k) == s.student_recipe)
            out.append(block("short_gap", g=g, s=s, late=late, probes=probes,
                             reading="longer student training might still help" if late < -1 else
                             "they had converged: more student epochs would not close the gap"))
        cands = candidate_recipes(s, recipes)
        if len(cands) > 1:
            out.append(block("short_recipes", s=s, tried=", ".join(f"`{k}` {v:.1f}" for k, v in cands.items()),
                             span=max(cands.values()) - min(cands.values())))
    o_after, o3 = S("omit3_errors_after"), S("omit3_errors_on3_after")
    o = details.get("omit3", {})
    if o_after and o3 and (o_after["mean"] > PAPER["omit3_errors_after"] or o3["mean"] > PAPER["omit3_errors_on3_after"]):
        out.append(block("short_omit3", o_after=o_after, o3=o3, shift=S("omit3_bias_shift")["mean"],
                         tuned_shift=num(mean(o.get("test_tuned_shift")), 1),
                         tuned_errors=num(mean(o.get("test_tuned_errors")), 1),
                         tuned_on3=num(mean(o.get("test_tuned_errors_on3")), 1)))
    q_after = S("only78_error_rate_after")
    if q_after and q_after["mean"] > PAPER["only78_error_rate_after"]:
        out.append(block("short_only78", q_after=q_after,
                         tuned_rate=num(mean(details.get("only78", {}).get("test_tuned_error_rate")), 2)))
    c30 = details.get("temperature", {}).get("curves", {}).get("30")
    if c30 and not 2.5 <= c30["best_T_val_mean"] <= 4:
        out.append(block("short_temperature", best_t=t_label(c30["best_T_val_mean"])))
    rc = details.get("regulariser", {}).get("curves", {}).get("3", {})
    if rc:
        h, so = rc["hard"], rc["soft"]
        if h["best_test"] - h["final_test"] <= 0.3:
            out.append(block("short_reg_no_collapse", h=h))
        if so["final_test"] <= h["best_test"]:
            out.append(block("short_reg_soft_no_better", h=h, so=so))
    if not out:
        out.append(block("short_none"))
    out.append(block("short_speech"))
    return out
