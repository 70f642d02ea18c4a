"""``darkknowledge reproduce consistent-teaching``: the fair control (the labels-only and the consistent student
differ only in the teacher), and the quick pipeline end to end with every summary number recomputed from its
records and an independent evaluation of the ensemble."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from darkknowledge.engine.stages import Context
from darkknowledge.experiments import get_experiment
from darkknowledge.experiments.consistent_teaching import (
    BENCHMARKS,
    FORMS,
    SUMMARY_KEYS,
    distilled,
    labels,
    members,
    settings_for,
)


@pytest.mark.parametrize("quick", [True, False])
def test_the_labels_control_and_the_consistent_student_differ_only_in_the_teacher(tmp_path, quick):
    s = settings_for(quick)
    ctx = Context("consistent-teaching", tmp_path, None, s, list(range(s.seeds)), quick)
    for b in BENCHMARKS:
        n = s.benches[b].lengths[-1]
        for f in FORMS:
            lab, dis = labels(ctx, b, n, 0), distilled(ctx, b, f, n, 0)
            assert dis["data"]["augment"] and dis["data"] == lab["data"]  # same data, same augmentation
            same = {k for k in lab if k not in ("out_dir", "name")}
            assert {k: lab[k] for k in same} == {k: dis[k] for k in same}
            assert set(dis) - set(lab) == {"distill", "method", "method_args"}
            assert dis["method_args"] == FORMS[f] and dis["distill"].get("cache") in (None, False)
            # the student has a member's size; the teachers are the members' validation-selected weights
            assert dis["distill"]["teachers"] == [str(Path(m["out_dir"]) / "best.safetensors")
                                                  for m in members(ctx, b)]
            if b != "mnist":
                assert members(ctx, b)[0]["model"] == dis["model"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    data_dir = os.environ.get("DARKKNOWLEDGE_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
    for f in ("fsdd/fsdd.npz", "mnist", "cifar10-jpeg"):
        if not (Path(data_dir) / f).exists():
            pytest.skip(f"{f} not found in {data_dir}")
    out = tmp_path_factory.mktemp("ct") / "consistent-teaching"
    summary = get_experiment("consistent-teaching")(out=out, data_dir=data_dir, quick=True, progress=False,
                                                    pool={"workers": 2})
    return out, data_dir, summary


def _ensemble_test_acc(out: Path, b: str, data_dir: str) -> float:
    """Independently of the engine: the members' softmax averaged with numpy, argmax against the test labels."""
    from darkknowledge.config import validate
    from darkknowledge.engine import prepare_data
    from darkknowledge.models import load_model

    runs = sorted((out / "runs" / b / "members").iterdir())
    cfg = json.loads((runs[0] / "run.json").read_text())["config"]
    test = prepare_data(validate(cfg).data).test
    probs = []
    for r in runs:
        m = load_model(str(r / "best.safetensors")).eval()
        with torch.no_grad():
            probs.append(torch.softmax(m(test.x).double(), 1).numpy())
    return float((np.mean(probs, 0).argmax(1) == test.y.numpy()).mean())


@pytest.mark.slow  # end-to-end tier: the quick reproduction (about two minutes)
def test_quick_summary_is_consistent_with_its_records(quick):
    out, data_dir, summary = quick
    assert list(summary) == SUMMARY_KEYS
    details = json.loads((out / "details.json").read_text())
    for b in BENCHMARKS:
        lab, dis, t = (summary[f"{b}_{k}_acc"] for k in ("labels", "distilled", "teacher"))
        gain = [(d - lab["mean"]) / (t["mean"] - lab["mean"]) for d in dis["values"]]
        assert summary[f"{b}_gain_kept"]["values"] == pytest.approx(gain)
        assert t["values"][0] == pytest.approx(_ensemble_test_acc(out, b, data_dir), abs=2e-4), b
        if b != "speech_heldout":  # the form is the validation argmax at the short length
            f = details["forms"][b]
            assert f["chosen"] == max(FORMS, key=lambda k: (np.mean(f["val_acc"][k]), k == "function_matching"))
    # the defaults grid: mean rank over the benchmarks, recomputed
    rows = details["defaults"]
    for r in rows:
        ranks = [1 + sum(o["val_acc"][b] > r["val_acc"][b] for o in rows)
                 + 0.5 * sum(o["val_acc"][b] == r["val_acc"][b] and o is not r for o in rows) for b in r["val_acc"]]
        assert r["mean_rank"] == pytest.approx(np.mean(ranks))
    n = details["benchmarks"]["mnist"]["n_test"]
    assert summary["mnist_teacher_errors"]["values"][0] == round((1 - summary["mnist_teacher_acc"]["mean"]) * n)
    report = (out / "report.md").read_text()
    for heading in ("Headline: labels / 2015 protocol / consistent", "Gain kept against training length",
                    "What consistent teaching costs"):
        assert heading in report
    assert (out / "gain_kept_vs_length.png").stat().st_size > 1000


@pytest.mark.slow  # end-to-end tier
def test_rerun_reuses_every_run(quick, monkeypatch):
    out, data_dir, summary = quick
    import darkknowledge.engine.jobs as jobs

    def boom(*a, **k):
        raise AssertionError("a finished experiment must re-render without training")

    monkeypatch.setattr(jobs, "train", boom)
    assert get_experiment("consistent-teaching")(out=out, data_dir=data_dir, quick=True, progress=False) == summary


def test_kds_defaults_are_the_best_setting_of_the_committed_grid():
    """kd's default (T, hard weight) — of the config and of dk.distill — is the committed grid's best mean rank."""
    import inspect

    import darkknowledge as dk
    from darkknowledge.config import KDArgs

    path = Path(__file__).resolve().parents[1] / "results" / "consistent-teaching" / "details.json"
    rows = json.loads(path.read_text())["defaults"]
    best = min(rows, key=lambda r: (r["mean_rank"], r["temperature"], r["w_hard"]))
    assert (KDArgs().temperature, KDArgs().w_hard) == (best["temperature"], best["w_hard"])
    sig = inspect.signature(dk.distill).parameters
    assert (sig["temperature"].default, sig["w_hard"].default) == (best["temperature"], best["w_hard"])
