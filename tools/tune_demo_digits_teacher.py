"""How the digits demo teacher was chosen on validation (2 seeds, 4 recipes). Output: results/demo-digits/tuning/teacher.log
(`python tools/tune_demo_digits_teacher.py > results/demo-digits/tuning/teacher.log`)."""
import tempfile

import torch

from darkknowledge.config import validate
from darkknowledge.engine import train

torch.set_num_threads(1)
data = {"dataset": "digits", "val_size": 200}
def teacher(d, seed, drop, indrop, shift, epochs):
    return {"name": "t", "seed": seed, "epochs": epochs, "batch_size": 32, "out_dir": f"{d}/t_{drop}_{indrop}_{shift}_{epochs}",
            "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [256, 256], "dropout": drop, "input_dropout": indrop, "max_norm": 15.0}},
            "data": {**data, "augment_shift": shift}, "optim": {"name": "adam", "lr": 1e-3, "schedule": "cosine"}}
res = {}
with tempfile.TemporaryDirectory() as d:
    for seed in range(2):
        for drop, indrop, shift, ep in [(0.5, 0.2, 1, 40), (0.3, 0.0, 0, 60), (0.5, 0.1, 0, 60), (0.2, 0.0, 0, 100)]:
            r = train(validate(teacher(d + f"/s{seed}", seed, drop, indrop, shift, ep)), progress=False)
            res.setdefault((drop, indrop, shift, ep), []).append((r["final"]["val"]["accuracy"], r["final"]["test"]["accuracy"]))
            print(seed, drop, indrop, shift, ep, res[(drop, indrop, shift, ep)][-1], flush=True)
for k, v in res.items():
    print(k, "val", sum(a for a, _ in v) / len(v), "test", sum(b for _, b in v) / len(v))
