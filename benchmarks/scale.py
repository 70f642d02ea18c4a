"""Scale-out figures, each a ratio (or a difference) measured in this one invocation:

* ``local_speedup_2_workers`` — wall time of 4 equal small jobs on a local pool of 1 worker over the same
  jobs on 2 workers (1 torch thread per job both times; the ideal on 2 free cores is 2.0);
* ``ddp_2proc_over_1proc`` — training samples/s of one run under ``torchrun --nproc_per_node 2`` (gloo,
  1 thread per rank) over the same run in 1 process (1 thread): per step each rank computes half the batch,
  then the gradients are all-reduced through gloo over loopback TCP;
* ``ray_overhead_s_per_job`` — (wall of K tiny jobs as Ray tasks, one at a time) / K minus the mean wall of
  the same job in this process; Ray's start-up is reported separately (``ray_init_s``).

Usage: python benchmarks/scale.py [--out results/benchmarks/scale.json] [--quick]
Run it on an otherwise idle machine: the ratios compare runs of this invocation only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from darkknowledge.engine.jobs import Job, LocalExecutor, cpu_count, run_job, run_jobs
from darkknowledge.utils import atomic_write_json, git_commit, machine_facts


def job_cfg(out: Path, seed: int, epochs: int, fraction: float, hidden: list[int]) -> dict:
    return {"name": f"bench{seed}", "seed": seed, "epochs": epochs, "batch_size": 128, "threads": 1,
            "model": {"name": "mlp", "args": {"in_features": 64, "hidden": hidden}},
            "data": {"dataset": "synthetic", "val_size": 1000, "fraction": fraction},
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "out_dir": str(out)}


def pool_wall(tmp: Path, workers: int, n_jobs: int, epochs: int) -> float:
    jobs = [Job(job_cfg(tmp / f"w{workers}_{k}", k, epochs, 1.0, [512, 512])) for k in range(n_jobs)]
    ex = LocalExecutor(workers, threads=1)
    try:
        # the workers are started (torch imported) before the clock: the figure is about running jobs
        list(ex.pool.map(abs, range(workers)))
        t0 = time.perf_counter()
        run_jobs(jobs, ex, progress=False)
        return time.perf_counter() - t0
    finally:
        ex.close()


def ddp_rate(tmp: Path, nproc: int, epochs: int) -> float:
    cfg = job_cfg(tmp / f"ddp{nproc}", 0, epochs, 1.0, [800, 800])
    path = tmp / f"ddp{nproc}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "darkknowledge", "train", "--config", str(path), "--no-progress"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    rec = json.loads((Path(cfg["out_dir"]) / "run.json").read_text())
    rates = [e["samples_per_s"] for e in rec["epochs"]]
    return sorted(rates)[len(rates) // 2]  # the median epoch


def ray_overhead(tmp: Path, k: int) -> dict[str, float]:
    import ray

    from darkknowledge.engine.jobs import RayExecutor

    run_job(Job(job_cfg(tmp / "local_warm", 98, 1, 0.05, [16])))  # first-call imports and data loading
    local = []
    for i in range(k):
        t0 = time.perf_counter()
        run_job(Job(job_cfg(tmp / f"local{i}", i, 1, 0.05, [16])))
        local.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ex = RayExecutor(workers=1)
    init = time.perf_counter() - t0
    try:
        run_jobs([Job(job_cfg(tmp / "warm", 99, 1, 0.05, [16]))], ex, progress=False)  # the worker's imports
        t0 = time.perf_counter()
        for i in range(k):  # one at a time: the per-job round trip, not parallelism
            run_jobs([Job(job_cfg(tmp / f"ray{i}", i, 1, 0.05, [16]))], ex, progress=False)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    mean_local = sum(local) / k
    return {"ray_overhead_s_per_job": wall / k - mean_local, "ray_wall_s_per_job": wall / k,
            "local_wall_s_per_job": mean_local, "ray_init_s": init, "ray_jobs": k}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/benchmarks/scale.json")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a check that it runs, not a measurement)")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    epochs = 1 if args.quick else 10
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="dk-scale-"))
    try:
        w1 = pool_wall(tmp, 1, 4, epochs)
        w2 = pool_wall(tmp, 2, 4, epochs)
        r1 = ddp_rate(tmp, 1, 1 if args.quick else 3)
        r2 = ddp_rate(tmp, 2, 1 if args.quick else 3)
        ray = None if args.no_ray else ray_overhead(tmp, 2 if args.quick else 8)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {
        "local_speedup_2_workers": w1 / w2, "local_wall_s": {"1_worker": w1, "2_workers": w2},
        "ddp_2proc_over_1proc": r2 / r1, "ddp_samples_per_s": {"1_proc": r1, "2_proc": r2},
        **({"ray_overhead_s_per_job": ray["ray_overhead_s_per_job"], "ray": ray} if ray else {}),
        "settings": {"quick": args.quick, "pool_jobs": 4, "pool_job": "mlp 64-512-512-10, synthetic 18k, "
                     f"{epochs} epochs, 1 thread", "ddp_run": "mlp 64-800-800-10, batch 128, 1 thread per rank"},
        "cores": cpu_count(), "machine": machine_facts(), "git_commit": git_commit(),
        "command": "python benchmarks/scale.py" + (" --quick" if args.quick else "") + (" --no-ray" if args.no_ray
                                                                                      else ""),
        "wall_time_s": time.perf_counter() - t_start,
    }
    atomic_write_json(args.out, res)
    print(f"local_speedup_2_workers = {res['local_speedup_2_workers']:.3f}  ({w1:.1f} s on 1 worker, "
          f"{w2:.1f} s on 2)")
    print(f"ddp_2proc_over_1proc   = {res['ddp_2proc_over_1proc']:.3f}  ({r1:.0f} vs {r2:.0f} samples/s)")
    if ray:
        print(f"ray_overhead_s_per_job = {ray['ray_overhead_s_per_job']:.3f}  (Ray start-up {ray['ray_init_s']:.1f} s)")


if __name__ == "__main__":
    main()
