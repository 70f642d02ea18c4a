"""The speech pipeline (Hinton et al. 2015 §4 on FSDD): log-mel features against independent formulas, context
windows, segment targets, Viterbi alignment and word decoding against brute-force enumeration, WER, the FSDD
loader's splits (synthetic recordings, so they run everywhere) and, when present, the real fsdd.npz."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import darkknowledge.data.common as common
from darkknowledge.data import DatasetNotFoundError, load_dataset
from darkknowledge.data.fsdd import (
    FSDD,
    HELDOUT_PAIR,
    build_frame_splits,
    load_fsdd,
    split_recordings,
    subsample_recordings,
)
from darkknowledge.speech import (
    Normalizer,
    digit_scores,
    evaluate_recognition,
    force_align,
    frame_accuracy,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    realign,
    recognise,
    segment_targets,
    stack_context,
    state_log_prior,
    viterbi_align,
    viterbi_chain,
    word_error_rate,
)
from darkknowledge.speech.features import num_frames


def _fsdd_root() -> str | None:
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data"
    for d in (os.environ.get("DARKKNOWLEDGE_DATA"), str(beside_repo)):
        if d and (Path(d) / "fsdd" / "fsdd.npz").is_file():
            return d
    return None


REAL = _fsdd_root()
needs_real = pytest.mark.skipif(REAL is None, reason="real FSDD (fsdd/fsdd.npz) not found")


# ----------------------------------------------------------------------------------------------- features


def test_mel_scale_known_values_and_inverse():
    # the HTK scale is built so that 1000 Hz is 1000 mel; independent form 1127·ln(1 + f/700)
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.05)
    f = np.array([0.0, 20.0, 440.0, 2000.0, 4000.0])
    np.testing.assert_allclose(hz_to_mel(f), 1127.0 * np.log(1 + f / 700.0), rtol=1e-4)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-9)


def _centres(n_mels=40, fmin=20.0, fmax=4000.0):
    lo, hi = 1127.0 * np.log(1 + fmin / 700.0), 1127.0 * np.log(1 + fmax / 700.0)
    return lo + np.arange(n_mels + 2) * (hi - lo) / (n_mels + 1)  # c_0 … c_{M+1}, equally spaced in mel


def test_mel_filterbank_matches_independent_triangles():
    h = mel_filterbank()
    assert h.shape == (40, 129)
    c = _centres()
    step = c[1] - c[0]
    mu = 1127.0 * np.log(1 + (np.arange(129) * 8000 / 256) / 700.0)
    for m in range(1, 41):  # equal spacing in mel: symmetric triangles 1 − |μ − c_m| / Δ
        expect = np.clip(1 - np.abs(mu - c[m]) / step, 0, None)
        np.testing.assert_allclose(h[m - 1], expect, atol=1e-6)
        # the peak bin is the one nearest the filter's mel centre, and nothing outside (c_{m−1}, c_{m+1})
        assert h[m - 1].argmax() == np.abs(mu - c[m]).argmin()
        assert np.all(h[m - 1][(mu <= c[m - 1]) | (mu >= c[m + 1])] == 0)
    assert np.all(h.sum(1) > 0)
    with pytest.raises(ValueError, match="no FFT bin"):
        mel_filterbank(n_mels=120, n_fft=64)


@pytest.mark.parametrize("m", [2, 9, 19, 30, 39])
def test_pure_tone_lands_in_its_filter(m):
    """A sine at filter m's centre frequency puts most energy into filter m and almost all into m−1 … m+1."""
    f0 = 700.0 * (np.exp(_centres()[m] / 1127.0) - 1)
    x = 0.5 * np.sin(2 * np.pi * f0 * np.arange(8000) / 8000)
    e = np.exp(log_mel(x, preemphasis=0.0)).mean(0)
    assert e.argmax() == m - 1
    assert e[m - 2:m + 1].sum() / e.sum() > 0.97


