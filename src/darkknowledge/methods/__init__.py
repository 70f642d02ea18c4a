"""Training methods, registered by name: one short file per method (mdistiller style).

A method wraps the student (and, if it distils, a teacher); ``method(x, y, idx, epoch=, step=)``
returns the student's class logits and a dict of **weighted** named losses whose sum is the training
loss (:class:`~darkknowledge.methods.base.Method`). Adding a method is one new file with a
:func:`register_method` class, imported below (README "Add a method").

=================  ========================================================  ==================
name               class (file)                                              teacher serves
=================  ========================================================  ==================
labels             :class:`LabelsOnly` (labels.py)                           —
kd                 :class:`KD` (kd.py), Hinton et al. 2015 §2                class logits
subclass_teacher   :class:`SubclassTeacherMethod` (subclass_teacher.py), §4  —
subclass_kd        :class:`SubclassKD` (subclass_kd.py), §5                  subclass_logits
penultimate        :class:`PenultimateKD` (feature.py), §6.3                 forward_features
dkd                :class:`DKD` (dkd.py), Zhao et al. 2022                   class logits
=================  ========================================================  ==================
"""

from .base import Method, create_method, get_method, list_methods, register_method
from .dkd import DKD, dkd_loss
from .feature import PenultimateKD
from .kd import KD, Distiller
from .labels import LabelsOnly
from .subclass_kd import SubclassKD
from .subclass_teacher import SubclassTeacherMethod

__all__ = ["Method", "register_method", "create_method", "get_method", "list_methods", "LabelsOnly", "KD",
           "Distiller", "SubclassTeacherMethod", "SubclassKD", "PenultimateKD", "DKD", "dkd_loss"]
