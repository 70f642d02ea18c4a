"""Specialist models and their data: Hinton, Vinyals & Dean (2015), §5.1.

A specialist ``m`` covers a confusable subset ``S^m`` of the classes and predicts over ``S^m`` plus one
*dustbin* class for everything else. It is the generalist's architecture initialised from the
generalist's weights (:func:`make_specialist`), trained on data "half from its special subset, half
sampled at random from the rest of the training set" (:func:`specialist_indices`,
:func:`specialist_splits`; the labels are remapped by :func:`specialist_targets`), and after training
the dustbin logit is raised by the log of the factor by which the special classes were oversampled
(:func:`dustbin_shift`, :func:`apply_dustbin_shift`).

Training goes through the ordinary engine::

    spec = make_specialist(generalist, classes)
    dk.train(cfg, splits=specialist_splits(splits, classes, seed=0), student=spec)
    apply_dustbin_shift(spec, dustbin_shift(special_fraction(splits.train.y, classes)))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ..data import Splits, TensorData

__all__ = [
    "find_output_layer", "make_specialist", "specialist_targets", "special_fraction", "specialist_indices",
    "dustbin_shift", "apply_dustbin_shift", "shift_dustbin_logits", "specialist_splits",
]


def _classes(classes: Sequence[int] | Tensor, num_classes: int | None = None) -> list[int]:
    cl = [int(c) for c in (classes.tolist() if isinstance(classes, Tensor) else classes)]
    if not cl:
        raise ValueError("a specialist needs at least one special class")
    if len(set(cl)) != len(cl):
        raise ValueError(f"repeated class ids in {cl}")
    if min(cl) < 0 or (num_classes is not None and max(cl) >= num_classes):
        raise ValueError(f"class ids {cl} out of range 0..{(num_classes or 0) - 1}")
    if num_classes is not None and len(cl) >= num_classes:
        raise ValueError(f"a specialist must leave at least one of the {num_classes} classes to its dustbin")
    return cl


# --------------------------------------------------------------------------------------------- the model


def find_output_layer(model: nn.Module, name: str | None = None) -> tuple[str, nn.Linear]:
    """The output layer: the ``nn.Linear`` named ``name``, else the last ``nn.Linear`` registered in
    ``model`` (``named_modules`` order; for the library's models, their ``head``)."""
    if name is not None:
        layer = model.get_submodule(name)
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"{name!r} is a {type(layer).__name__}, not an nn.Linear")
        return name, layer
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.Linear to replace; name the output layer")
    return found[-1]


