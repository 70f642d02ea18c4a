"""``darkknowledge demo``: teacher, label-trained student and distilled student, then a table.

MNIST when its files are found (``--data-dir`` / ``DARKKNOWLEDGE_DATA``, or a download), otherwise
scikit-learn's bundled 8×8 digits. A small version of Hinton et al. (2015) §3 and §6: a
dropout-regularised 1200-1200 teacher trained on every training image with ±2 px shifts, then two
unregularised 800-800 students on the same 20% transfer set (unshifted) — one from the labels, one
distilled at ``T = 20`` with a small hard-label term. About 2–3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..data import DatasetNotFoundError, load_dataset
from ..report import fmt, markdown_table, provenance, write_report, write_summary
from ..utils import atomic_write_json
from . import register_experiment
from .runner import run_cached

TRANSFER_FRACTION = 0.2  # the students' share of the training split


def demo_configs(dataset: str, out: Path, seed: int, quick: bool, data_dir: str | None) -> dict[str, dict[str, Any]]:
    """The three runs' configs (plain dicts validated by :class:`~darkknowledge.config.TrainConfig`).

    The teacher trains on the whole training split (bar validation) with shifted inputs; both students
    train on the same seeded 20% of it, the transfer set, without shifts.
    """
    mnist = dataset == "mnist"
    t_epochs, s_epochs = ((3, 8) if quick else (12, 30)) if mnist else ((10, 20) if quick else (40, 60))
    data = {"dataset": dataset, "data_dir": data_dir, "val_size": 5000 if mnist else 200}
    big, small = ([1200, 1200], [800, 800]) if mnist else ([256, 256], [64, 64])
    inf = 784 if mnist else 64
    teacher = {"name": "teacher", "seed": seed, "epochs": t_epochs, "batch_size": 128, "out_dir": str(out / "teacher"),
               "model": {"name": "mlp", "args": {"in_features": inf, "hidden": big, "dropout": 0.5,
                                                 "input_dropout": 0.2, "max_norm": 15.0}},
               "data": {**data, "augment_shift": 2 if mnist else 1},
               "optim": {"name": "adam", "lr": 1e-3, "schedule": "cosine"}}
    baseline = {"name": "baseline", "seed": seed, "epochs": s_epochs, "batch_size": 128,
                "out_dir": str(out / "baseline"), "model": {"name": "mlp", "args": {"in_features": inf, "hidden": small}},
                "data": {**data, "fraction": TRANSFER_FRACTION},
                "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine"}}
    distilled = {**baseline, "name": "distilled", "out_dir": str(out / "distilled"),
                 "distill": {"teachers": [str(out / "teacher" / "best.safetensors")], "temperature": 20.0,
                             "w_soft": 1.0, "w_hard": 0.1}}
    return {"teacher": teacher, "baseline": baseline, "distilled": distilled}


def pick_dataset(data_dir: str | None) -> str:
    try:
        load_dataset("mnist", data_dir)
        return "mnist"
    except DatasetNotFoundError as e:
        print(f"MNIST not available ({str(e).splitlines()[0]}); using scikit-learn's 8x8 digits instead")
        return "digits"


@register_experiment("demo")
def run_demo(out: str | Path = "results/demo", data_dir: str | None = None, quick: bool = False, seed: int = 0,
             progress: bool = True, dataset: str | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = Path(out)
    dataset = dataset or pick_dataset(data_dir)
    cfgs = demo_configs(dataset, out / "runs", seed, quick, data_dir)
    recs = {k: run_cached(c, progress=progress) for k, c in cfgs.items()}

    teacher_test = recs["distilled"]["final"]["teacher_test"]
    rows, values = [], {}
    for key, test in (("teacher", teacher_test), ("baseline", recs["baseline"]["final"]["test"]),
                      ("distilled", recs["distilled"]["final"]["test"])):
        agree = test.get("agreement", 1.0 if key == "teacher" else None)
        if key == "baseline":  # agreement of the label-trained student with the same teacher
            agree = None
        rows.append([key, test["errors"], f"{100 * test['accuracy']:.2f}", f"{test['nll']:.4f}",
                     f"{test['ece']:.4f}", "–" if agree is None else f"{100 * agree:.2f}"])
        for m in ("errors", "accuracy", "nll", "ece", "brier"):
            values[f"{key}_{m}"] = [test[m]]
    values["distilled_agreement"] = [recs["distilled"]["final"]["test"]["agreement"]]
    values["distilled_kl_teacher_student"] = [recs["distilled"]["final"]["test"]["kl_teacher_student"]]
    wall = time.perf_counter() - t0
    run_wall = sum(r["wall_time_s"] for r in recs.values())
    run_cpu = sum(r.get("cpu_time_s", float("nan")) for r in recs.values())
    summary = write_summary(out, values)
    prov = provenance(f"darkknowledge demo{' --quick' if quick else ''}", wall, [seed])
    prov.update({"runs_wall_time_s": run_wall, "runs_cpu_time_s": run_cpu})
    atomic_write_json(out / "provenance.json", prov)
    n_test = teacher_test["n"]
    table = markdown_table(["model", f"test errors (of {n_test})", "accuracy %", "NLL", "ECE (15 bins)",
                            "agreement with teacher %"], rows)
    ahead = summary["distilled_errors"]["mean"] < summary["baseline_errors"]["mean"]
    n_transfer = recs["baseline"]["dataset"]["train"]
    setup = (f"Teacher: {recs['teacher']['dataset']['train']} training images with random shifts; both students: "
             f"the same {n_transfer}-image transfer set ({TRANSFER_FRACTION:.0%} of the training split), no shifts.")
    text = (f"# darkknowledge demo ({dataset})\n\n{setup}\n\n{table}\n\n"
            f"Distilled student {'ahead of' if ahead else 'NOT ahead of'} the label-trained one. "
            f"One seed ({seed}); epochs chosen on the validation split; test set used only for this table.\n\n"
            f"Configs: `runs/*/run.json`. Training wall time {run_wall:.0f} s, process CPU time {run_cpu:.0f} s "
            f"(all {prov['machine']['torch_threads']} threads; both grow when other work shares the "
            f"{prov['machine']['cpu_count']} cores — load average at the end: "
            f"{', '.join(f'{v:.1f}' for v in prov['machine']['load_average'] or [])}). "
            f"Commit {prov['git_commit']}. Machine: {prov['machine']['cpu']}.\n")
    write_report(out, text)
    print("\n" + setup + "\n\n" + table + "\n")
    print(f"Distilled student {'ahead of' if ahead else 'NOT ahead of'} the label-trained one "
          f"({summary['distilled_errors']['mean']:.0f} vs {summary['baseline_errors']['mean']:.0f} test errors). "
          f"Results in {out}/ (wall time {wall:.0f} s; training CPU time {run_cpu:.0f} s).")
    return summary


__all__ = ["run_demo", "demo_configs", "fmt"]