def test_frames_shape_and_silence_floor():
    assert [num_frames(n) for n in (0, 199, 200, 279, 280, 1148)] == [1, 1, 1, 1, 2, 12]
    x = (np.random.default_rng(0).normal(size=1148) * 3000).astype(np.int16)
    f = log_mel(x)
    assert f.shape == (12, 40) and f.dtype == np.float32 and np.isfinite(f).all()
    # int16 input is scaled by 1/32768: the same signal as float gives the same features
    np.testing.assert_allclose(log_mel(x.astype(np.float64) / 32768.0), f, rtol=1e-5)
    assert np.all(log_mel(np.zeros(400)) == np.float32(np.log(1e-10)))  # digital silence sits on the floor
    with pytest.raises(TypeError):
        log_mel(np.zeros(400, dtype=np.int32))


def test_stack_context_edge_padding():
    f = np.arange(4, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]], dtype=np.float32)  # [T=4, D=2]
    x = stack_context(f, past=2, future=1)
    frames = x.reshape(4, 4, 2)[:, :, 0]  # which source frame sits in each slot
    np.testing.assert_array_equal(frames, [[0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3]])
    np.testing.assert_array_equal(x.reshape(4, 4, 2)[:, :, 1], frames * 10)
    paper = stack_context(np.random.default_rng(1).normal(size=(7, 40)), 20, 5)
    assert paper.shape == (7, 26 * 40)
    np.testing.assert_array_equal(paper[:, 20 * 40:21 * 40], np.random.default_rng(1).normal(size=(7, 40)))
    with pytest.raises(ValueError):
        stack_context(f, -1, 0)


def test_segment_targets():
    np.testing.assert_array_equal(segment_targets(10, 7, 3), [21] * 4 + [22] * 3 + [23] * 3)
    for t, s in [(5, 5), (13, 3), (44, 4), (227, 5)]:
        y = segment_targets(t, 2, s)
        counts = np.bincount(y - 2 * s, minlength=s)
        assert y[0] == 2 * s and y[-1] == 2 * s + s - 1 and np.all(np.diff(y) >= 0)
        assert counts.max() - counts.min() <= 1 and counts.sum() == t


def test_normalizer_weights_frames_equally():
    a, b = np.zeros((3, 2)), np.ones((1, 2)) * 4
    n = Normalizer.fit([a, b])
    np.testing.assert_allclose(n.mean, [1, 1])
    np.testing.assert_allclose(n.std, [np.sqrt(3), np.sqrt(3)])
    np.testing.assert_allclose(n(b), np.full((1, 2), 3 / np.sqrt(3)), rtol=1e-6)


# ---------------------------------------------------------------------------------------------- Viterbi


def _paths(t, s):
    """All left-to-right paths of length t through s states (start 0, end s−1, steps 0 or 1)."""
    for p in itertools.product(range(s), repeat=t):
        if p[0] == 0 and p[-1] == s - 1 and all(b - a in (0, 1) for a, b in zip(p, p[1:])):
            yield np.array(p)


def _brute(scores):
    t, s = scores.shape
    best = max(_paths(t, s), key=lambda p: scores[np.arange(t), p].sum(), default=None)
    return (best, scores[np.arange(t), best].sum()) if best is not None else (None, -np.inf)


@pytest.mark.parametrize("t,s", [(1, 1), (3, 1), (3, 3), (4, 2), (6, 3), (7, 2), (7, 4)])
def test_viterbi_align_matches_brute_force(t, s):
    rng = np.random.default_rng(t * 10 + s)
    for _ in range(5):
        sc = rng.normal(size=(t, s))
        path, score = viterbi_align(sc)
        want_path, want = _brute(sc)
        np.testing.assert_array_equal(path, want_path)
        assert score == pytest.approx(want)


def test_viterbi_chain_batch_ignores_padding():
    rng = np.random.default_rng(3)
    lengths = np.array([2, 5, 3, 6, 1])
    sc = rng.normal(size=(5, 6, 3))
    sc[np.arange(6)[None, :] >= lengths[:, None]] = 1e6  # padding must not matter
    best, paths = viterbi_chain(sc, lengths)
    for b, n in enumerate(lengths):
        want_path, want = _brute(sc[b, :n])
        assert best[b] == (pytest.approx(want) if np.isfinite(want) else -np.inf)
        if want_path is None:
            assert np.all(paths[b] == -1)
        else:
            np.testing.assert_array_equal(paths[b, :n], want_path)
            assert np.all(paths[b, n:] == -1)


def test_viterbi_rejects_too_few_frames():
    with pytest.raises(ValueError, match="cannot pass"):
        viterbi_align(np.zeros((2, 3)))


