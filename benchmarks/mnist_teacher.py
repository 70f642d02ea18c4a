"""Training throughput of the ``reproduce hinton-mnist`` teacher step, fp32 against its cheaper variants, in
one process.

The teacher (784-1200-1200-10, dropout 0.2 / 0.5, max-norm 15, Adam, inputs shifted by up to ±2 px) is the
suite's largest cost: 300 epochs of 55,000 images per seed. Each variant runs the engine's step (the batch
gathered and shifted by the engine's augmentation
(``data.augment: [{name: shift, max: 2}]``), the ``labels`` method under the same
autocast as ``precision: bf16``, Adam, :func:`darkknowledge.models.apply_max_norm`) on MNIST-shaped random
inputs; variants are interleaved over several rounds and the median rate and its ratio to fp32 at batch 128
(the baseline in the same process) are reported:

  fp32            the suite's setting
  bf16            ``precision: bf16`` (bf16 autocast on the CPU)
  fp32_noshift    the step without the shift (what the augmentation costs)
  fp32_batch256   twice the batch (fewer, larger matrix products)
  bf16_batch256   both

Usage: python benchmarks/mnist_teacher.py [--rounds 5] [--steps 40] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _step import train_step  # benchmarks/_step.py (the script's folder is on sys.path)

from darkknowledge.data.augment import build_augment
from darkknowledge.methods import create_method
from darkknowledge.models import apply_max_norm, create_model
from darkknowledge.utils import atomic_write_json, git_commit, machine_facts

#: variant → (bf16 autocast, shift in px, batch size)
VARIANTS = {"fp32": (False, 2, 128), "bf16": (True, 2, 128), "fp32_noshift": (False, 0, 128),
            "fp32_batch256": (False, 2, 256), "bf16_batch256": (True, 2, 256)}
TEACHER = {"in_features": 784, "hidden": [1200, 1200], "dropout": 0.5, "input_dropout": 0.2, "max_norm": 15.0}


def rate(bf16: bool, shift: int, bs: int, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Samples per second of ``steps`` teacher steps after two warm-up steps."""
    torch.manual_seed(0)
    model = create_model("mlp", **TEACHER).train()
    method = create_method("labels", model, None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    t0 = 0.0
    for s in range(steps + 2):
        if s == 2:
            t0 = time.perf_counter()
        idx = torch.randint(0, x.shape[0], (bs,), generator=gen)
        xb, yb = x[idx], y[idx]
        if shift:
            xb = build_augment([{"name": "shift", "max": shift}], tuple(x.shape[1:]))(xb, None, seed=s)[0]
        train_step(method, opt, xb, yb, bf16)
        apply_max_norm(model)
    return steps * bs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per variant and round (at batch 128)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the suite runs one per process)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(10_000, 1, 28, 28, generator=g), torch.randint(0, 10, (10_000,), generator=g)
    t_start = time.perf_counter()
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for v, (bf16, shift, bs) in VARIANTS.items():
            rates[v].append(rate(bf16, shift, bs, x, y, args.steps * 128 // bs))
    med = {v: statistics.median(r) for v, r in rates.items()}
    results = {v: {"samples_per_s": m, "vs_fp32": m / med["fp32"], "rounds": rates[v]} for v, m in med.items()}
    for v, r in results.items():
        print(f"{v:14s} {r['samples_per_s']:8.0f} samples/s  x{r['vs_fp32']:.2f} vs fp32", flush=True)
    epoch_min = 55_000 / med["fp32"] / 60
    print(f"fp32: {epoch_min:.2f} min per 55,000-image epoch, {300 * epoch_min:.0f} min for the 300-epoch teacher",
          flush=True)
    if args.json:
        atomic_write_json(args.json, {"command": "python " + " ".join(sys.argv), "git_commit": git_commit(),
                                      "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
                                      "teacher": TEACHER, "variants": {k: dict(zip(("bf16", "shift", "batch_size"), v))
                                                                       for k, v in VARIANTS.items()},
                                      "wall_time_s": time.perf_counter() - t_start, "machine": machine_facts(),
                                      "results": results})


if __name__ == "__main__":
    main()
