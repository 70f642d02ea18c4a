"""darkknowledge: knowledge distillation on PyTorch.

Implements Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", and
Müller, Kornblith & Hinton (2020), "Subclass Distillation".
"""

from .config import ConfigError, TrainConfig, load_config
from .engine import TrainingDivergedError, train
from .losses import DistillationObjective, distillation_loss, hard_loss, logit_matching_loss, soft_targets
from .methods import Distiller, Method, create_method, get_method, list_methods, register_method
from .metrics import agreement_metrics, classification_metrics, evaluate
from .models import SubclassNet, create_model, list_models, load_model, register_model, save_model
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
    "train", "TrainingDivergedError", "TrainConfig", "load_config", "ConfigError",
    "create_model", "list_models", "register_model", "save_model", "load_model",
    "classification_metrics", "agreement_metrics", "evaluate", "distill",
    "SubclassNet", "subclass_to_class_logits", "subclass_auxiliary_loss", "subclass_teacher_loss",
    "subclass_distillation_loss", "subclass_recovery", "subclass_nmi", "subclass_usage",
]


def distill(student, teacher, x, y=None, *, temperature: float = 4.0, w_soft: float = 1.0, w_hard: float = 0.1,
            epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, seed: int = 0, combine: str = "arithmetic"):
    """Distill ``teacher`` (any ``nn.Module``, a list of them as an ensemble, or a :class:`Teacher`) into
    ``student`` on inputs ``x`` (labels ``y`` optional), with Adam, in memory. Returns the student.

    A minimal Python entry point; :func:`train` is the full engine (validation, checkpoints, resume).
    """
    import torch

    torch.manual_seed(seed)
    t = as_teacher(teacher, combine=combine)
    obj = DistillationObjective(temperature, w_soft, w_hard if y is not None else 0.0)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i:i + batch_size]
            loss, _ = obj(student(x[idx]), None if y is None else y[idx],
                          teacher_probs=t.soft_targets(x[idx], temperature, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return student.eval()