def test_force_align_and_realign_against_brute_force():
    rng = np.random.default_rng(5)
    s, digits = 2, np.array([1, 0, 2, 1])  # recording id → digit
    lengths = [3, 5, 2, 4]
    rec = np.concatenate([np.full(n, r) for r, n in enumerate(lengths)])
    # interleave whole recordings (each one's frames stay in time order)
    order = np.concatenate([np.flatnonzero(rec == r) for r in (2, 0, 3, 1)])
    rec = rec[order]
    lp = torch.log_softmax(torch.tensor(rng.normal(size=(len(rec), 3 * s))), 1)
    prior = state_log_prior(rng.integers(0, 3 * s, 100), 3 * s)
    for chunk in (1, 256):
        got = realign(lp, rec, digits, s, prior, chunk=chunk)
        for r, d in enumerate(digits):
            frames = np.flatnonzero(rec == r)
            sc = lp.numpy()[frames][:, d * s:(d + 1) * s] - prior[d * s:(d + 1) * s]
            want, _ = _brute(sc)
            np.testing.assert_array_equal(got[frames], d * s + want)
            np.testing.assert_array_equal(force_align(lp[frames], d, s, prior), d * s + want)


def test_realign_recovers_a_planted_alignment():
    s, d, t = 3, 4, 12
    truth = d * s + np.array([0] * 2 + [1] * 7 + [2] * 3)
    lp = np.full((t, 10 * s), -5.0)
    lp[np.arange(t), truth] = -0.1
    np.testing.assert_array_equal(realign(lp, np.zeros(t, int), np.array([d]), s), truth)
    assert not np.array_equal(truth, segment_targets(t, d, s))  # the equal split was wrong here


# --------------------------------------------------------------------------------------------- decoding


def test_digit_scores_match_brute_force():
    rng = np.random.default_rng(7)
    n_dig, s = 3, 2
    lengths = [2, 4, 3, 6]
    rec = np.concatenate([np.full(n, r + 10) for r, n in enumerate(lengths)])  # ids need not start at 0
    lp = rng.normal(size=(len(rec), n_dig * s))
    prior = np.log(rng.dirichlet(np.ones(n_dig * s)))
    for log_prior in (None, prior):
        b = lp - (0 if log_prior is None else log_prior)
        ids, scores = digit_scores(lp, rec, s, log_prior)
        ids2, scores2 = digit_scores(lp, rec, s, log_prior, chunk=1)
        np.testing.assert_array_equal(ids, [10, 11, 12, 13])
        np.testing.assert_allclose(scores2, scores)
        for i, r in enumerate(ids):
            f = b[rec == r]
            for d in range(n_dig):
                assert scores[i, d] == pytest.approx(_brute(f[:, d * s:(d + 1) * s])[1])
        _, sums = digit_scores(lp, rec, s, log_prior, method="sum")
        for i, r in enumerate(ids):
            f = b[rec == r].reshape(-1, n_dig, s)
            np.testing.assert_allclose(sums[i], np.log(np.exp(f).sum(2)).sum(0))
    # logits serve as well as log posteriors: a per-frame shift changes no decision
    shifted = lp + rng.normal(size=(len(rec), 1)) * 10
    np.testing.assert_array_equal(recognise(shifted, rec, s)[1], recognise(lp, rec, s)[1])


def _two_state_posteriors(order_ok_digit: int) -> np.ndarray:
    """4 frames over 2 digits × 2 states. Every frame favours digit 1 − d in total, but in reverse state order
    (its last state first); digit d's states come in the right order with lower posteriors."""
    other = 1 - order_ok_digit
    p = np.full((4, 4), 0.05)
    p[:2, other * 2 + 1] = 0.6  # other digit's last state early
    p[2:, other * 2] = 0.6  # … and its first state late
    p[:2, order_ok_digit * 2] = 0.3
    p[2:, order_ok_digit * 2 + 1] = 0.3
    return np.log(p / p.sum(1, keepdims=True))


