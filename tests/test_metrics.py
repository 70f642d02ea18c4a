"""Classification and agreement metrics on hand-made examples with known values.

ECE = sum_b (|B_b| / n) |acc(B_b) - conf(B_b)| over equal-width confidence bins;
Brier = mean over cases of sum_c (p_c - y_c)^2; KL(teacher || student) at T = 1.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from darkknowledge.metrics import (
    agreement_metrics,
    classification_metrics,
    evaluate,
    expected_calibration_error,
    predict_logits,
)

torch.set_num_threads(1)


def _probs_with_confidence(conf: float, labels_pred: list[int], c: int = 4) -> torch.Tensor:
    """Rows whose top class is ``labels_pred[i]`` with probability ``conf``; the rest spread evenly."""
    p = torch.full((len(labels_pred), c), (1 - conf) / (c - 1), dtype=torch.float64)
    p[torch.arange(len(labels_pred)), torch.tensor(labels_pred)] = conf
    return p


def test_ece_perfectly_calibrated_is_zero():
    """10 predictions at confidence 0.7 of which exactly 7 are right: acc = conf in the only bin, ECE = 0.
    (Confidences are kept away from the bin edges k/15 so float32 rounding cannot split them.)"""
    pred = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    p = _probs_with_confidence(0.7, pred)
    labels = torch.tensor(pred)
    labels[3], labels[7], labels[9] = 0, 0, 0  # three wrong
    assert expected_calibration_error(p, labels) == pytest.approx(0.0, abs=1e-12)
    # through logits (float32 inside): still ~0
    m = classification_metrics(p.log(), labels)
    assert m["ece"] == pytest.approx(0.0, abs=1e-6)
    assert m["accuracy"] == pytest.approx(0.7)


def test_ece_overconfident_known_value():
    """All at confidence 0.9 but only half right: ECE = |0.5 - 0.9| = 0.4. Adding an equally large calibrated
    group (confidence 0.65, 65% right) in another bin halves it: 0.5 * 0.4 + 0.5 * 0 = 0.2."""
    pred = list(range(4)) * 5  # 20 cases
    p = _probs_with_confidence(0.9, pred)
    labels = torch.tensor(pred)
    labels[:10] = (labels[:10] + 1) % 4  # 10 wrong
    assert expected_calibration_error(p, labels) == pytest.approx(0.4, abs=1e-12)

    p2 = _probs_with_confidence(0.65, pred)
    labels2 = torch.tensor(pred)
    labels2[:7] = (labels2[:7] + 1) % 4  # 13/20 = 65% right
    ece = expected_calibration_error(torch.cat([p, p2]), torch.cat([labels, labels2]))
    assert ece == pytest.approx(0.2, abs=1e-12)


def test_ece_bins_are_weighted_by_size():
    """Two bins of different sizes: 3 cases at conf 0.95 all wrong (gap 0.95), 1 case at conf 0.55 right
    (gap 0.45): ECE = 3/4 * 0.95 + 1/4 * 0.45."""
    p = torch.cat([_probs_with_confidence(0.95, [0, 0, 0]), _probs_with_confidence(0.55, [1])])
    labels = torch.tensor([1, 2, 3, 1])
    assert expected_calibration_error(p, labels) == pytest.approx(0.75 * 0.95 + 0.25 * 0.45, abs=1e-12)


def test_brier_known_values():
    """Brier of a (numerically) one-hot correct prediction is 0, of a one-hot wrong one is 2, and of the
    uniform distribution is (1 - 1/C)^2 + (C - 1)/C^2 = 1 - 1/C."""
    c = 5
    labels = torch.tensor([0, 3, 4])
    onehot_logits = 200.0 * F.one_hot(labels, c).float()
    assert classification_metrics(onehot_logits, labels)["brier"] == pytest.approx(0.0, abs=1e-12)
    assert classification_metrics(onehot_logits, (labels + 1) % c)["brier"] == pytest.approx(2.0, abs=1e-6)
    uniform = torch.zeros(3, c)
    assert classification_metrics(uniform, labels)["brier"] == pytest.approx(1 - 1 / c, abs=1e-6)


def test_errors_accuracy_nll_on_hand_example():
    """4 cases, 3 classes: predictions 0, 1, 2, 0 against labels 0, 1, 1, 2 -> 2 errors, accuracy 0.5;
    NLL is the mean of -log softmax at the labels."""
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.5, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    m = classification_metrics(logits, labels)
    assert m["errors"] == 2 and m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    log_p = logits.double().log_softmax(1)
    nll = -float(log_p[torch.arange(4), labels].mean())
    assert m["nll"] == pytest.approx(nll, rel=1e-6)
    # case 0 by hand: -log(e^2 / (e^2 + 2))
    assert float(-log_p[0, 0]) == pytest.approx(-math.log(math.e**2 / (math.e**2 + 2)), rel=1e-12)
    with pytest.raises(ValueError):
        classification_metrics(logits, labels[:3])


def test_agreement_and_kl():
    """Identical logits: agreement 1 and KL(teacher || student) = 0. A hand case: KL of softmax([0, 0]) from
    softmax([log 3, 0]) = sum p log(p/q) with p = (1/2, 1/2), q = (3/4, 1/4)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 6, generator=g)
    a = agreement_metrics(z, z.clone())
    assert a["agreement"] == 1.0
    assert a["kl_teacher_student"] == pytest.approx(0.0, abs=1e-7)
    # shifting every logit of a case by a constant changes nothing
    a = agreement_metrics(z + 5.0, z)
    assert a["agreement"] == 1.0 and a["kl_teacher_student"] == pytest.approx(0.0, abs=1e-6)
    s = torch.tensor([[math.log(3.0), 0.0]])
    t = torch.tensor([[0.0, 0.0]])
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    a = agreement_metrics(s, t)
    assert a["kl_teacher_student"] == pytest.approx(kl, rel=1e-5)
    # disagreement counted on the argmax
    s2 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    t2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert agreement_metrics(s2, t2)["agreement"] == pytest.approx(2 / 3)


def test_evaluate_restores_mode_and_batches():
    """evaluate/predict_logits run in eval mode (dropout off, batch size irrelevant) and restore the mode."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 3))
    x = torch.randn(10, 4)
    y = torch.randint(0, 3, (10,))
    model.train()
    a = predict_logits(model, x, batch_size=3)
    assert model.training
    with torch.no_grad():
        b = model.eval()(x)
    model.train()
    torch.testing.assert_close(a, b)
    m = evaluate(model, x, y, teacher_logits=b, batch_size=4)
    assert model.training
    assert m["agreement"] == 1.0 and m["n"] == 10
    assert m["errors"] == int((b.argmax(1) != y).sum())
