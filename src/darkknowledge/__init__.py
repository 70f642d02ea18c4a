"""darkknowledge: knowledge distillation on PyTorch.

Implements Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", and
Müller, Kornblith & Hinton (2020), "Subclass Distillation".
"""

from . import specialists
from .config import ConfigError, TrainConfig, load_config
from .engine import Callback, TrainingDivergedError, train
from .engine.fit import distill
from .engine.jobs import Job, run_jobs
from .losses import DistillationObjective, distillation_loss, hard_loss, logit_matching_loss, soft_targets
from .methods import Distiller, Method, create_method, get_method, list_methods, register_method
from .metrics import agreement_metrics, classification_metrics, evaluate
from .models import SubclassNet, create_model, list_models, load_model, register_model, save_model
from .store import StoredTeacher, write_store
from .subclass import (
    subclass_auxiliary_loss,
    subclass_distillation_loss,
    subclass_nmi,
    subclass_recovery,
    subclass_teacher_loss,
    subclass_to_class_logits,
    subclass_usage,
)
from .teachers import CachedTeacher, Ensemble, ModelTeacher, Teacher, as_teacher, combine_members

__version__ = "0.1.0"

__all__ = [
    "soft_targets", "distillation_loss", "logit_matching_loss", "hard_loss", "DistillationObjective",
    "Teacher", "ModelTeacher", "Ensemble", "CachedTeacher", "as_teacher", "combine_members",
    "Distiller", "Method", "register_method", "create_method", "get_method", "list_methods",
    "train", "Callback", "TrainingDivergedError", "TrainConfig", "load_config", "ConfigError",
    "create_model", "list_models", "register_model", "save_model", "load_model",
    "classification_metrics", "agreement_metrics", "evaluate", "distill",
    "SubclassNet", "subclass_to_class_logits", "subclass_auxiliary_loss", "subclass_teacher_loss",
    "subclass_distillation_loss", "subclass_recovery", "subclass_nmi", "subclass_usage",
    "StoredTeacher", "write_store", "Job", "run_jobs", "specialists",
]