def make_specialist(generalist: nn.Module, classes: Sequence[int] | Tensor,
                    output_layer_name: str | None = None) -> nn.Module:
    """A specialist for ``classes`` (``S``): a deep copy of ``generalist`` whose output layer (see
    :func:`find_output_layer`) is replaced by a ``Linear`` with ``|S| + 1`` outputs — ``S`` in the given
    order, then the dustbin — initialised from the generalist's rows (Hinton et al. 2015, §5.1):

    * special output ``j``: the generalist's row (weight and bias) of class ``classes[j]``, so at
      initialisation the specialist's logits on ``S`` *equal* the generalist's;
    * dustbin: weight = mean of the generalist's rows of the other classes ``R``, bias = their mean bias
      ``+ log |R|``, i.e. the dustbin logit is ``mean_{c∈R} z_c + log |R|``. That is the Jensen lower bound
      of ``log Σ_{c∈R} exp z_c`` (the logit of the collapsed generalist), exact when the other logits are
      equal; it is the closest *linear* function of the features to it. Without a bias, the mean row only.

    Every parameter of the copy is trainable (a frozen teacher's flags are not inherited). The copy
    gets ``special_classes`` (the class ids, in output order) and ``output_layer_name`` attributes, and its
    ``num_classes`` attribute, if it has one, becomes ``|S| + 1`` (what ``darkknowledge.engine.train``
    checks against the data), as does ``init_args["num_classes"]`` of a generalist built by ``create_model``
    (so a trained specialist's file reloads with ``load_model``).
    """
    name, old = find_output_layer(generalist, output_layer_name)
    cl = _classes(classes, old.out_features)
    rest = [c for c in range(old.out_features) if c not in set(cl)]
    new = nn.Linear(old.in_features, len(cl) + 1, bias=old.bias is not None, device=old.weight.device,
                    dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight[:-1] = old.weight[cl]
        new.weight[-1] = old.weight[rest].mean(0)
        if old.bias is not None:
            new.bias[:-1] = old.bias[cl]
            new.bias[-1] = old.bias[rest].mean() + math.log(len(rest))
    if name == "":  # the generalist is the output layer itself
        spec: nn.Module = new
    else:
        spec = copy.deepcopy(generalist)
        parent, _, child = name.rpartition(".")
        setattr(spec.get_submodule(parent) if parent else spec, child, new)
    for p in spec.parameters():
        p.requires_grad_(True)
    if hasattr(spec, "num_classes"):
        spec.num_classes = len(cl) + 1
    if "num_classes" in (getattr(spec, "init_args", None) or {}):  # rebuilt by load_model with |S| + 1 outputs
        spec.init_args = {**spec.init_args, "num_classes": len(cl) + 1}
    spec.special_classes = tuple(cl)
    spec.output_layer_name = name
    return spec


# --------------------------------------------------------------------------------------------- labels and sampling


def specialist_targets(y: Tensor, classes: Sequence[int] | Tensor) -> Tensor:
    """Labels for a specialist: class ``classes[j]`` → ``j``; every other class → the dustbin ``|S|``."""
    cl = _classes(classes)
    lut = torch.full((max(int(y.max()) if y.numel() else 0, max(cl)) + 1,), len(cl), dtype=torch.long)
    lut[torch.tensor(cl)] = torch.arange(len(cl))
    return lut[y.long().cpu()].to(y.device)


def special_fraction(y: Tensor, classes: Sequence[int] | Tensor) -> float:
    """``f``: the fraction of the examples ``y`` whose class is in ``classes`` (their natural frequency)."""
    if y.numel() == 0:
        raise ValueError("no labels")
    return float(torch.isin(y, torch.as_tensor(_classes(classes), device=y.device)).double().mean())


def _draw(pool: Tensor, k: int, g: torch.Generator | None, what: str) -> Tensor:
    """``k`` elements of ``pool``: without replacement when ``k ≤ |pool|``; otherwise every element
    ``k // |pool|`` times plus a random ``k mod |pool|`` of them (balanced repetition)."""
    if k == 0:
        return pool[:0]
    if pool.numel() == 0:
        raise ValueError(f"no {what} examples to sample {k} from")
    reps, extra = divmod(k, pool.numel())
    return torch.cat([pool.repeat(reps), pool[torch.randperm(pool.numel(), generator=g)[:extra]]])


def specialist_indices(y: Tensor, classes: Sequence[int] | Tensor, n: int | None = None,
                       generator: torch.Generator | None = None, special_share: float = 0.5) -> Tensor:
    """Indices into ``y`` of a specialist's training set: ``round(special_share · n)`` examples of the
    special classes and the rest uniformly from the other classes (the paper: half and half, §5.1).

    ``n`` defaults to ``|special examples| / special_share`` (every special example once). Each half is
    drawn without replacement when its pool is large enough, else by balanced repetition (every example
    of the pool equally often, ±1). The result is shuffled with ``generator`` (seeded ⇒ reproducible).
    """
    if not 0 < special_share < 1:
        raise ValueError(f"special_share must be in (0, 1), got {special_share}")
    y = y.cpu()
    inside = torch.isin(y, torch.tensor(_classes(classes)))
    pos, neg = inside.nonzero().flatten(), (~inside).nonzero().flatten()
    if n is None:
        n = int(math.floor(pos.numel() / special_share + 0.5))
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    n_special = int(math.floor(special_share * n + 0.5))
    idx = torch.cat([_draw(pos, n_special, generator, "special-class"),
                     _draw(neg, n - n_special, generator, "other-class")])
    return idx[torch.randperm(idx.numel(), generator=generator)]


# --------------------------------------------------------------------------------------------- bias correction


def dustbin_shift(f: float, special_share: float = 0.5, rule: Literal["paper", "prior"] = "paper") -> float:
    """The amount to add to a trained specialist's dustbin logit (Hinton et al. 2015, §5.1; spec §3.1).

    The special classes are a fraction ``f`` of the natural data but ``special_share`` (½) of the
    specialist's training data: they were oversampled by ``special_share / f``.

    * ``rule="paper"``: "add the log of the factor by which the special classes were oversampled", i.e.
      ``log(special_share / f)`` (= ``log(0.5 / f)``).
    * ``rule="prior"``: the exact prior-shift (Bayes) correction for a specialist calibrated on the training
      mix, ``log(special_share / f) + log((1 − f) / (1 − special_share))`` (= ``log((1 − f) / f)`` at ½):
      the dustbin's own under-sampling is corrected too; about ``log 2`` more than the paper's rule when
      ``f`` is small. The paper does not say which was used in practice.
    """
    if not 0 < f < 1:
        raise ValueError(f"the special fraction f must be in (0, 1), got {f}")
    if not 0 < special_share < 1:
        raise ValueError(f"special_share must be in (0, 1), got {special_share}")
    shift = math.log(special_share / f)
    if rule == "prior":
        return shift + math.log((1 - f) / (1 - special_share))
    if rule != "paper":
        raise ValueError(f"rule must be 'paper' or 'prior', got {rule!r}")
    return shift


def shift_dustbin_logits(logits: Tensor, shift: float) -> Tensor:
    """``logits`` [.., |S| + 1] with ``shift`` added to the dustbin (last) logit (a copy)."""
    out = logits.clone()
    out[..., -1] += shift
    return out


@torch.no_grad()
def apply_dustbin_shift(specialist: nn.Module, shift: float, output_layer_name: str | None = None) -> nn.Module:
    """Add ``shift`` to the bias of the dustbin (last) output of ``specialist``'s output layer, in place
    (the layer recorded by :func:`make_specialist`, else ``output_layer_name`` / the last ``nn.Linear``).
    Returns ``specialist``."""
    name = output_layer_name if output_layer_name is not None else getattr(specialist, "output_layer_name", None)
    _, layer = find_output_layer(specialist, name)
    if layer.bias is None:
        raise ValueError("the output layer has no bias to shift; use shift_dustbin_logits on its outputs")
    layer.bias[-1] += shift
    return specialist


# --------------------------------------------------------------------------------------------- splits


def specialist_splits(splits: Splits, classes: Sequence[int] | Tensor, n: int | None = None, seed: int = 0,
                      special_share: float = 0.5, balance_val: bool = True, name: str | None = None) -> Splits:
    """A :class:`~darkknowledge.data.Splits` for training one specialist with ``darkknowledge.engine.train``.

    * train: the 50/50 sample of :func:`specialist_indices` (``n`` examples, default: every special example
      once and as many others), seeded by ``seed``;
    * val (selects the reported epoch): the same kind of 50/50 sample of the validation split when
      ``balance_val`` (so that the dustbin does not dominate the selection metric), else all of it;
    * test: the whole test split (natural frequencies).

    Labels are remapped by :func:`specialist_targets` (``|S|`` classes + dustbin), ``num_classes`` is
    ``|S| + 1``, and each ``index`` keeps the source index of the example (repeats possible).
    """
    cl = _classes(classes, splits.num_classes)
    g = torch.Generator().manual_seed(seed)

    def part(d: TensorData, idx: Tensor | None) -> TensorData:
        d = d if idx is None else d.subset(idx)
        return TensorData(d.x, specialist_targets(d.y, cl), d.index)

    train = part(splits.train, specialist_indices(splits.train.y, cl, n, g, special_share))
    val_idx = None
    if balance_val and len(splits.val) and bool(torch.isin(splits.val.y, torch.tensor(cl)).any()):
        val_idx = specialist_indices(splits.val.y, cl, None, g, special_share)
    names = None if splits.class_names is None else [splits.class_names[c] for c in cl] + ["dustbin"]
    return Splits(train, part(splits.val, val_idx),
                  part(splits.test, None), len(cl) + 1, name or f"{splits.name}-specialist", names)
