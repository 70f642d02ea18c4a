"""The Free Spoken Digit Dataset (FSDD; GitHub ``Jakobovski/free-spoken-digit-dataset``), the speech analogue of
Hinton, Vinyals & Dean (2015), §4 (spec §6.2): 3,000 recordings, 6 speakers × 10 digits × 50 takes, 8 kHz, int16.

The file is ``fsdd.npz`` (dataset folder ``fsdd``; no download URL): ``audio`` int16, every recording
concatenated, recording ``i`` being ``audio[offsets[i]:offsets[i + 1]]``; ``digit``, ``speaker`` (index into
``speaker_names``), ``take``; ``sample_rate`` 8000. It is found like every dataset (``data_dir``,
``$DARKKNOWLEDGE_DATA``, ``~/.cache/darkknowledge``, each as ``root/fsdd/`` or ``root/``) and checked against its
sha256.

Splits are by *recording*, never by frame:

* ``official`` (the repository's README): takes 0–4 test (300 recordings), takes 5–49 train (2,700);
* ``speaker``: the named speakers' recordings are the test set, the other speakers' the training set
  (default pair :data:`HELDOUT_PAIR`; a single name gives leave-one-speaker-out);
* validation: a seeded random share of the *training recordings* (:func:`split_recordings`).

:func:`build_frame_splits` turns a split into frame-level training data — 40 log-mel features per 10 ms frame,
normalised with training-recording statistics only, stacked into context windows, each frame labelled with its
"HMM state" ``digit·S + segment`` (:mod:`darkknowledge.speech.features`) — and keeps every frame's recording
id for word decoding (:mod:`darkknowledge.speech.decoding`). The log-mel features of all 3,000 recordings take
0.7 s and the whole build 1.5–3 s on one CPU thread, so nothing is cached on disk. The registry's ``fsdd-frames``
(official split) and ``fsdd-frames-speakers`` (:data:`HELDOUT_PAIR` held out) are :func:`load_fsdd_frames`.
"""

from __future__ import annotations

import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .common import ENV_VAR, DatasetNotFoundError, RemoteFile, candidate_dirs, locate_files
from .registry import register_dataset

__all__ = [
    "FSDD_DATASET", "FSDD_FILE", "HELDOUT_PAIR", "FSDDFormatError", "FSDD", "load_fsdd", "split_recordings",
    "subsample_recordings", "FrameSet", "FrameSplits", "build_frame_splits", "load_fsdd_frames",
]

FSDD_DATASET = "fsdd"
FSDD_FILE = RemoteFile("fsdd.npz", "2a2540b0013c467969df71dfd90680df6f60c3a9b1b00072bf2b8522b8c4a6e5", ())
#: the default held-out pair: one US and one German speaker, each leaving a speaker of the same accent in training
HELDOUT_PAIR = ("jackson", "lucas")
_KEYS = ("audio", "offsets", "digit", "speaker", "take", "speaker_names", "sample_rate")


class FSDDFormatError(ValueError):
    """``fsdd.npz`` lacks a key or its arrays are inconsistent."""


@dataclass(frozen=True)
class FSDD:
    """All recordings (``recordings[i]`` int16 PCM) and their labels, as int64 arrays indexed by recording id."""

    recordings: list[np.ndarray]
    digit: np.ndarray
    speaker: np.ndarray
    take: np.ndarray
    speaker_names: tuple[str, ...]
    sample_rate: int
    sha256: str | None = None

    def __len__(self) -> int:
        return len(self.recordings)


def _one_line_not_found(data_dir) -> DatasetNotFoundError:
    looked = ", ".join(str(d) for d in candidate_dirs(FSDD_DATASET, data_dir))
    return DatasetNotFoundError(
        f"FSDD: {FSDD_FILE.name} not found (looked in {looked}); put it in a folder 'fsdd/' under --data-dir or "
        f"${ENV_VAR} (fsdd.npz packs the Free Spoken Digit Dataset's 3,000 wav files; sha256 {FSDD_FILE.sha256[:12]}…)")


def load_fsdd(data_dir: str | os.PathLike | None = None, download: bool = True) -> FSDD:
    """Load and validate ``fsdd.npz``. A missing file raises :class:`DatasetNotFoundError` with a one-line
    message; a file whose sha256 differs raises :class:`ChecksumError` (see :func:`locate_files`)."""
    try:
        path = locate_files(FSDD_DATASET, [FSDD_FILE], data_dir, download=download)[FSDD_FILE.name]
    except DatasetNotFoundError as e:
        raise _one_line_not_found(data_dir) from e
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise FSDDFormatError(f"{path}: missing arrays {missing}")
            audio, offsets = z["audio"], z["offsets"].astype(np.int64)
            digit, speaker, take = (z[k].astype(np.int64) for k in ("digit", "speaker", "take"))
            names, rate = tuple(str(s) for s in z["speaker_names"]), int(z["sample_rate"])
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        if isinstance(e, FSDDFormatError):
            raise
        raise FSDDFormatError(f"{path}: cannot read as a numpy archive ({e})") from e
    n = len(digit)
    problem = None
    if audio.dtype != np.int16 or audio.ndim != 1:
        problem = f"audio is {audio.dtype} {audio.shape}, want int16 1-D"
    elif offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(audio) or np.any(np.diff(offsets) <= 0):
        problem = "offsets do not cut the audio into one non-empty piece per recording"
    elif speaker.shape != (n,) or take.shape != (n,):
        problem = f"{n} digits but {len(speaker)} speakers and {len(take)} takes"
    elif n and (digit.min() < 0 or digit.max() > 9 or speaker.min() < 0 or speaker.max() >= len(names)):
        problem = "a digit outside 0–9 or a speaker index outside speaker_names"
    elif rate != 8000:
        problem = f"sample rate {rate}, want 8000"
    if problem is not None:
        raise FSDDFormatError(f"{path}: {problem}")
    recordings = [audio[offsets[i]:offsets[i + 1]] for i in range(n)]
    return FSDD(recordings, digit, speaker, take, names, rate, FSDD_FILE.sha256)


