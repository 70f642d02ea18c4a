"""Specialist ensembles for many classes: Hinton, Vinyals & Dean (2015), §5 (spec §3, §4.4).

* :mod:`.clustering` — the special sets: K-means on the columns of the covariance of the generalist's
  predictions (§5.1), optionally overlapping.
* :mod:`.data` — a specialist (the generalist's architecture and weights, output layer over its classes
  plus a dustbin), its labels, its 50/50 training data, the dustbin bias correction, and a
  :class:`~darkknowledge.data.Splits` for ``darkknowledge.engine.train`` (§5.1).
* :mod:`.combine` — inference (§5.2, Eq. 5): the full distribution closest in KL to the generalist and
  the active specialists, solved for a whole batch at once; a per-example scipy reference. (The package
  attribute ``combine`` is the function; import the module as ``darkknowledge.specialists.combine`` with
  ``from ... import``.)
* :mod:`.metrics` — test accuracy, conditional accuracy (Table 3), gain by coverage (Table 4).
* :mod:`.evaluation` — a generalist and its specialists on a dataset's splits: the dustbin rule chosen on
  validation, the test metrics, the combination on the training set (to distil it back into one network).
* :mod:`.teacher` — the generalist and its specialists as one teacher.
"""

from .clustering import Clustering, clusters_by_temperature, confusable_clusters, prediction_covariance, special_sets
from .combine import (
    active_specialists,
    combine,
    combine_objective,
    combine_reference,
    membership_matrix,
    specialist_probs,
)
from .data import (
    apply_dustbin_shift,
    dustbin_shift,
    find_output_layer,
    make_specialist,
    shift_dustbin_logits,
    special_fraction,
    specialist_indices,
    specialist_splits,
    specialist_targets,
)
from .evaluation import evaluate_combination
from .metrics import (
    accuracy,
    combination_metrics,
    conditional_accuracy,
    coverage_counts,
    covered_classes,
    gain_by_coverage,
    pooled_gain_by_coverage,
)
from .teacher import SpecialistCombination

__all__ = [
    "Clustering", "confusable_clusters", "prediction_covariance", "special_sets", "clusters_by_temperature",
    "find_output_layer", "make_specialist", "specialist_targets", "special_fraction", "specialist_indices",
    "dustbin_shift", "apply_dustbin_shift", "shift_dustbin_logits", "specialist_splits",
    "membership_matrix", "active_specialists", "specialist_probs", "combine", "combine_objective", "combine_reference",
    "accuracy", "covered_classes", "coverage_counts", "conditional_accuracy", "gain_by_coverage",
    "pooled_gain_by_coverage", "combination_metrics", "evaluate_combination",
    "SpecialistCombination",
]
