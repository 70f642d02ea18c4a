"""Training throughput of plain, cached-teacher and live-teacher distillation, in one process.

  (a) student trained from labels                       — the baseline
  (b) student distilled from precomputed teacher logits — target (b)/(a) >= 0.9
  (c) student distilled from a live teacher             — target (c) >= 0.9 x ideal,
      ideal = 1 / (1/student_step + 1/teacher_forward)  (rates in samples/s)

Each variant runs the library's own code path (``Distiller`` + ``DistillationObjective``) on MNIST-shaped
random inputs; the variants are interleaved over several rounds and the median rate is reported.
Usage: python benchmarks/throughput.py [--rounds 5] [--steps 60] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from darkknowledge.losses import DistillationObjective
from darkknowledge.methods import Distiller
from darkknowledge.models import create_model
from darkknowledge.teachers import CachedTeacher, ModelTeacher
from darkknowledge.utils import machine_facts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bs, steps = args.batch_size, args.steps
    n = bs * steps
    x = torch.rand(n, 1, 28, 28)
    y = torch.randint(0, 10, (n,))
    teacher_net = create_model("mlp", hidden=[1200, 1200], dropout=0.5, input_dropout=0.2)
    live = ModelTeacher(teacher_net)
    with torch.no_grad():
        cached = CachedTeacher(torch.cat([live.member_logits(x[i:i + 2000]) for i in range(0, n, 2000)]))
    objective = DistillationObjective(temperature=20.0, w_soft=1.0, w_hard=0.1)

    def run_train(teacher) -> float:
        student = create_model("mlp", hidden=[800, 800])
        d = Distiller(student, teacher, objective)
        opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
        t0 = time.perf_counter()
        for s in range(steps):
            idx = torch.arange(s * bs, (s + 1) * bs)
            _, losses = d(x[idx], y[idx], idx)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return n / (time.perf_counter() - t0)

    def run_teacher_forward() -> float:
        t0 = time.perf_counter()
        for s in range(steps):
            live.soft_targets(x[s * bs:(s + 1) * bs], 20.0)
        return n / (time.perf_counter() - t0)

    rates: dict[str, list[float]] = {"plain": [], "cached": [], "live": [], "teacher_forward": []}
    run_train(None)  # warm-up
    for _ in range(args.rounds):
        rates["plain"].append(run_train(None))
        rates["cached"].append(run_train(cached))
        rates["live"].append(run_train(live))
        rates["teacher_forward"].append(run_teacher_forward())
    med = {k: statistics.median(v) for k, v in rates.items()}
    ideal = 1.0 / (1.0 / med["plain"] + 1.0 / med["teacher_forward"])
    # the same with the student step of distillation itself (b), which the live path also has to take
    ideal_b = 1.0 / (1.0 / med["cached"] + 1.0 / med["teacher_forward"])
    out = {
        "samples_per_s": med,
        "cached_over_plain": med["cached"] / med["plain"],
        "live_ideal_samples_per_s": ideal,
        "live_over_ideal": med["live"] / ideal,
        "live_ideal_from_cached_step_samples_per_s": ideal_b,
        "live_over_ideal_from_cached_step": med["live"] / ideal_b,
        "targets": {"cached_over_plain": 0.9, "live_over_ideal": 0.9},
        "settings": {"batch_size": bs, "steps": steps, "rounds": args.rounds, "student": "mlp 784-800-800-10",
                     "teacher": "mlp 784-1200-1200-10", "threads": torch.get_num_threads()},
        "machine": machine_facts(),
        "command": "python benchmarks/throughput.py " + " ".join(sys.argv[1:]),
    }
    print(f"(a) plain student training     {med['plain']:9.0f} samples/s")
    print(f"(b) cached-teacher distillation {med['cached']:9.0f} samples/s   (b)/(a) = {out['cached_over_plain']:.3f}"
          f"  (target >= 0.9)")
    print(f"    teacher forward only        {med['teacher_forward']:9.0f} samples/s")
    print(f"(c) live-teacher distillation   {med['live']:9.0f} samples/s   ideal {ideal:.0f}, "
          f"(c)/ideal = {out['live_over_ideal']:.3f}  (target >= 0.9)")
    print(f"    with the distillation step (b) as the student step: ideal {ideal_b:.0f}, "
          f"(c)/ideal = {out['live_over_ideal_from_cached_step']:.3f}")
    if args.json:
        from darkknowledge.utils import atomic_write_json

        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
