"""Viterbi forced alignment to a digit's left-to-right chain of states (Hinton et al. 2015, §4: the acoustic
model is trained frame by frame on forced-alignment labels; spec §6.2 "optionally realign once by Viterbi
with the baseline model").

A digit ``d`` is a chain of ``S`` states ``d·S, …, d·S + S − 1``. A path ``s_0 … s_{T−1}`` through it starts in
the first state, ends in the last, and at every frame stays or moves one state on (``s_{t+1} − s_t ∈ {0, 1}``),
so it needs ``T ≥ S``. With frame scores ``b_t(s)`` (log posteriors, or hybrid-style scaled likelihoods
``log P(s | x_t) − log P(s)``) its score is ``Σ_t b_t(s_t)``; transition probabilities are left out, since with
stay = advance = ½ every path has the same ``(T − 1)·log ½``. Viterbi: ``δ_0 = (b_0(0), −∞, …)``,
``δ_t(s) = b_t(s) + max(δ_{t−1}(s), δ_{t−1}(s − 1))``, best score ``δ_{T−1}(S − 1)``, path by backtracking.
Ties go to staying.

:func:`viterbi_chain` is the batched core (many chains of different lengths at once, numpy); decoding
(:mod:`darkknowledge.speech.decoding`) scores every digit's chain with it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["viterbi_chain", "viterbi_align", "force_align", "realign", "frame_groups", "pad_groups", "as_numpy"]


def as_numpy(a) -> np.ndarray:
    """A tensor (any device, any float dtype) or array as a float64 numpy array."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def viterbi_chain(scores: np.ndarray, lengths: np.ndarray | None = None, backtrack: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Best left-to-right paths for a batch of chains.

    ``scores [B, T, S]``: frame scores of ``B`` chains of ``S`` states, chain ``b`` using its first ``lengths[b]``
    frames (default all ``T``; the rest is padding and ignored). Returns ``(best [B], paths [B, T] or None)``:
    ``best[b] = max over paths of Σ_t scores[b, t, s_t]`` (``−inf`` when ``lengths[b] < S``) and the argmax path's
    states ``0 … S − 1`` (``−1`` on padding frames).
    """
    sc = np.asarray(scores, dtype=np.float64)
    if sc.ndim != 3 or sc.shape[2] < 1:
        raise ValueError(f"scores must be [batch, frames, states], got shape {sc.shape}")
    b, t_max, s = sc.shape
    lengths = np.full(b, t_max, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (b,) or (b and (lengths.min() < 1 or lengths.max() > t_max)):
        raise ValueError(f"lengths must be {b} values in [1, {t_max}]")
    if np.isnan(sc).any():
        raise ValueError("scores contain NaN")
    delta = np.full((b, s), -np.inf)
    delta[:, 0] = sc[:, 0, 0]
    best = np.full(b, -np.inf)
    best[lengths == 1] = delta[lengths == 1, -1]
    advanced = np.zeros((b, t_max, s), dtype=bool) if backtrack else None
    for t in range(1, t_max):
        move = np.concatenate([np.full((b, 1), -np.inf), delta[:, :-1]], axis=1)
        adv = move > delta
        delta = np.where(adv, move, delta) + sc[:, t]
        if advanced is not None:
            advanced[:, t] = adv
        done = lengths == t + 1
        best[done] = delta[done, -1]
    if not backtrack:
        return best, None
    paths = np.full((b, t_max), -1, dtype=np.int64)
    state = np.full(b, s - 1, dtype=np.int64)
    rows = np.arange(b)
    for t in range(t_max - 1, -1, -1):
        live = lengths > t
        paths[live, t] = state[live]
        if t > 0:
            state = np.where(live, state - advanced[rows, t, state], state)
    paths[~np.isfinite(best)] = -1
    return best, paths


def viterbi_align(scores: np.ndarray) -> tuple[np.ndarray, float]:
    """Forced alignment of one recording to one chain: ``scores [T, S]`` → ``(path [T] in 0 … S − 1, score)``.
    Raises ``ValueError`` when ``T < S`` (no path visits every state)."""
    sc = as_numpy(scores)
    if sc.ndim != 2:
        raise ValueError(f"scores must be [frames, states], got shape {sc.shape}")
    if sc.shape[0] < sc.shape[1]:
        raise ValueError(f"{sc.shape[0]} frames cannot pass through {sc.shape[1]} left-to-right states")
    best, paths = viterbi_chain(sc[None])
    return paths[0], float(best[0])


def _chain_scores(log_probs: np.ndarray, digit: int, states_per_digit: int, log_prior: np.ndarray | None
                  ) -> np.ndarray:
    cols = slice(digit * states_per_digit, (digit + 1) * states_per_digit)
    sc = log_probs[..., cols]
    return sc - log_prior[cols] if log_prior is not None else sc


def force_align(log_probs, digit: int, states_per_digit: int, log_prior=None) -> np.ndarray:
    """New state targets ``int64 [T]`` (``digit·S + s_t``) for one recording: the Viterbi path through ``digit``'s
    chain under ``b_t(s) = log_probs[t, digit·S + s] − log_prior[digit·S + s]`` (``log_prior`` optional).
    ``log_probs [T, K]`` may be log posteriors or logits (the per-frame normaliser does not change the path)."""
    lp = as_numpy(log_probs)
    prior = None if log_prior is None else as_numpy(log_prior)
    path, _ = viterbi_align(_chain_scores(lp, digit, states_per_digit, prior))
    return digit * states_per_digit + path


def frame_groups(recording) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group frames by recording id: ``(ids [R], order [N], starts [R + 1])`` with the frames of ``ids[r]`` at
    ``order[starts[r]:starts[r + 1]]`` in their original (time) order; ``ids`` sorted."""
    rec = np.asarray(recording.cpu().numpy() if hasattr(recording, "cpu") else recording).astype(np.int64)
    if rec.ndim != 1:
        raise ValueError(f"recording ids must be 1-D, got shape {rec.shape}")
    order = np.argsort(rec, kind="stable")
    ids, counts = np.unique(rec[order], return_counts=True)
    return ids, order, np.concatenate([[0], np.cumsum(counts)])


