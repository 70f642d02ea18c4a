"""``dk.distill``: distil any teacher into any student from Python, through the same engine as the CLI.

A thin front end over :func:`~.train.train`: the data (tensors, a ``Dataset`` or a ``DataLoader``) become
in-memory splits, the arguments a :class:`~darkknowledge.config.TrainConfig`, and the engine does the
rest — validation split and model selection, checkpoints, the run record, progress bars.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..config import validate
from ..data import Splits, TensorData, train_val_split
from ..data.convert import LoaderData, as_tensor_data, loader_settings, split_loader
from ..teachers import Teacher, as_teacher
from .arguments import check_student, check_teacher
from .callbacks import Callback
from .train import train

__all__ = ["distill"]

log = logging.getLogger(__name__)


def distill(student: nn.Module, teacher: Teacher | nn.Module | Sequence[nn.Module] | None, x: Any,
            y: Tensor | None = None, *, val: Any = None, val_fraction: float = 0.1, test: Any = None,
            temperature: float = 4.0, w_soft: float = 1.0, w_hard: float = 0.5, epochs: int = 10,
            batch_size: int | None = None, lr: float = 1e-3, optimizer: str = "adam", schedule: str = "constant",
            weight_decay: float = 0.0, warmup_epochs: float = 0.0, augment: Sequence[Any] = (),
            augment_shape: Sequence[int] | None = None, seed: int = 0,
            combine: str = "arithmetic", method: str | None = None, method_args: dict[str, Any] | None = None,
            out_dir: str | None = None, progress: bool = True, device: str = "auto",
            callbacks: Sequence[Callback] = ()) -> nn.Module:
    """Distil ``teacher`` (an ``nn.Module``, a list of them as an ensemble, a :class:`Teacher`, or ``None``
    to train from labels only) into ``student`` and return ``student`` with the weights selected on
    validation (Hinton et al. 2015 §2: ``w_soft · T² · KL(p_T ‖ q_T) + w_hard · CE(y, q_1)``).

    ``x``: inputs (with labels ``y``; a tensor or numpy array), or a ``Dataset`` / ``DataLoader`` of
    ``(input, label)`` pairs. A ``DataLoader`` is used as given: each epoch iterates it again, so its batch
    size, sampler (shuffling), ``collate_fn``, ``drop_last`` and the dataset's transforms all apply
    (:class:`~darkknowledge.data.convert.LoaderData`; the teacher then runs live on every batch, and
    ``run.json`` records the loader's settings under ``data_loader``). ``batch_size``: for tensors and
    Datasets (default 128); with a DataLoader it must be left out or equal the loader's. Without labels
    (``y=None`` with a tensor ``x``), the teacher's predictions stand in for them in the validation metrics
    and ``w_hard`` is 0. ``val``: a validation set (default: a seeded ``val_fraction`` of ``x``; of a
    DataLoader's dataset, the rest keeping the loader's settings); ``test``: a test set for the final
    metrics (default: the validation set). ``optimizer`` (``adam``, ``adamw``, ``sgd``), ``lr``,
    ``schedule`` (``constant``, ``cosine``, ``linear``, ``step``), ``warmup_epochs`` and ``weight_decay``
    are the config's ``optim`` section. ``augment``: batch augmentations (``data.augment`` of a config, e.g.
    ``[{"name": "crop", "padding": 4}, {"name": "hflip"}]``; :mod:`~darkknowledge.data.augment`), applied to
    every training batch; with a live teacher that is **consistent teaching** (Beyer et al. 2022): the teacher
    labels the very augmented batch the student sees. ``augment_shape`` views flat inputs as ``[C, H, W]`` or
    ``[frames, bands]`` for them. ``out_dir``: keep the run (checkpoint, ``run.json``,
    ``best.safetensors``) there, resumable; default a temporary folder. ``device``: ``"auto"`` (CUDA,
    else MPS, else CPU), ``"cpu"``, ``"cuda[:N]"`` or ``"mps"``. ``callbacks``:
    :class:`~darkknowledge.engine.callbacks.Callback` objects, run after the built-in ones.

    Wrong types are a ``TypeError`` saying what was expected (a string as the student, labels of strings or
    ``uint8``, ...); a student whose output count does not match the classes is refused.
    """
    check_student(student)
    check_teacher(teacher)
    t = as_teacher(teacher, combine=combine) if teacher is not None else None
    if isinstance(x, Tensor) and y is None:
        if t is None:
            raise ValueError("labels y are needed to train without a teacher")
        if x.shape[0] == 0:
            raise ValueError("x is empty")
        from ..metrics import predict_logits

        y = predict_logits(t, x, 1000).argmax(1)
        w_hard = 0.0
    loader = x if isinstance(x, DataLoader) else None
    given = loader_settings(loader) if loader is not None else None
    if loader is not None:
        if batch_size is not None and batch_size != loader.batch_size:
            raise ValueError(f"batch_size={batch_size} but the DataLoader's batch size is {loader.batch_size}: a "
                             "DataLoader is used as given — leave batch_size out or rebuild the loader")
        if t is not None and not t.live:
            raise ValueError(f"a {type(t).__name__} serves outputs stored for fixed inputs, but a DataLoader is "
                             "iterated afresh each epoch: give the teacher model")
        if val is None:
            if not 0 < val_fraction < 1:
                raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
            loader, val_data = split_loader(loader, val_fraction, seed)
            given["validation"] = f"a seeded {val_fraction:g} of its dataset, held out (the rest keeps its settings)"
        else:
            val_data = as_tensor_data(val, name="val")
        train_data: TensorData = LoaderData.of(loader, seed)
        batch_size = loader.batch_size
    else:
        data = as_tensor_data(x, y, "x")
        if len(data) == 0:
            raise ValueError("x is empty")
        if val is None:
            if not 0 < val_fraction < 1:
                raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
            tr, va = train_val_split(len(data), val_fraction, seed)
            train_data, val_data = data.subset(tr), data.subset(va)
        else:
            train_data, val_data = data, as_tensor_data(val, name="val")
    test_data = as_tensor_data(test, name="test") if test is not None else val_data
    num_classes = _num_classes(student, t, train_data, val_data, test_data)
    dataset = "in-memory" if loader is None else f"DataLoader({given['dataset']})"
    splits = Splits(train_data, val_data, TensorData(test_data.x, test_data.y), num_classes, dataset)
    name = getattr(student, "init_name", None) or f"{type(student).__module__}:{type(student).__qualname__}"
    cfg = {"name": "distill" if t is not None else "labels", "seed": seed, "epochs": epochs,
           "batch_size": 128 if batch_size is None else batch_size,
           "model": {"name": name, "args": dict(getattr(student, "init_args", None) or {})},
           "optim": {"name": optimizer, "lr": lr, "schedule": schedule, "weight_decay": weight_decay,
                     "warmup_epochs": warmup_epochs},
           "data": {"dataset": dataset, "val_size": len(val_data), "augment": list(augment),
                    **({"augment_shape": list(augment_shape)} if augment_shape is not None else {})},
           "method": method, "method_args": method_args or {},
           "device": device}
    if t is not None:
        cfg["distill"] = {"teachers": ["(in-memory teacher)"], "temperature": temperature, "w_soft": w_soft,
                          "w_hard": w_hard, "combine": combine, "cache": loader is None and not augment}
    extra = [_Record(given)] if given is not None else []
    with tempfile.TemporaryDirectory(prefix="darkknowledge-") as tmp:
        cfg["out_dir"] = out_dir or tmp
        train(validate(cfg, source="(dk.distill arguments)"), resume=out_dir is not None, splits=splits,
              progress=progress, student=student, teacher=t, callbacks=[*extra, *callbacks])
    return student.eval()


class _Record(Callback):
    """Adds the DataLoader's settings to the run record (``data_loader``)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def on_train_end(self, run, record: dict[str, Any]) -> None:
        record["data_loader"] = self.settings


