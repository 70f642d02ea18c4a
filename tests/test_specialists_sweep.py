"""The capacity sweep's arithmetic (:mod:`darkknowledge.experiments.hinton_specialists_sweep`) on made-up
results: rows, the best point, Table 4 pooled, the share kept by the distilled network, the crossing and the regime
sentence, each against a formula written out here."""

from __future__ import annotations

import numpy as np
import pytest

from darkknowledge.engine.stages import Context
from darkknowledge.experiments.hinton_specialists import settings_for
from darkknowledge.experiments.hinton_specialists_sweep import crossing, params, regime, sweep


def _t4(n1, b1, w1, n2, b2, w2):
    return [{"covering": 1, "label": "1", "examples": n1, "base_correct": b1, "new_correct": w1,
             "delta_correct": w1 - b1, "relative_change": (w1 - b1) / b1},
            {"covering": 2, "label": "2", "examples": n2, "base_correct": b2, "new_correct": w2,
             "delta_correct": w2 - b2, "relative_change": (w2 - b2) / b2}]


def _point(width, hidden, gen, spec, dist, train, cons=None):
    n = 100
    comb = [{"generalist_acc": g, "specialists_acc": s, "rel_gain": (s - g) / g, "mean_coverage": 1.5,
             "share_true_class_in_active": 0.9, "n_test": n,
             "table4": _t4(60, round(60 * g), round(60 * s), 40, round(40 * g), round(40 * g) + round(100 * (s - g))
                           - (round(60 * s) - round(60 * g)))} for g, s in zip(gen, spec)]
    return {"settings": {"role": "sweep", "model_args": {"in_channels": 1, "image_size": 28, "dropout": 0.1,
                                                         "width": width, "hidden": hidden}},
            "class_names": [str(i) for i in range(242)],
            "clusters": [{"train_acc": t, "sets": [[0, 1]] * 16} for t in train], "combination": comb,
            "distilled": {"best_T": 2.0, "seeds": [{"test_acc": b} for b in dist],
                          "consistent": [{"test_acc": b} for b in (cons or dist)]}}


def _ctx(points):
    s = settings_for(True)
    sw = s.sweep()
    ds = {d.key: p for d, p in zip(sw, points)}
    return Context("hinton-specialists", None, None, s, [0, 1, 2], details={"datasets": ds}), [d.key for d in sw]


def test_params_by_hand():
    # conv 1→w, conv w→2w (3×3, biases), FC 2w·5·5→h, FC h→C
    for w, h, c in ((2, 32, 242), (32, 128, 10)):
        assert params({"in_channels": 1, "image_size": 28, "width": w, "hidden": h}, c) == (
            10 * w + 18 * w * w + 2 * w + 50 * w * h + h + h * c + c)


def test_sweep_rows_best_point_and_kept_share():
    small = _point(4, 32, [0.50, 0.52, 0.51], [0.55, 0.56, 0.57], [0.53, 0.55, 0.54], [0.6, 0.62, 0.61],
                   [0.56, 0.56, 0.50])
    big = _point(8, 64, [0.70, 0.71, 0.72], [0.70, 0.70, 0.73], [0.71, 0.71, 0.71], [0.9, 0.91, 0.92])
    ctx, keys = _ctx([big, small])  # the order of the settings: rows are sorted by parameters anyway
    out = sweep(ctx, None)
    rows = out.values["capacity_sweep"]
    assert [r["width"] for r in rows] == [4, 8]
    g, s = np.array([0.50, 0.52, 0.51]), np.array([0.55, 0.56, 0.57])
    assert rows[0]["rel_gain"] == pytest.approx(np.mean((s - g) / g))
    assert rows[0]["rel_gain_std"] == pytest.approx(np.std((s - g) / g, ddof=1))
    assert rows[0]["generalist_train_acc"] == pytest.approx(0.61)
    assert out.details["sweep"]["best"] == keys[1]
    assert out.values["best_rel_gain"] == pytest.approx(list((s - g) / g))
    b = np.array([0.53, 0.55, 0.54])
    kept = out.values["distilled_back_keeps"]
    assert kept["mean"] == pytest.approx((b.mean() - g.mean()) / (s.mean() - g.mean()))
    assert kept["values"] == pytest.approx(list((b - g) / (s - g))) and kept["n"] == 3 and kept["std"] > 0
    c = np.array([0.56, 0.56, 0.50])
    assert out.values["distilled_back_keeps_consistent"]["mean"] == pytest.approx(
        (c.mean() - g.mean()) / (s.mean() - g.mean()))
    assert rows[0]["consistent_rel_gain"] == pytest.approx(np.mean((c - g) / g))
    cov = out.values["coverage_rows"]
    assert [r["covering"] for r in cov] == [1, 2] and sum(r["n_examples"] for r in cov) == 300
    assert sum(r["delta_correct"] for r in cov) == round(100 * float((s - g).sum()))
    assert "paid" in out.details["sweep"]["regime"] and "at most 61%" in out.details["sweep"]["regime"]


