"""``darkknowledge reproduce subclass-ablation``: MNIST-2x5 without the auxiliary loss (β = 0).

The spec (§11) asks to ablate β = 0 to check subclass collapse; reading notes of the paper (§9,
uncertain) say that without the auxiliary loss the teacher recovers the true subclasses much less
well. Same settings as ``subclass-mnist-2x5``, except β = 0 for the teacher: its loss is then the
plain class cross-entropy on the logsumexp-grouped class logits, so nothing pushes it to use more
than one subclass per class. For each seed: the β = 0 teacher, and a subclass-distilled student
from it. The β = 1 teachers and subclass students of ``subclass-mnist-2x5`` (reused from
``<results>/subclass-mnist-2x5/runs/`` when present, else trained there) are the comparison.

Summary keys: ``noaux_teacher_subclass_recovery``, ``noaux_subclass_acc`` (+ usage, NMI, teacher
accuracy, the student's recovery, and the ``aux_*`` counterparts with β = 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report import markdown_table, write_report, write_summary
from . import register_experiment
from .runner import Stage, finished_record
from .subclass_common import (
    cached_subclass_eval,
    chance_levels,
    fmt_pm,
    mnist_teacher_dir,
    open_mnist_experiment,
    pct,
    plt,
    run_student,
    student_cfgs,
    usage_figure,
    write_provenance,
)
from .subclass_mnist_2x5 import claim_text, mnist_teacher

NAME = "subclass-ablation"
STAGES = ("teacher", "students")
SUMMARY_KEYS = ("noaux_teacher_subclass_recovery", "noaux_subclass_acc")

__all__ = ["run", "NAME", "SUMMARY_KEYS"]


@register_experiment(NAME)
def run(out: str | Path = f"results/{NAME}", data_dir: str | None = None, quick: bool = False, seeds: int = 3,
        only: str | None = None, progress: bool = True) -> dict[str, Any]:
    o = open_mnist_experiment(out, data_dir, quick, seeds, only, STAGES)
    t0, out, runs, st, splits, fine, seed_list = o.t0, o.out, o.runs, o.st, o.splits, o.fine, o.seeds
    aux_runs = mnist_teacher_dir(out, quick)
    times: dict[str, float] = {}
    values: dict[str, list[float]] = {}
    teachers: dict[tuple[str, int], Path] = {}
    evs: dict[str, dict[int, dict[str, Any]]] = {}
    with Stage("teacher", times):
        for s in seed_list:
            for tag, beta, where in (("noaux", 0.0, runs), ("aux", st.beta, aux_runs)):
                rec, path, ev = mnist_teacher(st, where, s, splits, fine, beta=beta, progress=progress)
                teachers[tag, s] = path
                evs.setdefault(f"{tag}_teacher", {})[s] = ev
                values.setdefault(f"{tag}_teacher_acc", []).append(pct(rec["final"]["test"]["accuracy"]))
                values.setdefault(f"{tag}_teacher_subclass_recovery", []).append(pct(ev["recovery"]))
                values.setdefault(f"{tag}_teacher_nmi", []).append(ev["nmi"])
                values.setdefault(f"{tag}_teacher_subclasses_used", []).append(ev["num_used"])
                values.setdefault(f"{tag}_teacher_usage_entropy", []).append(ev["usage_entropy"])
    if only != "teacher":
        with Stage("students", times):
            for s in seed_list:
                for tag, where, suffix in (("noaux", runs, "_beta0"), ("aux", aux_runs, "")):
                    cfg = student_cfgs(st, where, teachers[tag, s], s, suffix=suffix, which=("subclass",))["subclass"]
                    run_student(cfg, splits, progress)
                    ev = cached_subclass_eval(cfg, splits, fine, progress)
                    rec = finished_record(cfg)
                    evs.setdefault(f"{tag}_student", {})[s] = ev
                    values.setdefault(f"{tag}_subclass_acc", []).append(pct(rec["final"]["test"]["accuracy"]))
                    values.setdefault(f"{tag}_student_subclass_recovery", []).append(pct(ev["recovery"]))
    chance = chance_levels(fine.test)
    values["chance_subclass_recovery"] = [pct(chance["class_aware"])]
    values["chance_subclass_recovery_blind"] = [pct(chance["blind"])]
    order = [k for k in SUMMARY_KEYS if k in values] + sorted(k for k in values if k not in SUMMARY_KEYS)
    summary = write_summary(out, {k: values[k] for k in order})
    if only == "teacher":
        return summary
    _figure(out, evs, seed_list[0])
    prov = write_provenance(out, NAME, quick, seed_list, t0, times, {"aux_runs": str(aux_runs)})
    _report(out, summary, values, chance, quick, seed_list, prov, evs)
    return summary


def _figure(out: Path, evs: dict[str, dict[int, dict[str, Any]]], seed: int) -> None:
    import numpy as np

    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(9, 4))
    for ax, tag, title in ((axes[0], "aux", "β = 1 (with L_aux)"), (axes[1], "noaux", "β = 0 (no L_aux)")):
        ev = evs[f"{tag}_teacher"][seed]
        c = np.asarray(ev["contingency"], dtype=float)
        ax.imshow(c / max(c.max(), 1), cmap="Blues", vmin=0, vmax=1)
        ax.set_xlabel("true digit")
        ax.set_ylabel("predicted subclass")
        ax.set_xticks(range(c.shape[1]))
        ax.set_yticks(range(c.shape[0]))
        ax.set_title(f"teacher {title}\nrecovery {100 * ev['recovery']:.1f}%, {ev['num_used']} subclasses used")
    fig.suptitle("Test images per (predicted subclass, digit), first seed")
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=120)
    pyplot.close(fig)
    usage_figure(out / "usage.png", [("teacher β = 1", evs["aux_teacher"][seed]),
                                      ("teacher β = 0", evs["noaux_teacher"][seed]),
                                      ("student of β = 0 teacher", evs["noaux_student"][seed])],
                 "Subclass usage on the test set, with and without L_aux (first seed)")


def _report(out, summary, values, chance, quick, seeds, prov, evs) -> None:
    rows = []
    for label, key in (("teacher binary test accuracy %", "teacher_acc"),
                       ("teacher subclass recovery % (global matching)", "teacher_subclass_recovery"),
                       ("teacher NMI with digit", "teacher_nmi"),
                       ("teacher subclasses used (≥1% of test)", "teacher_subclasses_used"),
                       ("teacher normalised usage entropy per class", "teacher_usage_entropy"),
                       ("subclass student binary test accuracy %", "subclass_acc"),
                       ("subclass student subclass recovery %", "student_subclass_recovery")):
        d = 3 if "NMI" in label or "entropy" in label else 2
        rows.append([label, fmt_pm(summary[f"aux_{key}"], d), fmt_pm(summary[f"noaux_{key}"], d)])
    table = markdown_table(["", "β = 1 (subclass-mnist-2x5)", "β = 0 (no auxiliary loss)"], rows)
    c_rec = claim_text("β = 1", "β = 0", values["aux_teacher_subclass_recovery"],
                       values["noaux_teacher_subclass_recovery"])
    c_acc = claim_text("the student of the β = 1 teacher", "the student of the β = 0 teacher",
                       values["aux_subclass_acc"], values["noaux_subclass_acc"])
    drop = summary["aux_teacher_subclass_recovery"]["mean"] > summary["noaux_teacher_subclass_recovery"]["mean"]
    quick_note = ("\n> **QUICK MODE** (CI smoke test): 6k training images, 2 epochs, 2k val/test images. "
                  "These numbers say nothing about the method.\n" if quick else "")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in prov["stage_wall_time_s"].items())
    text = f"""# Ablation: subclass distillation without the auxiliary loss (`darkknowledge reproduce {NAME}`)
{quick_note}
MNIST-2x5 exactly as in `subclass-mnist-2x5`, but the teacher is trained with β = 0 (plain class
cross-entropy on the logsumexp-grouped logits), then a subclass student (α = 0.5, T = 4) is distilled
from it. Mean ± std over {len(seeds)} seeds:

{table}

Chance levels for the recovery: {pct(chance['class_aware']):.2f} % (knows the class, guesses one of its 5
subclasses), {pct(chance['blind']):.2f} % (guesses among all 10), {pct(chance['majority']):.2f} % (one constant
subclass per class).

**Claim (paper, via reading notes, uncertain): without the auxiliary loss the teacher recovers the true
subclasses much less well.** {"It holds" if drop else "It does NOT hold"} in our runs: {c_rec} (recovery).
For the students: {c_acc} (binary accuracy).

![ablation](ablation.png)

![subclass usage histogram](usage.png)

Seeds {seeds}; wall time {prov['wall_time_s']:.0f} s (stages: {stages}).
  Training time recorded in this experiment's own runs: {prov['run_wall_time_total_s'] / 60:.1f} min in total
  (per run in `provenance.json`; the wall time above is this invocation's, which reuses cached runs).
Commit {prov['git_commit']}. Runs: `{"runs-quick" if quick else "runs"}/*/run.json`; β = 1 runs: `{prov['aux_runs']}`.
"""
    write_report(out, text)
