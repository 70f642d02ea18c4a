"""``darkknowledge reproduce hinton-specialists --quick``: the whole pipeline end to end on CIFAR-10 and Omniglot,
summary numbers recomputed from the run records and from the weights, a rerun that re-renders without training
(also without any weights, as in a fresh clone), and the Omniglot loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from darkknowledge.config import TrainConfig
from darkknowledge.experiments import get_experiment
from darkknowledge.experiments.hinton_specialists import PAPER, SUMMARY_SUFFIXES, settings_for, summary_keys
from darkknowledge.experiments.hinton_specialists_jobs import data_splits
from darkknowledge.experiments.hinton_specialists_sweep import SWEEP_KEYS
from darkknowledge.specialists import SpecialistCombination

DATA = os.environ.get("DARKKNOWLEDGE_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
HAVE_OMNIGLOT = (Path(DATA) / "omniglot-small" / "images_background_small1.zip").exists()
HAVE_CIFAR = (Path(DATA) / "cifar10-jpeg" / "cifar10_jpeg_q75.tar.gz").exists()


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    if not (HAVE_OMNIGLOT and HAVE_CIFAR):
        pytest.skip("CIFAR-10 JPEG or Omniglot files not found")
    out = tmp_path_factory.mktemp("specialists") / "hinton-specialists"
    summary = get_experiment("hinton-specialists")(out=out, data_dir=DATA, quick=True, progress=False,
                                                   pool={"workers": 2})
    return out, summary


def check_sweep(out: Path, summary: dict, details: dict) -> None:
    """The capacity sweep's summary recomputed from the run records (test accuracies), the parameter counts of
    the generalists' weights shapes in their configs, and the combination's Table 4 (no weights needed)."""
    points = [d for d in details["settings"]["data"] if d.get("role") == "sweep"]
    if not points:
        assert not set(SWEEP_KEYS) & set(summary)
        return
    rows = {(r["width"], r["hidden"]): r for r in summary["capacity_sweep"]}
    assert len(rows) == len(points) and [r["params"] for r in summary["capacity_sweep"]] == sorted(
        r["params"] for r in summary["capacity_sweep"])
    best = None
    for p in points:
        a = p["model_args"]
        row, d = rows[(a["width"], a["hidden"])], details["datasets"][p["key"]]
        w, h, c = a["width"], a["hidden"], len(d["class_names"])
        # conv(1→w, 3×3), conv(w→2w, 3×3), FC(2w·5·5 → h), FC(h → C), with biases: by hand, not by the model
        assert row["params"] == (9 * w + w) + (9 * w * 2 * w + 2 * w) + (50 * w * h + h) + (h * c + c)
        g, sp, b, c, tr = [], [], [], [], []
        for seed in range(row["n"]):
            run = out / "runs" / p["key"] / f"seed{seed}"
            g.append(json.loads((run / "generalist" / "run.json").read_text())["final"]["test"]["accuracy"])
            sp.append(d["combination"][seed]["specialists_acc"])
            t = d["distilled"]["best_T"]
            b.append(json.loads((run / f"distilled_T{t:g}" / "run.json").read_text())["final"]["test"]["accuracy"])
            crec = json.loads((run / f"distilled_T{t:g}_consistent" / "run.json").read_text())
            c.append(crec["final"]["test"]["accuracy"])
            # the consistent student differs from the other in its name and folder alone: same recipe, seed, data
            brec = json.loads((run / f"distilled_T{t:g}" / "run.json").read_text())["config"]
            assert {k: v for k, v in crec["config"].items() if k not in ("name", "out_dir")} == {
                k: v for k, v in brec.items() if k not in ("name", "out_dir")}
            tr.append(d["clusters"][seed]["train_acc"])
        g, sp, b, c = np.array(g), np.array(sp), np.array(b), np.array(c)
        rel = (sp - g) / g
        assert row["generalist_acc"] == pytest.approx(g.mean(), abs=1e-6)
        assert row["rel_gain"] == pytest.approx(rel.mean(), abs=1e-6)
        assert row["rel_gain_std"] == pytest.approx(rel.std(ddof=1) if len(rel) > 1 else 0.0, abs=1e-6)
        assert row["generalist_train_acc"] == pytest.approx(np.mean(tr)) and 0 < row["generalist_train_acc"] <= 1
        assert row["distilled_back_acc"] == pytest.approx(b.mean(), abs=1e-6)
        assert row["consistent_acc"] == pytest.approx(c.mean(), abs=1e-6)
        lower = rel.mean() - 2 * (rel.std(ddof=1) / np.sqrt(len(rel)) if len(rel) > 1 else 0.0)
        if best is None or lower > best[0]:  # the surest gain: mean − 2 standard errors
            best = (lower, p["key"], rel, g, sp, b, c)
    _, key, rel, g, sp, b, c = best
    assert details["sweep"]["best"] == key
    assert summary["best_rel_gain"]["values"] == pytest.approx(list(rel), abs=1e-6)
    n_test = sum(r["n_test"] for r in details["datasets"][key]["combination"])
    cov = summary["coverage_rows"]
    assert sum(r["n_examples"] for r in cov) == n_test
    assert sum(r["delta_correct"] for r in cov) == round(float((sp - g).sum()) * n_test / len(g))
    if (sp - g).mean() > 0:
        for key, x in (("distilled_back_keeps", b), ("distilled_back_keeps_consistent", c)):
            assert summary[key]["mean"] == pytest.approx((x.mean() - g.mean()) / (sp.mean() - g.mean()), abs=1e-5)
            assert summary[key]["n"] == len(g)
    else:
        assert not {"distilled_back_keeps", "distilled_back_keeps_consistent"} & set(summary)


def check_results(out: Path, summary: dict) -> None:
    """Summary, details, records and report of a finished run agree (needs no weights)."""
    details = json.loads((out / "details.json").read_text())
    s = details["settings"]
    main = {d["key"] for d in s["data"] if d.get("role", "main") == "main"}
    assert set(summary) - {"solver_speedup"} - set(SWEEP_KEYS) == {f"{k}_{m}" for k in main for m in SUMMARY_SUFFIXES}
    from darkknowledge.data import list_datasets

    check_sweep(out, summary, details)
    for key, d in details["datasets"].items():
        if key not in main:
            continue
        def m(k, key=key):
            return summary[f"{key}_{k}"]["mean"]

        for k in ("generalist_acc", "specialists_acc", "generalist_cond_acc", "specialists_cond_acc",
                  "distilled_back_acc"):
            assert 0.0 <= m(k) <= 1.0
        assert summary[f"{key}_generalist_acc"]["n"] == s["seeds"]
        rel = [(b - a) / a for a, b in zip(summary[f"{key}_generalist_acc"]["values"],
                                           summary[f"{key}_specialists_acc"]["values"])]
        assert summary[f"{key}_rel_gain"]["values"] == pytest.approx(rel)
        for seed in range(s["seeds"]):
            run = out / "runs" / key / f"seed{seed}"
            gen = json.loads((run / "generalist" / "run.json").read_text())
            comb = d["combination"][seed]
            sets = d["clusters"][seed]["sets"]
            # our own evaluation of the generalist is the engine's
            assert comb["generalist_acc"] == pytest.approx(gen["final"]["test"]["accuracy"], abs=1e-6)
            assert summary[f"{key}_n_specialists"]["values"][seed] == len(sets) == len(comb["specialists"])
            # Table 4 rows add up to the test set and to the change in accuracy
            assert sum(r["examples"] for r in comb["table4"]) == comb["n_test"] == gen["dataset"]["test"]
            delta = sum(r["delta_correct"] for r in comb["table4"])
            assert delta == comb["fixed"] - comb["broken"]
            assert delta == round((comb["specialists_acc"] - comb["generalist_acc"]) * comb["n_test"])
            for m_, _cl in enumerate(sets):
                rec = json.loads((run / f"specialist{m_}" / "run.json").read_text())
                assert rec["config"]["epochs"] == d["settings"]["spec_epochs"]
                assert rec["dataset"]["test"] == gen["dataset"]["test"]
                assert rec["dataset"]["name"] in list_datasets()
            # the distilled student at the chosen T is the summary's, and the engine's evaluation of its teacher
            # (the live Eq. 5 combination) on the test set is the specialists' accuracy
            t = d["distilled"]["best_T"]
            drec = json.loads((run / f"distilled_T{t:g}" / "run.json").read_text())
            assert summary[f"{key}_distilled_back_acc"]["values"][seed] == pytest.approx(
                drec["final"]["test"]["accuracy"], abs=1e-12)
            assert drec["final"]["teacher_test"]["accuracy"] == pytest.approx(comb["specialists_acc"], abs=1e-6)
            assert TrainConfig.model_validate(drec["config"]).method_args["temperature"] == t  # records of either form
        # T chosen on seed 0's validation accuracy
        vals = {float(t): r["val_acc"] for t, r in d["distilled"]["by_T_seed0"].items()}
        assert d["distilled"]["best_T"] == max(vals, key=lambda t: (vals[t], -t))
    report = (out / "report.md").read_text()
    assert f"{100 * PAPER['specialists_acc']:.1f}%" in report and "Table 4 analogue" in report
    assert "airplane" in report and "Balinese/character" in report  # Table 2 analogue with class names
    for f in ("gain_by_coverage.png", "covariance_cifar10.png", "covariance_omniglot.png"):
        assert (out / f).stat().st_size > 1000
    assert json.loads((out / "provenance.json").read_text())["seeds"] == list(range(s["seeds"]))


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_quick_summary_is_consistent_with_its_records(quick):
    out, summary = quick
    check_results(out, summary)
    optional = {"solver_speedup", "distilled_back_keeps", "distilled_back_keeps_consistent"}
    assert set(summary) - optional == set(summary_keys(settings_for(True))) | {
        "capacity_sweep", "best_rel_gain", "coverage_rows"}
    details = json.loads((out / "details.json").read_text())
    from safetensors.torch import load_file

    for key, d in details["datasets"].items():
        run = out / "runs" / key / "seed0"
        gen = json.loads((run / "generalist" / "run.json").read_text())
        # each specialist trained on its 50/50 data: every special example once and as many others
        y_train = data_splits(gen["config"]["data"]).train.y
        for m_, cl in enumerate(d["clusters"][0]["sets"]):
            rec = json.loads((run / f"specialist{m_}" / "run.json").read_text())
            assert rec["dataset"]["train"] == 2 * int(torch.isin(y_train, torch.tensor(cl)).sum())
        # the stored q of the training set: one distribution per training example
        log_q = load_file(str(run / "combination" / "q_train.safetensors"))["log_q"]
        assert log_q.shape == (gen["dataset"]["train"], len(d["class_names"]))
        assert torch.allclose(log_q.double().exp().sum(1), torch.ones(log_q.shape[0], dtype=torch.float64), atol=1e-4)


def test_committed_results_match_their_records():
    """The same checks on the committed full results (records and evaluation caches; no weights needed)."""
    res = Path(__file__).resolve().parents[1] / "results" / "hinton-specialists"
    if not (res / "summary.json").exists():
        pytest.skip("no committed hinton-specialists results")
    check_results(res, json.loads((res / "summary.json").read_text()))


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_combination_recomputed_from_the_weights(quick):
    """Generalist + specialists rebuilt from their files (through the experiment's configs and the job kinds'
    loaders) and combined live reproduce the summary's accuracy."""
    out, summary = quick
    from darkknowledge.engine.stages import Context
    from darkknowledge.experiments.hinton_specialists_jobs import load_generalist, load_specialist
    from darkknowledge.experiments.hinton_specialists_runs import generalist, specialist_jobs

    details = json.loads((out / "details.json").read_text())
    ctx = Context("hinton-specialists", out, DATA, settings_for(True), [0], details=details)
    d = settings_for(True).data[1]  # omniglot: small
    dd = details["datasets"][d.key]
    comb, sets = dd["combination"][0], dd["clusters"][0]["sets"]
    gen_cfg = generalist(ctx, d, 0)
    gen = load_generalist(gen_cfg)
    jobs = specialist_jobs(ctx, d, 0)
    assert [j.kind for j in jobs] == ["specialist"] * len(sets)
    specs = [load_specialist(gen, j.config, cl, sh) for j, cl, sh in zip(jobs, sets, comb["shifts"])]
    teacher = SpecialistCombination(gen, specs, sets)
    splits = data_splits(gen_cfg["data"])
    q = teacher.combined(splits.test.x)
    assert q.sum(1).allclose(torch.ones(len(q), dtype=q.dtype), atol=1e-9)
    acc = float((q.argmax(1) == splits.test.y).double().mean())
    assert acc == pytest.approx(summary["omniglot_specialists_acc"]["mean"], abs=1e-12)


