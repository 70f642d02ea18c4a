"""The generalist and its specialists as one teacher (Hinton et al. 2015 §5, Eq. 5), so that their combination can
be distilled back into one network — what the paper left open."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

from ..teachers import Teacher, freeze

__all__ = ["SpecialistCombination"]


class SpecialistCombination(Teacher):
    """A generalist and its specialists as one teacher: the Eq. 5 distribution ``q`` (returned as ``log q``,
    a logit vector) of the generalist and the active specialists (its ``top_n`` classes).

    ``table`` (optional) holds ``log q`` of the training (transfer) set computed once; the engine's batches of it
    are looked up by their dataset index ``idx`` (also when they are augmented: the soft target of an example is
    that of its clean image). Without a table, training batches get ``q`` of the inputs as given (with
    ``data.augment``: the augmented ones — consistent teaching, Beyer et al. 2022), not memoised; without ``idx``
    (validation, test) ``q`` is computed live and memoised by content.
    """

    def __init__(self, generalist: nn.Module, specialists: list[nn.Module], classes: list[list[int]],
                 top_n: int = 1, table: Tensor | None = None):
        super().__init__()
        self.generalist = freeze(generalist)
        self.specialists = nn.ModuleList(freeze(s) for s in specialists)
        self.classes = [list(map(int, c)) for c in classes]
        self.top_n = top_n
        self.num_classes = getattr(generalist, "num_classes", None)
        self.register_buffer("table", None if table is None else table.float().contiguous())
        self._memo: dict[str, Tensor] = {}  # live results by input content (the engine evaluates the test set twice)

    @torch.no_grad()
    def combined(self, x: Tensor) -> Tensor:
        key = hashlib.sha1(str((tuple(x.shape), str(x.dtype))).encode()
                           + x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        if key not in self._memo:
            self._memo[key] = self._combined(x)
        return self._memo[key].to(x.device)

    def _combined(self, x: Tensor) -> Tensor:
        from .combine import combine, specialist_probs

        p_g, p_s = specialist_probs(self.generalist(x), [s(x) for s in self.specialists])
        return combine(p_g, p_s, self.classes, top_n=self.top_n)

    def member_logits(self, x: Tensor, idx: Tensor | None = None) -> Tensor:
        if idx is not None and self.table is not None:
            if int(idx.max()) >= self.table.shape[0] or int(idx.min()) < 0:
                raise IndexError(f"index out of range for a table of {self.table.shape[0]} examples")
            return self.table[idx.to(self.table.device)].unsqueeze(1)
        with torch.no_grad():  # a fresh (augmented) training batch is seen once: no memo
            q = self._combined(x) if idx is not None else self.combined(x)
        return torch.log(q.clamp_min(1e-30)).float().unsqueeze(1)