def pad_groups(values: np.ndarray, order: np.ndarray, starts: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, ...]:
    """Frames of the recordings ``group`` (indices into the grouping) as ``[G, T_max, ...]`` plus lengths and the
    flat frame index of every padded cell (``-1`` on padding)."""
    lengths = starts[group + 1] - starts[group]
    t_max = int(lengths.max())
    pos = np.arange(t_max)[None, :]
    flat = np.where(pos < lengths[:, None], order[np.minimum(starts[group][:, None] + pos, len(order) - 1)], -1)
    out = values[np.maximum(flat, 0)]
    out[flat < 0] = 0.0
    return out, lengths, flat


def realign(log_probs, recording, digit_of_recording, states_per_digit: int, log_prior=None,
            chunk: int = 256) -> np.ndarray:
    """Realignment of a whole frame set: new targets ``int64 [N]`` for frames ``log_probs [N, K]`` whose recording
    ids are ``recording [N]`` (frames of a recording in time order); ``digit_of_recording[r]`` is recording
    ``r``'s digit (indexed by id). Each recording is :func:`force_align`-ed to its own digit's chain, in batches
    of ``chunk`` recordings of similar length."""
    lp = as_numpy(log_probs)
    prior = None if log_prior is None else as_numpy(log_prior)
    digits = np.asarray(digit_of_recording, dtype=np.int64)
    s = states_per_digit
    if lp.ndim != 2 or lp.shape[1] < (int(digits.max()) + 1) * s:
        raise ValueError(f"log_probs must be [frames, >= {(int(digits.max()) + 1) * s} states], got {lp.shape}")
    ids, order, starts = frame_groups(recording)
    if len(order) != lp.shape[0]:
        raise ValueError(f"{lp.shape[0]} frames of scores but {len(order)} recording ids")
    short = np.flatnonzero(np.diff(starts) < s)
    if short.size:
        raise ValueError(f"recording {ids[short[0]]} has {np.diff(starts)[short[0]]} frames, fewer than the "
                         f"{s} states of its chain")
    out = np.full(lp.shape[0], -1, dtype=np.int64)
    by_len = np.argsort(np.diff(starts), kind="stable")
    for lo in range(0, len(ids), chunk):
        group = by_len[lo:lo + chunk]
        d = digits[ids[group]]
        cols = d[:, None] * s + np.arange(s)[None, :]  # [G, S]
        sc, lengths, flat = pad_groups(lp, order, starts, group)  # [G, T, K]
        sc = np.take_along_axis(sc, np.broadcast_to(cols[:, None, :], (len(group), sc.shape[1], s)), axis=2)
        if prior is not None:
            sc = sc - prior[cols][:, None, :]
        _, paths = viterbi_chain(sc, lengths)
        live = flat >= 0
        out[flat[live]] = (d[:, None] * s + paths)[live]
    return out