def _no_training(monkeypatch):
    import darkknowledge.engine.jobs as jobs

    def boom(*a, **k):
        raise AssertionError("a finished suite must re-render without training")

    monkeypatch.setattr(jobs, "train", boom)


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_rerun_reuses_every_run(quick, monkeypatch):
    out, summary = quick
    _no_training(monkeypatch)
    again = get_experiment("hinton-specialists")(out=out, data_dir=DATA, quick=True, progress=False)
    assert again == summary


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_rerun_without_weights(quick, monkeypatch):
    """A fresh clone holds the records and evaluations, never weights or tables: the report still re-renders.
    (Deletes the weights of the shared quick run: keep this the last test that uses it.)"""
    out, summary = quick
    for p in list(out.rglob("*.safetensors")) + list(out.rglob("checkpoint.pt")):
        p.unlink()
    _no_training(monkeypatch)
    again = get_experiment("hinton-specialists")(out=out, data_dir=DATA, quick=True, progress=False)
    assert again == summary


@pytest.mark.skipif(not HAVE_OMNIGLOT, reason="Omniglot zips not found")
def test_omniglot_split_by_drawer():
    from darkknowledge.data import load_dataset
    from darkknowledge.data.omniglot import _paths, omniglot_class_names, read_omniglot

    s = load_dataset("omniglot", DATA)
    assert s.num_classes == 242 and (len(s.train), len(s.val), len(s.test)) == (3146, 484, 1210)
    assert s.train.x.shape[1:] == (1, 28, 28) and s.train.x.dtype == torch.float32
    assert 0.0 <= float(s.train.x.min()) and float(s.train.x.max()) <= 1.0
    assert 0.02 < float(s.train.x.mean()) < 0.2  # ink = 1 on a 0 background
    for part, n in (("train", 13), ("val", 2), ("test", 5)):
        assert torch.bincount(getattr(s, part).y, minlength=242).tolist() == [n] * 242
    names = omniglot_class_names(DATA)
    assert len(names) == 242 and names == sorted(names) and names[0] == "Balinese/character01"
    assert len({n.split("/")[0] for n in names}) == 8
    _, _, drawers, _ = read_omniglot(_paths(DATA, False))
    assert np.bincount(drawers).tolist() == [0] + [242] * 20  # Greek and Latin counted once