@torch.no_grad()
def _outputs(model: nn.Module, x: Tensor) -> int:
    was = model.training
    try:
        return int(model.eval()(x[:1]).shape[-1])
    except RuntimeError as e:
        raise ValueError(f"{type(model).__name__} cannot take inputs of shape {tuple(x.shape[1:])}: "
                         f"{str(e).splitlines()[0]}") from None
    finally:
        model.train(was)


def _num_classes(student: nn.Module, teacher: Teacher | None, *parts: TensorData) -> int:
    """The student's output count, checked against the labels (no label beyond it; a warning when outputs
    never get a label) and the teacher's output count."""
    n = getattr(student, "num_classes", None) or _outputs(student, parts[0].x)
    top = max(int(p.y.max()) for p in parts if len(p))
    if top >= n:
        raise ValueError(f"labels go up to {top} but the student has {n} outputs")
    if teacher is not None and teacher.live:
        k = _outputs(teacher, parts[0].x)
        if k != n:
            raise ValueError(f"the teacher has {k} outputs but the student has {n}: they must score the same classes")
    elif top + 1 < n:
        log.warning("the student has %d outputs but the labels only go up to %d: outputs %d..%d never get a label "
                    "(right if those classes are left out on purpose)", n, top, top + 1, n - 1)
    return n
