"""Throughput of the batched Eq. 5 solver (Hinton et al. 2015, §5.2) against per-example scipy, in one process.

  baseline: ``darkknowledge.specialists.combine_reference`` — scipy's exact-Hessian trust-region Newton
            (``trust-exact``) on one example at a time, numpy, BLAS limited to the same threads
  batched:  ``darkknowledge.specialists.combine`` — SQUAREM-accelerated EM for the whole batch in torch

For each problem (C = 242 classes, like Omniglot's characters, with 20 overlapping specialists; C = 10, like
CIFAR-10, with 4 overlapping specialists) the special sets come from ``confusable_clusters`` on block-structured
predictions (``overlap=1``: every class in its 2 nearest clusters), the generalist and specialist probabilities are
noisy softmaxes peaked on a true class, and only the generalist's top class selects the active specialists (n = 1).
The batched solver runs on all ``--examples`` (median of ``--rounds``); scipy on the first ``--ref-examples`` of
them (its cost per example does not depend on the batch). Both must reach the same objective on the shared
examples: the record holds the largest objective difference. ``solver_speedup`` is the smaller of the two problems'
ratios of examples per second, batched / scipy (target >= 100).
Usage: python benchmarks/specialists_solver.py [--examples 2000] [--ref-examples 200] [--rounds 3] [--threads 1]
       [--out results/benchmarks/specialists_solver.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from darkknowledge.specialists import (
    active_specialists,
    combine,
    combine_objective,
    combine_reference,
    confusable_clusters,
)
from darkknowledge.utils import atomic_write_json, git_commit, machine_facts

PROBLEMS = {"C242": {"classes": 242, "specialists": 20}, "C10": {"classes": 10, "specialists": 4}}


def make_problem(c: int, k: int, n: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor], list[list[int]]]:
    """Generalist and specialist probabilities for ``n`` examples and the special sets (the library's covariance
    clustering of the generalist's predictions on 4,000 other examples). Each class has a hidden group (``k``
    groups on a ring); the generalist confuses a class with its group, and half as much with the next group."""
    g = torch.Generator().manual_seed(seed)
    block = torch.randperm(c, generator=g) % k

    def generalist(m: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, c, (m,), generator=g)
        by = block[y][:, None]
        confusable = (block[None, :] == by).double() + 0.5 * (block[None, :] == (by + 1) % k).double()
        z = torch.randn(m, c, generator=g, dtype=torch.float64) + 3.0 * confusable
        z[torch.arange(m), y] += 1.5
        return torch.softmax(z, 1), y

    sets = confusable_clusters(generalist(4000)[0], k, overlap=1, seed=seed).clusters
    p_g, y = generalist(n)
    p_specs = []
    for s in sets:
        slot = torch.full((c,), len(s), dtype=torch.long)
        slot[s] = torch.arange(len(s))
        zs = 2.0 * torch.randn(n, len(s) + 1, generator=g, dtype=torch.float64)
        zs[torch.arange(n), slot[y]] += 4.0  # the specialist is sharper about its own classes
        p_specs.append(torch.softmax(zs, 1))
    return p_g, p_specs, sets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--ref-examples", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads for both solvers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/benchmarks/specialists_solver.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, n_ref = args.examples, min(args.ref_examples, args.examples)
    t_start = time.perf_counter()
    results: dict[str, dict] = {}
    with threadpool_limits(args.threads):
        for name, prob in PROBLEMS.items():
            p_g, p_specs, sets = make_problem(prob["classes"], prob["specialists"], n, args.seed)
            combine(p_g[:50], [p[:50] for p in p_specs], sets)  # warm-up
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                q, info = combine(p_g, p_specs, sets, return_info=True)
                times.append(time.perf_counter() - t0)
            t_batched = statistics.median(times)
            t0 = time.perf_counter()
            q_ref, ref = combine_reference(p_g[:n_ref], [p[:n_ref] for p in p_specs], sets, return_info=True)
            t_ref = time.perf_counter() - t0
            act = active_specialists(p_g[:n_ref], sets)
            f = combine_objective(q[:n_ref].log(), p_g[:n_ref], [p[:n_ref] for p in p_specs], sets, act)
            f_ref = combine_objective(torch.as_tensor(q_ref).log(), p_g[:n_ref], [p[:n_ref] for p in p_specs], sets,
                                      act)
            rate, rate_ref = n / t_batched, n_ref / t_ref
            solved = active_specialists(p_g, sets).any(1)
            results[name] = {
                "classes": prob["classes"], "specialists": len(sets),
                "set_sizes": [len(s) for s in sets], "examples": n, "ref_examples": n_ref,
                "examples_with_active_specialists": int(solved.sum()),
                "batched_s": t_batched, "batched_s_rounds": times, "scipy_s": t_ref,
                "batched_examples_per_s": rate, "scipy_examples_per_s": rate_ref, "speedup": rate / rate_ref,
                "batched_iterations_max": info["iterations"], "batched_iterations_mean": info["mean_iterations"],
                "batched_max_grad": info["max_grad"], "batched_max_active": info["max_active"],
                "scipy_iterations_mean": float(np.mean(ref["iterations"][act.any(1).numpy()])),
                "scipy_iterations_max": int(ref["iterations"].max()),
                "objective_max_abs_diff": float((f - f_ref).abs().max()),
                "objective_max_batched_minus_scipy": float((f - f_ref).max()),
            }
            r = results[name]
            print(f"{name:5s} batched {rate:10.0f} ex/s ({r['batched_iterations_mean']:.1f} mean / "
                  f"{r['batched_iterations_max']} max EM steps)  scipy {rate_ref:8.1f} ex/s "
                  f"({r['scipy_iterations_mean']:.1f} Newton steps)  speedup x{r['speedup']:.0f}  "
                  f"max |dF| {r['objective_max_abs_diff']:.1e}", flush=True)
    speedup = min(r["speedup"] for r in results.values())
    print(f"solver_speedup {speedup:.0f}  (target >= 100)")
    atomic_write_json(args.out, {
        "command": "python " + " ".join(sys.argv), "git_commit": git_commit(), "solver_speedup": speedup,
        "target": {"solver_speedup": 100}, "settings": {"examples": n, "ref_examples": n_ref, "rounds": args.rounds,
                                                        "threads": args.threads, "seed": args.seed},
        "wall_time_s": time.perf_counter() - t_start, "machine": machine_facts(), "results": results})


if __name__ == "__main__":
    main()
