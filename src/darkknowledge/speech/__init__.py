"""The speech pipeline of Hinton, Vinyals & Dean (2015), §4, at small scale on the Free Spoken Digit Dataset:
log-mel features and context windows (:mod:`.features`), Viterbi forced alignment (:mod:`.alignment`) and word
recognition with WER (:mod:`.decoding`). The frame-level dataset built from them is
:func:`darkknowledge.data.fsdd.build_frame_splits` (registered as ``fsdd-frames``).

This package depends only on numpy/scipy, never on :mod:`darkknowledge.data`, so ``data`` may use it.
"""

from .alignment import force_align, frame_groups, realign, viterbi_align, viterbi_chain
from .decoding import digit_scores, evaluate_recognition, frame_accuracy, recognise, state_log_prior, word_error_rate
from .features import (
    Normalizer,
    hz_to_mel,
    log_mel,
    log_mel_batch,
    mel_filterbank,
    mel_to_hz,
    segment_targets,
    stack_context,
)

__all__ = [
    "hz_to_mel", "mel_to_hz", "mel_filterbank", "log_mel", "log_mel_batch", "Normalizer", "stack_context",
    "segment_targets", "viterbi_chain", "viterbi_align", "force_align", "realign", "frame_groups",
    "state_log_prior", "digit_scores", "recognise", "word_error_rate", "frame_accuracy", "evaluate_recognition",
]
