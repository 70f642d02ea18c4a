"""Training throughput of fp32 vs bf16 autocast and channels_last, in one process.

Runs the same train step the engine runs (``precision`` / ``channels_last`` of ``TrainConfig``) on
CIFAR-shaped random batches for a ResNet-20 (``resnet_cifar``) and the ``small_cnn`` student, with a
subclass head and the subclass teacher loss (``CE + β·aux``), interleaving the variants over several
rounds and reporting the median rate and its ratio to fp32 (the baseline in the same process).
Usage: python benchmarks/precision.py [--rounds 3] [--steps 12] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _step import train_step  # benchmarks/_step.py (the script's folder is on sys.path)

import darkknowledge.experiments.subclass_cifar_2x5  # noqa: F401 (registers "resnet_cifar")
from darkknowledge.methods import create_method
from darkknowledge.models import create_model
from darkknowledge.utils import atomic_write_json, git_commit, machine_facts

VARIANTS = {"fp32": (False, False), "fp32+channels_last": (False, True), "bf16": (True, False),
            "bf16+channels_last": (True, True)}
MODELS = {
    "resnet20": {"backbone": "resnet_cifar", "n": 3, "width": 16, "augment": True},
    "small_cnn": {"backbone": "small_cnn", "in_channels": 3, "image_size": 32, "dropout": 0.3},
}


def rate(model_args: dict, bf16: bool, channels_last: bool, x: torch.Tensor, y: torch.Tensor, bs: int) -> float:
    torch.manual_seed(0)
    model = create_model("subclass", num_classes=2, subclasses=5, **model_args)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = create_method("subclass_teacher", model, None, beta=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps = x.shape[0] // bs
    t0 = 0.0
    for s in range(steps):
        if s == 2:  # two warm-up steps
            t0 = time.perf_counter()
        xb, yb = x[s * bs:(s + 1) * bs], y[s * bs:(s + 1) * bs]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        train_step(method, opt, xb, yb, bf16)
    return (steps - 2) * bs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bs = args.batch_size
    n = bs * (args.steps + 2)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 2, (n,), generator=g)
    t_start = time.perf_counter()
    results: dict[str, dict[str, float]] = {}
    for mname, margs in MODELS.items():
        rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v, (bf16, cl) in VARIANTS.items():
                rates[v].append(rate(margs, bf16, cl, x, y, bs))
        med = {v: statistics.median(r) for v, r in rates.items()}
        results[mname] = {**{f"{v}_samples_per_s": m for v, m in med.items()},
                          **{f"{v}_vs_fp32": m / med["fp32"] for v, m in med.items()}}
        for v in VARIANTS:
            print(f"{mname:10s} {v:20s} {med[v]:8.0f} samples/s  x{med[v] / med['fp32']:.2f} vs fp32", flush=True)
    if args.json:
        atomic_write_json(args.json, {"command": "python " + " ".join(sys.argv), "git_commit": git_commit(),
                                      "batch_size": bs, "steps": args.steps, "rounds": args.rounds,
                                      "wall_time_s": time.perf_counter() - t_start, "machine": machine_facts(),
                                      "results": results})


if __name__ == "__main__":
    main()