def _resolve_speakers(data: FSDD, heldout: str | Sequence[str]) -> list[int]:
    names = [heldout] if isinstance(heldout, str) else list(heldout)
    unknown = [s for s in names if s not in data.speaker_names]
    if unknown or not names:
        raise ValueError(f"unknown held-out speakers {unknown or names}; FSDD has {', '.join(data.speaker_names)}")
    if len(set(names)) == len(data.speaker_names):
        raise ValueError("holding out every speaker leaves no training recordings")
    return [data.speaker_names.index(s) for s in names]


def subsample_recordings(ids: np.ndarray, size: int | float, seed: int) -> np.ndarray:
    """A seeded subset of the recording ids ``ids`` (sorted): ``size`` of them, or ``round(size·len)`` for a
    fraction ``0 < size < 1`` (e.g. the 3% run of spec §6.1, 81 of 2,700 training recordings)."""
    ids = np.asarray(ids, dtype=np.int64)
    k = int(round(size * len(ids))) if isinstance(size, float) and size < 1 else int(size)
    if not 0 <= k <= len(ids):
        raise ValueError(f"cannot take {size} of {len(ids)} recordings")
    return np.sort(np.random.default_rng(seed).permutation(ids)[:k])


def split_recordings(data: FSDD, split: str = "official", heldout_speakers: str | Sequence[str] | None = None,
                     val_size: int | float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """Recording ids (sorted int64 arrays) of ``train``, ``val`` and ``test``.

    ``split="official"``: test = takes 0–4, train = takes 5–49. ``split="speaker"``: test = the recordings of
    ``heldout_speakers`` (a name or names; default :data:`HELDOUT_PAIR`), train = the others. Validation is
    ``val_size`` (a count, or a fraction ``< 1``) of the training recordings drawn with ``seed``; the rest stay
    in train. Frames of one recording never straddle two splits.
    """
    if split == "official":
        if heldout_speakers is not None:
            raise ValueError("heldout_speakers applies to split='speaker', not 'official'")
        is_test = data.take <= 4
    elif split == "speaker":
        is_test = np.isin(data.speaker, _resolve_speakers(data, heldout_speakers or HELDOUT_PAIR))
    else:
        raise ValueError(f"split must be 'official' or 'speaker', got {split!r}")
    train_all = np.flatnonzero(~is_test)
    val = subsample_recordings(train_all, val_size, seed)
    if len(val) >= len(train_all):
        raise ValueError(f"validation size {val_size} leaves no training recordings out of {len(train_all)}")
    return {"train": np.setdiff1d(train_all, val), "val": val, "test": np.flatnonzero(is_test)}


@dataclass
class FrameSet:
    """Frame-level data of one split: inputs ``x`` float32 ``[N, (past + 1 + future)·40]``, state targets ``y``
    int64 ``[N]`` and the recording id of every frame ``recording`` int64 ``[N]`` (a recording's frames are
    contiguous and in time order)."""

    x: Tensor
    y: Tensor
    recording: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def recordings(self) -> np.ndarray:
        """The recording ids present, sorted."""
        return np.unique(self.recording.numpy())

    def select(self, ids: np.ndarray) -> FrameSet:
        """The frames of the recordings ``ids`` only (e.g. :func:`subsample_recordings` for the 3% run)."""
        keep = torch.from_numpy(np.isin(self.recording.numpy(), np.asarray(ids)))
        return FrameSet(self.x[keep], self.y[keep], self.recording[keep])


@dataclass
class FrameSplits:
    """:func:`build_frame_splits`'s result: the three :class:`FrameSet` s, the recording-level labels (indexed by
    recording id), and the parameters that made them."""

    train: FrameSet
    val: FrameSet
    test: FrameSet
    states_per_digit: int
    past: int
    future: int
    mean: np.ndarray
    std: np.ndarray
    digit: np.ndarray
    speaker: np.ndarray
    speaker_names: tuple[str, ...]
    ids: dict[str, np.ndarray]
    feature_seconds: float = 0.0
    params: dict = field(default_factory=dict)

    @property
    def num_states(self) -> int:
        return 10 * self.states_per_digit

    def parts(self) -> dict[str, FrameSet]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def as_registry(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"train": (x, y), "val": (x, y), "test": (x, y)}``, the dataset registry's loader format."""
        return {k: (p.x, p.y) for k, p in self.parts().items()}


def build_frame_splits(data_dir: str | os.PathLike | None = None, *, split: str = "official",
                       heldout_speakers: str | Sequence[str] | None = None, states_per_digit: int = 3,
                       past: int = 10, future: int = 5, val_size: int | float = 0.1, seed: int = 0,
                       download: bool = True, data: FSDD | None = None, **feature_args) -> FrameSplits:
    """Frame-level train/val/test data for the speech analogue (spec §6.2).

    Per recording: :func:`~darkknowledge.speech.features.log_mel` (``feature_args`` passed on), normalised by a
    :class:`~darkknowledge.speech.features.Normalizer` fitted on the *training* recordings' frames only, stacked
    by :func:`~darkknowledge.speech.features.stack_context` (``past``, ``future``; the paper's 26 frames are 20 + 1
    + 5), targets :func:`~darkknowledge.speech.features.segment_targets` with ``S = states_per_digit``. Splits as
    :func:`split_recordings`. ``data`` skips loading (an :class:`FSDD` already in memory).
    """
    from ..speech.features import Normalizer, log_mel_batch, segment_targets, stack_context

    if states_per_digit < 1:
        raise ValueError(f"states_per_digit must be >= 1, got {states_per_digit}")
    data = load_fsdd(data_dir, download) if data is None else data
    ids = split_recordings(data, split, heldout_speakers, val_size, seed)
    t0 = time.perf_counter()
    wanted = np.sort(np.concatenate(list(ids.values())))
    feats = dict(zip(wanted.tolist(), log_mel_batch([data.recordings[i] for i in wanted], **feature_args)))
    seconds = time.perf_counter() - t0
    norm = Normalizer.fit([feats[i] for i in ids["train"]])
    width = (past + 1 + future) * next(iter(feats.values())).shape[1]
    parts = {}
    for name, part_ids in ids.items():
        n = sum(feats[i].shape[0] for i in part_ids)
        x = np.empty((n, width), dtype=np.float32)
        y, rec = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        at = 0
        for i in part_ids:
            f = feats[i]
            t = f.shape[0]
            x[at:at + t] = stack_context(norm(f), past, future)
            y[at:at + t] = segment_targets(t, int(data.digit[i]), states_per_digit)
            rec[at:at + t] = i
            at += t
        parts[name] = FrameSet(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(rec))
    held = None
    if split == "speaker":
        held = [heldout_speakers] if isinstance(heldout_speakers, str) else list(heldout_speakers or HELDOUT_PAIR)
    params = {"split": split, "heldout_speakers": held, "states_per_digit": states_per_digit, "past": past,
              "future": future, "val_size": val_size, "seed": seed, "source_sha256": data.sha256, **feature_args}
    return FrameSplits(parts["train"], parts["val"], parts["test"], states_per_digit, past, future, norm.mean,
                       norm.std, data.digit, data.speaker, data.speaker_names, ids, seconds, params)


def load_fsdd_frames(data_dir: str | os.PathLike | None = None, download: bool = True,
                     train_share: float | None = None, **kwargs) -> dict[str, tuple[Tensor, Tensor]]:
    """The registry's ``fsdd-frames``: :func:`build_frame_splits` with its defaults (official split, ``S = 3``,
    10 past + 5 future frames, 10% of the training recordings for validation, seed 0) as
    ``{"train", "val", "test"}`` → ``(x, y)``. The validation split is by recording, so the registry uses it
    as given and ignores ``val_size``/``split_seed``. Rebuild the same splits with :func:`build_frame_splits`
    to get each frame's recording id (the order is identical). ``train_share``: keep the training frames of only
that share of the training recordings (:func:`subsample_recordings`; the normalisation statistics stay those
of all training recordings — unlabelled audio statistics, no labels)."""
    fs = build_frame_splits(data_dir, download=download, **kwargs)
    if train_share is not None:  # ``fsdd-frames-3pct``: the training frames of a seeded share of the recordings
        fs.train = fs.train.select(subsample_recordings(fs.ids["train"], train_share, kwargs.get("seed", 0)))
    return fs.as_registry()


@register_dataset("fsdd-frames", classes=30)
def _fsdd_official(data_dir=None, download=True) -> dict[str, tuple[Tensor, Tensor]]:
    return load_fsdd_frames(data_dir, download, split="official")


@register_dataset("fsdd-frames-speakers", classes=30)
def _fsdd_speakers(data_dir=None, download=True) -> dict[str, tuple[Tensor, Tensor]]:
    return load_fsdd_frames(data_dir, download, split="speaker")


@register_dataset("fsdd-frames-3pct", classes=30)
def _fsdd_3pct(data_dir=None, download=True) -> dict[str, tuple[Tensor, Tensor]]:
    return load_fsdd_frames(data_dir, download, split="official", train_share=0.03)