def test_best_point_is_the_surest_gain_not_the_largest_mean():
    steady = _point(4, 32, [0.50, 0.52, 0.51], [0.53, 0.55, 0.54], [0.5] * 3, [0.6] * 3)  # +6% ± 0.1%
    noisy = _point(2, 32, [0.30, 0.30, 0.30], [0.30, 0.30, 0.36], [0.3] * 3, [0.4] * 3)  # +6.7% ± 11.5%
    ctx, keys = _ctx([noisy, steady])
    out = sweep(ctx, None)
    assert out.details["sweep"]["best"] == keys[1]
    assert max(out.values["capacity_sweep"], key=lambda r: r["rel_gain"])["width"] == 2


def test_kept_share_is_a_ratio_of_means_and_undefined_without_a_mean_gain():
    p = _point(4, 32, [0.50, 0.52, 0.51], [0.55, 0.52, 0.57], [0.53, 0.55, 0.54], [0.6, 0.62, 0.61])
    ctx, _ = _ctx([p])
    kept = sweep(ctx, None).values["distilled_back_keeps"]  # one seed gained nothing: its own ratio is undefined
    assert kept["values"][1] is None and kept["mean"] == pytest.approx((0.54 - 0.51) / (0.5466666666666667 - 0.51))
    p = _point(4, 32, [0.50, 0.52, 0.51], [0.49, 0.52, 0.51], [0.53, 0.55, 0.54], [0.6, 0.62, 0.61])
    ctx, _ = _ctx([p])
    assert not {"distilled_back_keeps", "distilled_back_keeps_consistent"} & set(sweep(ctx, None).values)


def test_crossing_and_regime_sentences():
    def row(acc, gain, std, params, gained=3):
        return {"generalist_train_acc": acc, "rel_gain": gain, "rel_gain_std": std, "rel_gain_sem": std / 3 ** 0.5,
                "n": 3, "params": params, "seeds_gained": gained}

    rows = [row(0.4, 0.10, 0.01, 1000), row(0.6, 0.02, 0.02, 2000, 2), row(0.9, -0.02, 0.01, 4000, 0)]
    assert crossing(rows) == pytest.approx(0.6 + 0.5 * 0.3)  # halfway between +0.02 and −0.02
    text = regime(rows)
    assert "paid +10.0% relative" in text and "at most 40%" in text and "+2.0%, -2.0%" in text and "75%" in text
    # no point above 2 std, two above 2 standard errors (std / √3): the sentence says so and names their seeds
    se_only = [dict(r, rel_gain_std=r["rel_gain_std"] * 6, rel_gain_sem=r["rel_gain_sem"] * 2) for r in rows]
    se_only[1]["rel_gain_sem"] = 0.009
    text = regime(se_only)
    assert "+2.0% to +10.0%" in text and "at most 60%" in text and "gained on 3/3, 2/3 seeds" in text
    assert "no point gained more than 2 std" in text and "-2.0 ± 6.0%" in text
    none = [dict(r, rel_gain_std=1.0, rel_gain_sem=1.0) for r in rows]
    assert regime(none).startswith("Specialists did not pay") and "+10.0 ± 100.0%" in regime(none)
