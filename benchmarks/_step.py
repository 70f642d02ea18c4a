"""The training step the benchmarks time: the method's losses under the autocast of ``precision: bf16`` (the
engine's ``train`` loop), summed, backward, optimiser step."""

from __future__ import annotations

import contextlib

import torch


def train_step(method, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor, bf16: bool) -> None:
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        _, losses = method(xb, yb)
    loss = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
