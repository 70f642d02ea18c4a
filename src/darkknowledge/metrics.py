"""Classification metrics on logits: errors, accuracy, NLL, ECE, Brier, teacher agreement, and the bias
shift of Hinton et al. (2015) §3 (raising the output biases of classes a student never saw)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["classification_metrics", "agreement_metrics", "expected_calibration_error", "predict_logits", "evaluate",
           "apply_bias_shift", "best_bias_shift", "SHIFT_GRID", "labels_baseline_accuracy"]

SHIFT_GRID = torch.round(torch.arange(-150, 151) * 1.0) / 10  # −15.0 … 15.0 in steps of 0.1


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins: ``Σ_b (|B_b|/n) · |acc(B_b) − conf(B_b)|``."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    bins = torch.clamp((conf * n_bins).ceil().long() - 1, 0, n_bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.double().mean() * (correct[m].double().mean() - conf[m].double().mean()).abs()
    return float(ece)


def classification_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """``errors`` (count), ``accuracy``, ``nll`` (mean), ``ece`` (15 bins), ``brier`` (mean over cases of
    ``Σ_c (p_c − y_c)²``)."""
    logits = logits.float()
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions for {labels.shape[0]} labels")
    probs = F.softmax(logits, dim=1)
    pred = logits.argmax(dim=1)
    onehot = F.one_hot(labels, logits.shape[1]).float()
    return {
        "errors": int((pred != labels).sum()),
        "accuracy": float((pred == labels).float().mean()),
        "nll": float(F.cross_entropy(logits, labels)),
        "ece": expected_calibration_error(probs, labels),
        "brier": float((probs - onehot).pow(2).sum(dim=1).mean()),
        "n": int(labels.shape[0]),
    }


def agreement_metrics(student_logits: Tensor, teacher_logits: Tensor) -> dict[str, float]:
    """Top-1 agreement and mean ``KL(teacher ‖ student)`` at ``T = 1``."""
    s, t = student_logits.float(), teacher_logits.float()
    log_q = F.log_softmax(s, dim=1)
    log_p = F.log_softmax(t, dim=1)
    return {
        "agreement": float((s.argmax(1) == t.argmax(1)).float().mean()),
        "kl_teacher_student": float((log_p.exp() * (log_p - log_q)).sum(dim=1).mean()),
    }


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 2000) -> Tensor:
    """``model``'s logits on ``x`` in eval mode, in batches moved to the model's device; returned on the CPU."""
    from .utils import module_device

    was_training = model.training
    model.eval()
    dev = module_device(model)
    out = torch.cat([model(x[i:i + batch_size].to(dev)).float().cpu() for i in range(0, x.shape[0], batch_size)])
    model.train(was_training)
    return out


def evaluate(model: nn.Module, x: Tensor, y: Tensor, teacher_logits: Tensor | None = None,
             batch_size: int = 2000) -> dict[str, float]:
    """All metrics of ``model`` on ``(x, y)``; agreement too when ``teacher_logits`` are given."""
    logits = predict_logits(model, x, batch_size)
    out = classification_metrics(logits, y)
    if teacher_logits is not None:
        out.update(agreement_metrics(logits, teacher_logits))
    return out


def labels_baseline_accuracy(x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor, max_train: int = 2000,
                             max_features: int = 4096, seed: int = 0) -> float | None:
    """Validation accuracy of the cheapest model trained on labels: a multinomial logistic regression
    (scikit-learn, inputs flattened and standardised) fitted on at most ``max_train`` training examples (a
    seeded subset). A teacher that is not ahead of it on validation has nothing to teach beyond the labels
    (Hinton et al. 2015 §2-3), so :class:`~darkknowledge.engine.callbacks.Guidance` warns before training.
    ``None`` (no check) for inputs wider than ``max_features`` or with fewer than two classes; about a
    second on one core for 2,000 MNIST images (88% on MNIST's validation split), five for CIFAR-10. It
    draws no torch random numbers (the run stays bit-identical)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xt, xv = x_train.reshape(len(x_train), -1), x_val.reshape(len(x_val), -1)
    if xt.shape[1] > max_features or len(x_val) == 0 or len(torch.unique(y_train)) < 2:
        return None
    keep = np.sort(np.random.default_rng(seed).permutation(len(xt))[:max_train])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=100))
    with warnings.catch_warnings():  # not converged in 100 iterations is close enough for a baseline
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(xt[keep].float().numpy(), y_train[keep].numpy())
    return float(model.score(xv.float().numpy(), y_val.numpy()))


def apply_bias_shift(logits: Tensor, classes: Sequence[int], shift: float) -> Tensor:
    """Add ``shift`` to the logits (equivalently the output biases) of ``classes`` (a copy)."""
    out = logits.clone().float()
    out[:, list(classes)] += shift
    return out


def best_bias_shift(logits: Tensor, labels: Tensor, classes: Sequence[int],
                    grid: Tensor | Sequence[float] = SHIFT_GRID) -> tuple[float, int]:
    """The shift of ``classes``' biases on ``grid`` with the fewest errors on ``(logits, labels)``.

    Hinton et al. (2015) §3: a student whose transfer set lacked class 3 gets most 3s right once the
    class-3 bias is raised. Ties (a plateau of equally good shifts) are broken by the median of the
    minimisers, which keeps the choice away from the plateau's edges. Returns ``(shift, errors)``.
    """
    grid = torch.as_tensor(grid, dtype=torch.float32)
    errs = torch.tensor([int((apply_bias_shift(logits, classes, float(s)).argmax(1) != labels).sum()) for s in grid])
    best = int(errs.min())
    minimisers = grid[errs == best]
    shift = float(minimisers[(len(minimisers) - 1) // 2])
    return round(shift, 4), best
