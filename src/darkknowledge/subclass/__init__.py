"""Subclass distillation (Müller, Kornblith & Hinton 2020, arXiv:2002.03936): the losses
(:mod:`.losses`, §2–§6) and the evaluation metrics (:mod:`.metrics`, §7).

The training methods built on these losses (``subclass_teacher``, ``subclass_kd``, ``penultimate``)
live in :mod:`darkknowledge.methods`; the model with a subclass head is
:class:`darkknowledge.models.SubclassNet`.
"""

from . import losses, metrics
from .losses import *  # noqa: F403 (the public names of both modules, listed in their __all__)
from .metrics import *  # noqa: F403

__all__ = [*losses.__all__, *metrics.__all__]
