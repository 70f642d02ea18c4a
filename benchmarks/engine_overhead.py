"""The engine beside a hand-written KD loop, end to end, in one process: ratio = plain time / engine time.

Both distil the same fixed teacher (a saved ``small_cnn``) into the same student (a narrower ``small_cnn``)
on the same in-memory data (an MNIST subset; random MNIST-shaped inputs with ``--synthetic`` or when MNIST is
absent), with the same epochs, batch, SGD settings and loss (Hinton et al. 2015 §2:
``w_soft · T² · CE(p_T, q_T) + w_hard · CE(y, q_1)``), on one thread:

  engine  ``dk.train(cfg, splits=...)`` with ``distill.teachers = [the teacher file]``: everything a run does
          — teacher file hashed, outputs on the transfer set cached, validation and selection every epoch,
          checkpoints, the selected model's test metrics, the teacher's test metrics and agreement, run.json
  plain   the loop one writes by hand: the teacher's forward on every batch, the loss, backward, step; the
          validation accuracy each epoch to keep the best weights; the best model's test accuracy at the end
          (evaluation at ``--plain-eval-batch``)

``--live-teacher``: the engine too runs the teacher on every batch (``distill.cache: false``, as with
``data.augment``), so the two do the same work per step and the ratio is the engine's own overhead; by default
the engine caches the teacher's outputs on the transfer set, as it does for unaugmented data.

The two alternate over ``--rounds`` rounds (after a warm-up of both) and the medians are compared (each
round's own ratio is reported too). The
engine's time inside its epochs (training steps only, from its ``samples_per_s``) is reported beside the
plain loop's, so that what remains — the fixed cost of a run — is visible.

Usage: python benchmarks/engine_overhead.py [--rounds 3] [--epochs 3] [--train 10000] [--val 1000]
       [--test 10000] [--threads 1] [--data-dir DIR] [--synthetic] [--json results/benchmarks/engine_overhead.json]
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import darkknowledge as dk
from darkknowledge.config import validate
from darkknowledge.data import Splits, TensorData
from darkknowledge.utils import atomic_write_json, git_commit, machine_facts

STUDENT = {"width": 16, "dropout": 0.2}
TEACHER = {"width": 32, "dropout": 0.2}
T, W_SOFT, W_HARD, LR, MOMENTUM = 4.0, 1.0, 0.1, 0.05, 0.9


def data(args) -> Splits:
    """``args.train`` / ``args.val`` / ``args.test`` examples of MNIST, or random MNIST-shaped inputs."""
    n = {"train": args.train, "val": args.val, "test": args.test}
    if not args.synthetic:
        try:
            sp = dk.data.load_dataset("mnist", args.data_dir, val_size=args.val, download=False)
            parts = {k: getattr(sp, k) for k in n}
            return Splits(*(TensorData(p.x[:n[k]], p.y[:n[k]]) for k, p in parts.items()), 10, "mnist")
        except (FileNotFoundError, OSError, RuntimeError, ValueError) as e:
            print(f"MNIST not found ({str(e).splitlines()[0][:80]}): random inputs", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    return Splits(*(TensorData(torch.rand(m, 1, 28, 28, generator=g), torch.randint(0, 10, (m,), generator=g))
                    for m in n.values()), 10, "synthetic")


def engine(splits: Splits, teacher_file: Path, args) -> tuple[float, float]:
    """Seconds for one ``dk.train`` run, and the seconds of its training steps (from ``samples_per_s``)."""
    with tempfile.TemporaryDirectory(prefix="dk-overhead-") as tmp:
        cfg = validate({"name": "engine", "seed": 0, "epochs": args.epochs, "batch_size": args.batch_size,
                        "threads": args.threads, "model": {"name": "small_cnn", "args": STUDENT},
                        "data": {"dataset": splits.name, "val_size": args.val},
                        "optim": {"name": "sgd", "lr": LR, "momentum": MOMENTUM, "schedule": "constant"},
                        "distill": {"teachers": [str(teacher_file)], "temperature": T, "w_soft": W_SOFT,
                                    "w_hard": W_HARD, "cache": not args.live_teacher}, "out_dir": tmp,
                        "device": "cpu"})
        t0 = time.perf_counter()
        rec = dk.train(cfg, splits=splits, progress=False)
        total = time.perf_counter() - t0
    return total, sum(len(splits.train) / e["samples_per_s"] for e in rec["epochs"])


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum()) for i in range(0, len(x), bs))
    return correct / len(x)


def plain(splits: Splits, teacher: torch.nn.Module, args) -> tuple[float, float]:
    """Seconds for the hand-written loop, and the seconds of its training steps."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    student = dk.create_model("small_cnn", **STUDENT)
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM)
    teacher.eval()
    x, y, bs = splits.train.x, splits.train.y, args.batch_size
    best, best_acc, steps_s = None, -1.0, 0.0
    for epoch in range(args.epochs):
        t_epoch = time.perf_counter()
        student.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x), bs):
            idx = order[i:i + bs]
            xb, yb = x[idx], y[idx]
            with torch.no_grad():
                soft = F.softmax(teacher(xb) / T, dim=1)
            logits = student(xb)
            loss = W_SOFT * T * T * F.cross_entropy(logits / T, soft) + W_HARD * F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps_s += time.perf_counter() - t_epoch
        acc = accuracy(student, splits.val.x, splits.val.y, args.plain_eval_batch)
        if acc > best_acc:
            best, best_acc = copy.deepcopy(student.state_dict()), acc
    student.load_state_dict(best)
    accuracy(student, splits.test.x, splits.test.y, args.plain_eval_batch)
    return time.perf_counter() - t0, steps_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=10_000)
    ap.add_argument("--val", type=int, default=1000)
    ap.add_argument("--test", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--plain-eval-batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--synthetic", action="store_true", help="random MNIST-shaped inputs instead of MNIST")
    ap.add_argument("--live-teacher", action="store_true", help="no cached teacher outputs in the engine either")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("darkknowledge").setLevel(logging.ERROR)  # the random teacher's guidance warning
    splits = data(args)
    torch.manual_seed(1)
    teacher = dk.create_model("small_cnn", **TEACHER)
    with tempfile.TemporaryDirectory(prefix="dk-overhead-") as tmp:
        teacher_file = Path(tmp) / "teacher.safetensors"
        dk.save_model(teacher, teacher_file, "small_cnn", TEACHER)
        teacher = dk.load_model(teacher_file)  # the very weights the engine loads
        times: dict[str, list[float]] = {"engine": [], "plain": []}
        steps: dict[str, list[float]] = {"engine": [], "plain": []}
        runs = {"engine": lambda: engine(splits, teacher_file, args), "plain": lambda: plain(splits, teacher, args)}
        for name in runs:  # warm-up: first-use imports and allocations
            runs[name]()
        for r in range(args.rounds):
            for name in (("engine", "plain") if r % 2 == 0 else ("plain", "engine")):
                total, in_steps = runs[name]()
                times[name].append(total)
                steps[name].append(in_steps)
                print(f"round {r + 1} {name:6s} {total:7.2f} s  (training steps {in_steps:6.2f} s)", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_steps = {k: statistics.median(v) for k, v in steps.items()}
    out = {
        "seconds": times,
        "steps_seconds": steps,
        "median_s": med,
        "median_steps_s": med_steps,
        "fixed_s": {k: med[k] - med_steps[k] for k in med},
        "ratio": med["plain"] / med["engine"],
        # each round's pair ran back to back: its ratio is less exposed to a change of load between rounds
        "round_ratios": [p / e for p, e in zip(times["plain"], times["engine"])],
        "steps_ratio": med_steps["plain"] / med_steps["engine"],
        "target": {"ratio": 0.95},
        "settings": {"epochs": args.epochs, "train": len(splits.train), "val": len(splits.val),
                     "test": len(splits.test), "data": splits.name, "batch_size": args.batch_size,
                     "plain_eval_batch": args.plain_eval_batch, "rounds": args.rounds,
                     "threads": torch.get_num_threads(), "student": {"small_cnn": STUDENT},
                     "teacher": {"small_cnn": TEACHER}, "engine_caches_teacher_outputs": not args.live_teacher},
        "git_commit": git_commit(),
        "machine": machine_facts(),
        "command": "python benchmarks/engine_overhead.py " + " ".join(sys.argv[1:]),
    }
    print(f"engine {med['engine']:.2f} s, plain {med['plain']:.2f} s (medians of {args.rounds}): "
          f"ratio plain/engine = {out['ratio']:.3f} (target >= 0.95; by round "
          f"{', '.join(f'{x:.3f}' for x in out['round_ratios'])}); in the training steps "
          f"{out['steps_ratio']:.3f}; fixed cost engine {out['fixed_s']['engine']:.2f} s, "
          f"plain {out['fixed_s']['plain']:.2f} s")
    if args.json:
        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
