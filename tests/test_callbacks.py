"""Callbacks around the loop (``dk.train(cfg, callbacks=[...])``, ``dk.distill(..., callbacks=[...])``): a user
callback sees every step and every epoch row; one that raises stops the run with the last checkpoint kept, and a
resume then ends exactly as the uninterrupted run; the built-in curve and mid-epoch checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import darkknowledge as dk
from darkknowledge.config import validate
from darkknowledge.engine import StepInfo, train
from darkknowledge.metrics import classification_metrics, predict_logits

STEPS = 36  # 18,000 training examples (synthetic, 2,000 for validation) in batches of 500


def _cfg(out: Path, **kw) -> dict:
    cfg = {"name": "cb", "seed": 1, "epochs": 3, "batch_size": 500, "threads": 1,
           "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [16]}},
           "data": {"dataset": "synthetic", "val_size": 2000}, "optim": {"name": "sgd", "lr": 0.05},
           "out_dir": str(out)}
    cfg.update(kw)
    return cfg


class Recorder(dk.Callback):
    def __init__(self):
        self.calls: list[str] = []
        self.steps: list[StepInfo] = []
        self.rows: list[dict] = []
        self.record: dict | None = None

    def on_train_start(self, run):
        self.calls.append("train_start")

    def on_epoch_start(self, run):
        self.calls.append(f"epoch_start {run.state.epoch}")

    def on_step_end(self, run, step):
        self.steps.append(step)

    def on_epoch_end(self, run, row):
        self.calls.append(f"epoch_end {row['epoch']}")
        self.rows.append(json.loads(json.dumps(row)))

    def on_train_end(self, run, record):
        self.calls.append("train_end")
        self.record = record
        record["seen_by_callback"] = len(self.rows)  # a callback may add to the record before run.json


class Stopped(Exception):
    pass


class Stop(dk.Callback):
    """Raises at the end of epoch ``epoch`` (1-based) or after global step ``step``."""

    def __init__(self, epoch: int | None = None, step: int | None = None):
        self.epoch, self.step = epoch, step

    def on_step_end(self, run, step):
        if step.global_step == self.step:
            raise Stopped(f"stop at step {self.step}")

    def on_epoch_end(self, run, row):
        if row["epoch"] == self.epoch:
            raise RuntimeError(f"stop after epoch {self.epoch}")


def test_a_user_callback_sees_every_step_and_epoch_row(tmp_path):
    cb = Recorder()
    rec = dk.train(validate(_cfg(tmp_path / "r")), progress=False, callbacks=[cb])
    assert cb.calls == ["train_start", "epoch_start 0", "epoch_end 1", "epoch_start 1", "epoch_end 2",
                        "epoch_start 2", "epoch_end 3", "train_end"]
    assert cb.rows == rec["epochs"] and len(cb.rows) == 3
    assert [(s.epoch, s.step, s.global_step) for s in cb.steps] == \
        [(e, i, e * STEPS + i + 1) for e in range(3) for i in range(STEPS)]
    assert {s.n for s in cb.steps} == {500} and not any(s.last for s in cb.steps)
    # each epoch's logged train loss is the example-weighted mean of its steps' batch means
    for e in range(3):
        steps = cb.steps[e * STEPS:(e + 1) * STEPS]
        mean = sum(s.losses["hard"] * s.n for s in steps) / sum(s.n for s in steps)
        assert rec["epochs"][e]["train_loss"]["hard"] == pytest.approx(mean, rel=1e-12)
    on_disk = json.loads((tmp_path / "r" / "run.json").read_text())
    assert cb.record is rec and on_disk["seen_by_callback"] == 3


def test_a_callback_that_raises_stops_the_run_and_a_resume_ends_as_uninterrupted(tmp_path):
    ref = train(validate(_cfg(tmp_path / "ref")), progress=False)
    cfg = validate(_cfg(tmp_path / "cut"))
    with pytest.raises(RuntimeError, match="stop after epoch 2"):
        train(cfg, progress=False, callbacks=[Stop(epoch=2)])
    assert not (tmp_path / "cut" / "run.json").exists()
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert (ck["state"]["epoch"], ck["state"]["global_step"], len(ck["history"])) == (2, 2 * STEPS, 2)
    rec = train(cfg, resume=True, progress=False)
    for name in ("best.safetensors", "last.safetensors"):
        a, b = load_file(tmp_path / "ref" / name), load_file(tmp_path / "cut" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert len(rec["epochs"]) == len(ref["epochs"]) == 3
    assert rec["epochs"] == [{**e, "samples_per_s": r["samples_per_s"]} for e, r in zip(ref["epochs"], rec["epochs"])]
    assert rec["final"] == ref["final"]


def test_a_step_hook_that_raises_keeps_the_last_mid_epoch_checkpoint(tmp_path):
    """The built-in Checkpoint runs before user callbacks: with checkpoints every 8 steps of an epoch, a callback
    raising after global step 52 (step 16 of epoch 2) leaves that step's checkpoint; raising after step 50, the
    one of step 8 of epoch 2 (global step 44)."""
    for stop, want in ((52, (1, 16, 52)), (50, (1, 8, 44))):
        out = tmp_path / str(stop)
        with pytest.raises(Stopped):
            train(validate(_cfg(out, checkpoint_every_steps=8)), progress=False, callbacks=[Stop(step=stop)])
        st = torch.load(out / "checkpoint.pt", weights_only=False)["state"]
        assert (st["epoch"], st["step_in_epoch"], st["global_step"]) == want
        assert not (out / "run.json").exists()


def test_the_curve_callback_evaluates_the_test_set_every_n_steps(tmp_path):
    rec = train(validate(_cfg(tmp_path / "r", eval_every_steps=10, max_steps=45)), progress=False)
    assert [p["step"] for p in rec["curve"]] == [0, 10, 20, 30, 40, 45]
    assert len(rec["epochs"]) == 2  # the epoch in progress at max_steps ends there and is validated
    # the last point is the test metrics of the weights at step 45 (last.safetensors), recomputed here
    splits = dk.engine.prepare_data(validate(_cfg(tmp_path / "r")).data)
    last = dk.load_model(tmp_path / "r" / "last.safetensors")
    assert rec["curve"][-1] == {"step": 45, **classification_metrics(predict_logits(last, splits.test.x), splits.test.y)}


def test_distill_passes_callbacks_through():
    torch.manual_seed(0)
    x, y = torch.randn(600, 8), torch.randint(0, 3, (600,))
    teacher = torch.nn.Linear(8, 3)
    cb = Recorder()
    dk.distill(torch.nn.Linear(8, 3), teacher, x, y, epochs=2, batch_size=100, progress=False, callbacks=[cb])
    assert [c for c in cb.calls if c.startswith("epoch_end")] == ["epoch_end 1", "epoch_end 2"]
    assert len(cb.steps) == 2 * 6 and set(cb.steps[0].losses) == {"soft", "hard"}