def test_wer_on_a_constructed_example():
    """Viterbi follows the left-to-right chain; the frame-sum score does not. Recordings 0 and 1 are read
    right only by Viterbi; recording 2 is clear-cut (both right); recording 3 is labelled wrongly on purpose."""
    clear = np.log(np.array([[0.85, 0.05, 0.05, 0.05]] * 2 + [[0.05, 0.85, 0.05, 0.05]] * 2))  # digit 0
    lp = np.concatenate([_two_state_posteriors(1), _two_state_posteriors(0), clear, clear])
    rec = np.repeat(np.arange(4), 4)
    truth = np.array([1, 0, 0, 1])
    ids, pred = recognise(lp, rec, 2)
    np.testing.assert_array_equal(pred, [1, 0, 0, 0])
    assert word_error_rate(pred, truth[ids]) == 0.25
    np.testing.assert_array_equal(recognise(lp, rec, 2, method="sum")[1], [0, 1, 0, 0])
    assert evaluate_recognition(lp, rec, truth, 2) == {"wer": 0.25, "errors": 1, "recordings": 4}
    assert evaluate_recognition(lp, rec, truth, 2, method="sum")["errors"] == 3
    with pytest.raises(ValueError, match="fewer than"):
        recognise(lp[:1], rec[:1], 2)


def test_frame_accuracy_and_state_prior():
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert frame_accuracy(scores, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)
    lp = state_log_prior(np.array([0, 0, 0, 1]), 3, smoothing=1.0)
    np.testing.assert_allclose(np.exp(lp), [4 / 7, 2 / 7, 1 / 7])
    with pytest.raises(ValueError):
        state_log_prior(np.array([0, 3]), 3)
    with pytest.raises(ValueError):
        word_error_rate([1, 2], [1])


# ------------------------------------------------------------------------------------- FSDD loader, splits


def _synthetic_fsdd(n_speakers=2, takes=10, seed=0) -> FSDD:
    """Noise recordings with the FSDD layout; test takes (0–4) are 100× louder, so statistics that saw them
    would show it."""
    rng = np.random.default_rng(seed)
    recs, digit, speaker, take = [], [], [], []
    for d in range(10):
        for sp in range(n_speakers):
            for k in range(takes):
                n = int(rng.integers(1100, 3000))
                amp = 30000.0 if k <= 4 else 300.0
                recs.append(np.clip(rng.normal(size=n) * amp * (1 + d / 10), -32768, 32767).astype(np.int16))
                digit.append(d), speaker.append(sp), take.append(k)
    names = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")[:n_speakers]
    return FSDD(recs, np.array(digit), np.array(speaker), np.array(take), names, 8000, None)


def test_splits_are_by_recording_and_seeded():
    data = _synthetic_fsdd()
    ids = split_recordings(data, "official", val_size=0.2, seed=3)
    assert set(np.concatenate(list(ids.values()))) == set(range(len(data)))
    assert sum(len(v) for v in ids.values()) == len(data)
    assert np.all(data.take[ids["test"]] <= 4) and np.all(data.take[ids["train"]] >= 5)
    assert np.all(data.take[ids["val"]] >= 5) and len(ids["val"]) == 20
    again = split_recordings(data, "official", val_size=0.2, seed=3)
    other = split_recordings(data, "official", val_size=0.2, seed=4)
    np.testing.assert_array_equal(again["val"], ids["val"])
    assert not np.array_equal(other["val"], ids["val"])
    held = split_recordings(data, "speaker", "jackson", val_size=5)
    assert np.all(data.speaker[held["test"]] == 1) and np.all(data.speaker[held["train"]] == 0)
    assert len(held["val"]) == 5
    with pytest.raises(ValueError, match="unknown held-out speakers"):
        split_recordings(data, "speaker", "nobody")
    with pytest.raises(ValueError, match="no training"):
        split_recordings(data, "speaker", list(data.speaker_names))
    np.testing.assert_array_equal(subsample_recordings(np.arange(100), 0.03, 0), subsample_recordings(
        np.arange(100), 3, 0))


