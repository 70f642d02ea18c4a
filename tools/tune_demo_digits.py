"""Digits demo settings on validation (`python tools/tune_demo_digits.py full|quick >
results/demo-digits/tuning/students_<mode>.log`): teacher (dropout 0.5, input dropout 0.1, no shift, batch 32) then
students on the 20% transfer set, labels vs distilled at T x w_hard, full (60/60 epochs) and quick (20/30)."""
import itertools
import json
import sys
import tempfile

import torch

from darkknowledge.config import validate
from darkknowledge.engine import train

torch.set_num_threads(1)
data = {"dataset": "digits", "val_size": 200}
mode = sys.argv[1]
t_ep, s_ep = (60, 60) if mode == "full" else (20, 30)
res = {}
with tempfile.TemporaryDirectory() as d:
    for seed in range(3):
        t = {"name": "t", "seed": seed, "epochs": t_ep, "batch_size": 32, "out_dir": f"{d}/t{seed}",
             "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [256, 256], "dropout": 0.5, "input_dropout": 0.1, "max_norm": 15.0}},
             "data": data, "optim": {"name": "adam", "lr": 1e-3, "schedule": "cosine"}}
        rt = train(validate(t), progress=False)
        res.setdefault("teacher", []).append((rt["final"]["val"]["accuracy"], rt["final"]["test"]["accuracy"]))
        base = {"name": "b", "seed": seed, "epochs": s_ep, "batch_size": 32, "out_dir": f"{d}/b{seed}",
                "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [64, 64]}},
                "data": {**data, "fraction": 0.2}, "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine"}}
        rb = train(validate(base), progress=False)
        res.setdefault("baseline", []).append((rb["final"]["val"]["accuracy"], rb["final"]["test"]["accuracy"]))
        for T, wh in itertools.product([2.0, 4.0, 8.0, 20.0], [0.1, 0.5]):
            c = {**base, "out_dir": f"{d}/d{seed}_{T}_{wh}", "distill": {"teachers": [f"{d}/t{seed}/best.safetensors"], "temperature": T, "w_hard": wh}}
            r = train(validate(c), progress=False)
            res.setdefault(f"T{T}_wh{wh}", []).append((r["final"]["val"]["accuracy"], r["final"]["test"]["accuracy"]))
        print(seed, json.dumps({k: v[-1] for k, v in res.items()}), flush=True)
for k, v in res.items():
    print(f"{mode} {k:14s} val {sum(a for a, _ in v) / len(v):.4f}  test {sum(b for _, b in v) / len(v):.4f}  wins(val) {[round(a,3) for a,_ in v]}")
