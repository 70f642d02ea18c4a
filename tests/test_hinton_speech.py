"""``darkknowledge reproduce hinton-speech --quick``: the whole pipeline end to end on FSDD, every summary number
recomputed from the run records and evaluations, and a rerun that re-renders without training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from darkknowledge.experiments import get_experiment
from darkknowledge.experiments.hinton_speech import PAPER, SUMMARY_KEYS, speech_eval


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    import os

    data_dir = os.environ.get("DARKKNOWLEDGE_DATA") or str(data)
    if not (Path(data_dir) / "fsdd" / "fsdd.npz").exists():
        pytest.skip("FSDD not found")
    out = tmp_path_factory.mktemp("speech") / "hinton-speech"
    summary = get_experiment("hinton-speech")(out=out, data_dir=data_dir, quick=True, progress=False,
                                              pool={"workers": 2})
    return out, data_dir, summary


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_quick_summary_is_consistent_with_its_records(quick):
    out, data_dir, summary = quick
    assert set(summary) <= set(SUMMARY_KEYS) and set(SUMMARY_KEYS) - set(summary) <= {"wer_gain_kept"}
    details = json.loads((out / "details.json").read_text())
    m = lambda k: summary[k]["mean"]  # noqa: E731
    # gain kept, recomputed from the other entries
    g = [(d - m("baseline_frame_acc")) / (m("ensemble_frame_acc") - m("baseline_frame_acc"))
         for d in summary["distilled_frame_acc"]["values"]]
    assert summary["gain_kept"]["values"] == pytest.approx(g)
    # best T is the validation argmax over T
    val = {float(t): np.mean(r["val_frame_acc"]) for t, r in details["temperature"].items()}
    assert m("best_T") == max(val, key=lambda t: (val[t], -t))
    for k in summary:
        if k.endswith(("_frame_acc", "_wer")):
            assert all(0.0 <= x <= 1.0 for x in summary[k]["values"]), k
    # the engine's test accuracy of member 0 is the frame accuracy the speech evaluation computes
    rec = json.loads((out / "runs" / "members" / "member0" / "run.json").read_text())
    ev = speech_eval([str(out / "runs" / "members" / "member0" / "best.safetensors")], "official", data_dir)
    assert ev["test"]["frame_acc"] == pytest.approx(rec["final"]["test"]["accuracy"], abs=1e-6)
    assert summary["baseline_frame_acc"]["values"][0] == pytest.approx(ev["test"]["frame_acc"], abs=1e-12)
    # the 3% runs really train on 3% of the recordings
    hard = json.loads((out / "runs" / "reg3pct" / "hard_seed0" / "run.json").read_text())
    from darkknowledge.experiments.hinton_speech import frame_splits

    assert hard["dataset"]["train"] < 0.05 * len(frame_splits("official", data_dir).train)
    report = (out / "report.md").read_text()
    assert f"{100 * PAPER['ensemble_frame_acc']:.1f}%" in report and "Table 5 analogue" in report
    for f in ("frame_accuracy_vs_T.png", "reg3pct_curves.png", "posteriors.png"):
        assert (out / f).stat().st_size > 1000


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_rerun_reuses_every_run(quick, monkeypatch):
    out, data_dir, summary = quick
    import darkknowledge.engine.jobs as jobs

    def boom(*a, **k):
        raise AssertionError("a finished suite must re-render without training")

    monkeypatch.setattr(jobs, "train", boom)
    again = get_experiment("hinton-speech")(out=out, data_dir=data_dir, quick=True, progress=False)
    assert again == summary


@pytest.mark.parametrize("combine", ["arithmetic", "geometric"])
def test_ensemble_log_probs_against_numpy(combine):
    """``Teacher.log_probs`` (the frame posteriors the WER is decoded from) against the §2 formulas in float64:
    arithmetic log mean_m softmax(v_m), geometric log softmax(mean_m v_m); normalised either way."""
    import torch

    from darkknowledge.teachers import Ensemble

    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(5, 4) * 20  # large logits: the naive log of a mean of softmaxes would underflow
    v = np.stack([m(x).detach().double().numpy() for m in models], 1)  # [N, M, C]

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    if combine == "arithmetic":
        ls = log_softmax(v)
        top = ls.max(1, keepdims=True)
        want = (top + np.log(np.exp(ls - top).mean(1, keepdims=True)))[:, 0]
    else:
        want = log_softmax(v.mean(1))
    got = Ensemble(models, combine).log_probs(x).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.exp(got).sum(1), 1.0, atol=1e-5)