def test_frame_splits_normalise_with_training_recordings_only():
    data = _synthetic_fsdd()
    fs = build_frame_splits(data=data, states_per_digit=3, past=2, future=1, val_size=0.2, seed=0)
    train_feats = [log_mel(data.recordings[i]) for i in fs.ids["train"]]
    want = Normalizer.fit(train_feats)
    np.testing.assert_allclose(fs.mean, want.mean)
    np.testing.assert_allclose(fs.std, want.std)
    everything = Normalizer.fit([log_mel(r) for r in data.recordings])
    assert np.abs(everything.mean - fs.mean).max() > 1.0  # the loud test takes would have shifted it
    centre = slice(2 * 40, 3 * 40)  # the current frame in a (2 past, 1 future) window
    x_tr = fs.train.x[:, centre].double()
    assert x_tr.mean(0).abs().max() < 0.3  # train alone is not exactly 0/1: val recordings are outside it
    assert fs.test.x[:, centre].mean() > 2.0  # the loud test recordings stand out
    # frames: one recording's frames contiguous, in time order, with its segment targets and context windows
    for part, name in ((fs.train, "train"), (fs.val, "val"), (fs.test, "test")):
        np.testing.assert_array_equal(part.recordings(), fs.ids[name])
        r = int(fs.ids[name][1])
        rows = np.flatnonzero(part.recording.numpy() == r)
        assert np.all(np.diff(rows) == 1)
        f = want(log_mel(data.recordings[r]))
        np.testing.assert_allclose(part.x[rows].numpy(), stack_context(f, 2, 1), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(part.y[rows].numpy(), segment_targets(len(rows), int(data.digit[r]), 3))
    assert fs.num_states == 30 and set(fs.as_registry()) == {"train", "val", "test"}
    sub = fs.train.select(subsample_recordings(fs.ids["train"], 10, 0))
    assert len(sub.recordings()) == 10


def test_missing_fsdd_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv(common.ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setattr(common, "DEFAULT_CACHE", tmp_path / "cache")
    for load in (lambda: load_fsdd(tmp_path / "flag", download=False),
                 lambda: load_dataset("fsdd-frames", tmp_path / "flag", download=False)):
        with pytest.raises(DatasetNotFoundError) as e:
            load()
        msg = str(e.value)
        assert "\n" not in msg
        assert "fsdd.npz" in msg and str(tmp_path / "flag") in msg and str(tmp_path / "env") in msg
        assert "--data-dir" in msg and common.ENV_VAR in msg


# -------------------------------------------------------------------------------------------- real FSDD


@pytest.fixture(scope="module")
def real_frames():
    if REAL is None:
        pytest.skip("real FSDD (fsdd/fsdd.npz) not found")
    return build_frame_splits(REAL)


@needs_real
def test_real_fsdd_loads_and_splits():
    data = load_fsdd(REAL)
    assert len(data) == 3000 and np.all(np.bincount(data.digit) == 300)
    assert np.all(np.bincount(data.speaker) == 500) and data.speaker_names[1] == "jackson"
    assert sum(len(r) for r in data.recordings) == 10_498_424
    ids = split_recordings(data)
    assert [len(ids[k]) for k in ("train", "val", "test")] == [2430, 270, 300]
    held = split_recordings(data, "speaker")
    assert len(held["test"]) == 1000
    assert {data.speaker_names[i] for i in np.unique(data.speaker[held["test"]])} == set(HELDOUT_PAIR)


@needs_real
def test_real_frames_registry_and_a_nearest_mean_decoder(real_frames):
    fs = real_frames
    assert sum(len(p) for p in fs.parts().values()) == 125_237
    assert fs.train.x.shape[1] == 16 * 40 and fs.train.x.dtype == torch.float32
    splits = load_dataset("fsdd-frames", REAL)
    assert splits.num_classes == 30 and (len(splits.train), len(splits.val), len(splits.test)) == (
        len(fs.train), len(fs.val), len(fs.test))
    torch.testing.assert_close(splits.val.x, fs.val.x)
    # the features carry the words: Gaussian state means of the context windows + Viterbi decoding beat chance
    # by far (measured: 25% of frames, WER 0.48; a 2×512 MLP trained 4 epochs reaches 78% and WER 0.003)
    xtr, ytr = fs.train.x.double(), fs.train.y
    means = torch.stack([xtr[ytr == k].mean(0) for k in range(30)])
    loglik = -0.5 * torch.cdist(fs.test.x.double(), means) ** 2
    assert frame_accuracy(loglik, fs.test.y) > 0.15  # chance is about 1/30
    res = evaluate_recognition(loglik, fs.test.recording, fs.digit, 3, state_log_prior(ytr, 30))
    assert res["recordings"] == 300 and res["wer"] < 0.65  # chance is 0.9
