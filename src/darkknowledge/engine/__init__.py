"""The training engine: the loop (:mod:`.train`), what watches it (:mod:`.callbacks`), exact resume
(:mod:`.state`), one writer per run directory (:mod:`.lock`), and ``dk.distill`` for modules and in-memory
data (:mod:`.fit`)."""

from .callbacks import Callback, StepInfo
from .lock import RunLock, RunLockedError
from .state import CheckpointError, Run, RunExistsError, TeacherMismatchError
from .train import (
    TrainingDivergedError,
    build_optimizer,
    build_teacher,
    epoch_order,
    lr_factor,
    prepare_data,
    train,
)

__all__ = ["train", "prepare_data", "build_teacher", "build_optimizer", "lr_factor", "epoch_order",
           "TrainingDivergedError", "RunExistsError", "RunLockedError", "RunLock", "CheckpointError",
           "TeacherMismatchError", "Callback", "StepInfo", "Run"]
