"""Word recognition from frame posteriors, word error rate and frame accuracy (Hinton et al. 2015, §4, Table 1:
frame accuracy and WER; spec §6.2 "Word recognition").

Each recording holds one spoken digit. For digit ``d`` with states ``d·S … d·S + S − 1`` the recording's score is
the best left-to-right path through that chain (:mod:`darkknowledge.speech.alignment`):

    score(d) = max_{s_0 ≤ … ≤ s_{T−1}, steps of 0 or 1, s_0 = 0, s_{T−1} = S − 1}  Σ_t b_t(d·S + s_t),
    b_t(k) = log P(k | x_t) − log P(k)          (hybrid "scaled likelihood"; the prior term is optional)

and the recognised word is ``argmax_d score(d)``. The simpler ``method="sum"`` scores
``Σ_t log Σ_s exp b_t(d·S + s)`` (without the prior: ``Σ_t log P(d | x_t)``). Both are unchanged when every
frame's scores shift by a constant, so logits serve as well as log posteriors. One word per recording, so
``WER = (recordings recognised wrongly) / (recordings)``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from .alignment import as_numpy, frame_groups, pad_groups, viterbi_chain

__all__ = ["state_log_prior", "digit_scores", "recognise", "word_error_rate", "frame_accuracy",
           "evaluate_recognition"]


def state_log_prior(y, num_states: int, smoothing: float = 1.0) -> np.ndarray:
    """``log P(k) = log((n_k + α) / (N + K·α))`` from training frame targets ``y`` (``α = smoothing`` keeps an
    unseen state finite)."""
    yy = np.asarray(y.cpu().numpy() if hasattr(y, "cpu") else y).astype(np.int64).ravel()
    if yy.size and (yy.min() < 0 or yy.max() >= num_states):
        raise ValueError(f"targets must lie in [0, {num_states}), got [{yy.min()}, {yy.max()}]")
    if smoothing < 0 or (smoothing == 0 and np.bincount(yy, minlength=num_states).min() == 0):
        raise ValueError("smoothing must be > 0 when a state has no frames (and never negative)")
    counts = np.bincount(yy, minlength=num_states).astype(np.float64) + smoothing
    return np.log(counts / counts.sum())


def digit_scores(log_probs, recording, states_per_digit: int, log_prior=None, method: str = "viterbi",
                 chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per recording and digit, the score of the module docstring.

    ``log_probs [N, D·S]``: log posteriors (or logits) of ``N`` frames over ``D`` digits × ``S`` states, state
    ``d·S + s``; ``recording [N]``: each frame's recording id (a recording's frames in time order). Returns
    ``(ids [R] sorted, scores [R, D])``. Viterbi runs for all digits of ``chunk`` recordings at once.
    """
    if method not in ("viterbi", "sum"):
        raise ValueError(f"method must be 'viterbi' or 'sum', got {method!r}")
    lp = as_numpy(log_probs)
    s = states_per_digit
    if lp.ndim != 2 or s < 1 or lp.shape[1] % s:
        raise ValueError(f"log_probs must be [frames, digits·{s}], got shape {lp.shape}")
    n_dig = lp.shape[1] // s
    if log_prior is not None:
        prior = as_numpy(log_prior)
        if prior.shape != (lp.shape[1],):
            raise ValueError(f"log_prior must have {lp.shape[1]} entries, got shape {prior.shape}")
        lp = lp - prior
    ids, order, starts = frame_groups(recording)
    if len(order) != lp.shape[0]:
        raise ValueError(f"{lp.shape[0]} frames of scores but {len(order)} recording ids")
    lengths_all = np.diff(starts)
    if method == "sum":
        per_frame = logsumexp(lp.reshape(-1, n_dig, s), axis=2)[order]  # [N, D], grouped by recording
        return ids, np.add.reduceat(per_frame, starts[:-1], axis=0)
    short = np.flatnonzero(lengths_all < s)
    if short.size:
        raise ValueError(f"recording {ids[short[0]]} has {lengths_all[short[0]]} frames, fewer than the {s} "
                         f"states of a digit's chain")
    out = np.empty((len(ids), n_dig))
    by_len = np.argsort(lengths_all, kind="stable")
    for lo in range(0, len(ids), chunk):
        group = by_len[lo:lo + chunk]
        sc, lengths, _ = pad_groups(lp, order, starts, group)  # [G, T, D·S]
        g, t_max = sc.shape[:2]
        chains = sc.reshape(g, t_max, n_dig, s).transpose(0, 2, 1, 3).reshape(g * n_dig, t_max, s)
        best, _ = viterbi_chain(chains, np.repeat(lengths, n_dig), backtrack=False)
        out[group] = best.reshape(g, n_dig)
    return ids, out


def recognise(log_probs, recording, states_per_digit: int, log_prior=None, method: str = "viterbi"
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [R], recognised digit [R])``: ``argmax_d`` of :func:`digit_scores` (ties to the lower digit)."""
    ids, scores = digit_scores(log_probs, recording, states_per_digit, log_prior, method)
    return ids, scores.argmax(1)


def word_error_rate(predicted, truth) -> float:
    """One word per recording: the share of recordings whose recognised digit differs from the truth."""
    p, t = np.asarray(predicted).ravel(), np.asarray(truth).ravel()
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"need equally many predictions and truths (> 0), got {p.size} and {t.size}")
    return float(np.mean(p != t))


def frame_accuracy(scores, y) -> float:
    """Share of frames whose highest-scoring state (``argmax`` of logits, probabilities or log posteriors) is
    the target state."""
    sc = as_numpy(scores)
    yy = np.asarray(y.cpu().numpy() if hasattr(y, "cpu") else y).ravel()
    if sc.ndim != 2 or sc.shape[0] != yy.shape[0] or yy.size == 0:
        raise ValueError(f"need scores [N, K] and N targets (N > 0), got {sc.shape} and {yy.shape}")
    return float(np.mean(sc.argmax(1) == yy))


def evaluate_recognition(log_probs, recording, digit_of_recording, states_per_digit: int, log_prior=None,
                         method: str = "viterbi") -> dict:
    """``{"wer", "errors", "recordings"}`` for a frame set: ``digit_of_recording`` maps a recording id to its
    digit (an array indexed by id)."""
    ids, pred = recognise(log_probs, recording, states_per_digit, log_prior, method)
    truth = np.asarray(digit_of_recording)[ids]
    return {"wer": word_error_rate(pred, truth), "errors": int(np.sum(pred != truth)), "recordings": int(len(ids))}
