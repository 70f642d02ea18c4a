"""The method contract and the registry of training methods (mdistiller style: one short class each).

A method wraps the student (and, if it distils, a teacher). Called as
``method(x, y, idx, epoch=e, step=s)`` it returns the student's class logits and a dict of
**weighted** named loss terms; the training loss is exactly ``sum(terms.values())``, and the engine
logs each term. ``epoch`` (0-based) and ``step`` (global optimiser step) let a method follow a
schedule (e.g. a warm-up) without any change to the engine. See README "Add a method".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from ..teachers import Teacher, as_teacher

__all__ = ["Method", "register_method", "get_method", "list_methods", "create_method"]

_METHODS: dict[str, type[Method]] = {}


class Method(nn.Module):
    """Base class of the training methods.

    Class attributes: ``name`` (set by :func:`register_method`), ``needs_teacher``, and
    ``teacher_output`` — what the teacher must serve: ``None`` for its class logits, or the name of a
    model method such as ``"subclass_logits"`` or ``"forward_features"``. A plain ``nn.Module`` (or a
    list of them, an ensemble) given as the teacher is wrapped as a frozen
    :class:`~darkknowledge.teachers.Teacher` serving ``teacher_output``. ``mixed_labels``: the method takes the
    labels of a mixed batch (mixup / cutmix, :class:`~darkknowledge.data.augment.MixedTargets`) — its hard
    term goes through :func:`~darkknowledge.losses.hard_loss`; the engine refuses a mixing augmentation for a
    method that does not declare it.
    """

    name: ClassVar[str] = "method"
    needs_teacher: ClassVar[bool] = False
    teacher_output: ClassVar[str | None] = None
    mixed_labels: ClassVar[bool] = False

    def __init__(self, student: nn.Module, teacher: Teacher | nn.Module | Sequence[nn.Module] | None = None):
        super().__init__()
        if teacher is not None and not isinstance(teacher, Teacher):
            teacher = as_teacher(teacher).serving(self.teacher_output)
        self.student = student
        self.teacher = teacher

    def forward(self, x: Tensor, y: Tensor, idx: Tensor | None = None, *, epoch: int = 0,
                step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        """``(class_logits, {name: weighted loss})`` for a batch ``x`` with labels ``y`` and dataset
        indices ``idx`` (needed by a cached teacher); the training loss is the sum of the dict."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Tensor]:
        """Trainable state besides the student's (e.g. a projection), saved in checkpoints."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("student.", "teacher."))}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a :class:`Method` subclass under ``name`` (and set ``cls.name``)."""

    def deco(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"register_method({name!r}) expects a Method subclass, got {cls!r}")
        old = _METHODS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"method {name!r} is already registered as {old.__module__}.{old.__qualname__}")
        _METHODS[name] = cls
        cls.name = name
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type[Method]:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; registered: {', '.join(list_methods())}")
    return _METHODS[name]


def create_method(name: str, student: nn.Module, teacher: Teacher | nn.Module | Sequence[nn.Module] | None = None,
                  **args: Any) -> Method:
    """The registered method ``name`` on ``student`` (and ``teacher``) with its keyword ``args``.

    ``ValueError`` naming the method for bad arguments or a missing teacher; ``KeyError`` for an
    unknown name."""
    cls = get_method(name)
    if cls.needs_teacher and teacher is None:
        raise ValueError(f"method {name!r} needs a teacher (set distill.teachers)")
    try:
        return cls(student, teacher, **args)
    except TypeError as e:
        raise ValueError(f"method {name!r}: bad arguments {sorted(args)}: {e}") from None
    except ValueError as e:
        raise ValueError(f"method {name!r}: {e}") from None
