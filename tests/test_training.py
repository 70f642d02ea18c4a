"""The training engine: bit-identical resume after a real kill, bad input, run records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import darkknowledge as dk
from darkknowledge.config import validate
from darkknowledge.engine import RunExistsError, TrainingDivergedError, train
from darkknowledge.methods import Method, register_method

REPO = Path(__file__).resolve().parents[1]


def _cfg(out: Path, **kw) -> dict:
    cfg = {"name": "t", "seed": 3, "epochs": 4, "batch_size": 64, "threads": 1,
           "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [256, 256], "dropout": 0.2}},
           "data": {"dataset": "synthetic", "val_size": 2000, "augment_shift": 0},
           "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine"},
           "checkpoint_every_steps": 40, "out_dir": str(out)}
    cfg.update(kw)
    return cfg


def _write_yaml(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # end-to-end tier: a killed subprocess (exact resume is also pinned in test_callbacks)
def test_resume_after_kill_is_bit_identical(tmp_path):
    """Kill a real training subprocess mid-run, resume it, and compare with an uninterrupted run."""
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "darkknowledge", "train", "--no-progress"]
    subprocess.run(cmd + ["--config", str(_write_yaml(tmp_path / "ref.yaml", _cfg(ref_dir)))], check=True, env=env,
                   capture_output=True)

    cut_yaml = _write_yaml(tmp_path / "cut.yaml", _cfg(cut_dir))
    proc = subprocess.Popen(cmd + ["--config", str(cut_yaml)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = cut_dir / "checkpoint.pt"
    deadline = time.time() + 120
    # wait until the run is past its first epoch and has written a mid-epoch checkpoint, then kill it
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and (cut_dir / "best.safetensors").exists():
            break
        time.sleep(0.005)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (cut_dir / "run.json").exists()
    state = torch.load(ckpt, weights_only=False)["state"]
    assert 0 < state["global_step"] < 4 * 282

    r = subprocess.run(cmd + ["--config", str(cut_yaml), "--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(ref_dir / name), load_file(cut_dir / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    ra, rb = json.loads((ref_dir / "run.json").read_text()), json.loads((cut_dir / "run.json").read_text())
    assert [e["val"] for e in ra["epochs"]] == [e["val"] for e in rb["epochs"]]
    assert [e["train_loss"] for e in ra["epochs"]] == [e["train_loss"] for e in rb["epochs"]]


@register_method("_worse_after_first_epoch")
class _WorseAfterFirstEpoch(Method):
    """Cross-entropy on the labels in the first epoch and on wrong labels, ``(y + 1) mod C``, afterwards: the
    validation accuracy falls after epoch 1, so the epoch selected on validation is not the last."""

    def forward(self, x, y, idx=None, *, epoch: int = 0, step: int = 0):
        logits = self.student(x)
        target = y if epoch == 0 else (y + 1) % logits.shape[1]
        return logits, {"hard": torch.nn.functional.cross_entropy(logits, target)}


def test_the_model_selected_on_validation_is_kept_and_reported_when_it_is_not_the_last(tmp_path):
    """The student trained in place, best.safetensors and the record's final metrics are epoch 1's, not the
    last epoch's (loading last.safetensors instead of best.safetensors at the end fails here)."""
    from darkknowledge.metrics import classification_metrics, predict_logits
    from darkknowledge.models import read_model_meta

    cfg = validate(_cfg(tmp_path / "r", epochs=3, checkpoint_every_steps=0, method="_worse_after_first_epoch"))
    student = dk.create_model("mlp", in_features=64, hidden=[256, 256], dropout=0.2)
    rec = train(cfg, student=student, progress=False)
    acc = [e["val"]["accuracy"] for e in rec["epochs"]]
    assert acc[0] > max(acc[1:]) + 0.2, acc  # the wrong labels of epochs 2-3 make them worse
    assert rec["final"]["selected_epoch"] == 1
    best, last = tmp_path / "r" / "best.safetensors", tmp_path / "r" / "last.safetensors"
    assert (read_model_meta(best)["epoch"], read_model_meta(last)["epoch"]) == (1, 3)
    splits = dk.engine.prepare_data(cfg.data)

    def metrics(model, part):
        return classification_metrics(predict_logits(model, part.x), part.y)

    for model in (student, dk.load_model(best)):  # the selected weights, recomputed here from the model
        assert metrics(model, splits.val) == rec["epochs"][0]["val"] == rec["final"]["val"]
        assert metrics(model, splits.test) == rec["final"]["test"]
    assert metrics(dk.load_model(last), splits.test)["accuracy"] < rec["final"]["test"]["accuracy"] - 0.2
    on_disk = json.loads((tmp_path / "r" / "run.json").read_text())
    assert on_disk["final"] == rec["final"] and on_disk["epochs"] == rec["epochs"]
    assert on_disk["config"] == cfg.model_dump() and on_disk["seed"] == 3
    assert on_disk["dataset"] == {"name": "synthetic", "train": len(splits.train), "val": 2000, "test": len(splits.test),
                                  "input_shape": [64]}
    assert on_disk["machine"]["packages"]["torch"] == torch.__version__
    assert 0 < on_disk["cpu_time_s"] and 0 < on_disk["wall_time_s"]


def test_existing_run_is_not_overwritten(tmp_path):
    cfg = validate(_cfg(tmp_path / "r", epochs=1, checkpoint_every_steps=0))
    train(cfg, progress=False)
    with pytest.raises(RunExistsError):
        train(cfg, progress=False)
    changed = validate(_cfg(tmp_path / "r", epochs=1, checkpoint_every_steps=0, seed=9))
    with pytest.raises(RunExistsError, match="different config"):
        train(changed, resume=True, progress=False)


def test_distillation_run_and_class_mismatch(tmp_path):
    teacher = train(validate(_cfg(tmp_path / "teacher", epochs=1, checkpoint_every_steps=0)), progress=False)
    assert teacher["final"]["test"]["accuracy"] > 0.5
    tfile = str(tmp_path / "teacher" / "best.safetensors")
    student = _cfg(tmp_path / "student", epochs=1, checkpoint_every_steps=0,
                   model={"name": "mlp", "args": {"in_features": 64, "hidden": [32]}},
                   distill={"teachers": [tfile, tfile], "temperature": 4.0, "w_hard": 0.0})
    rec = train(validate(student), progress=False)
    # agreement and the teacher's test metrics, recomputed here from the saved files
    splits = dk.engine.prepare_data(validate(student).data)
    s_pred = dk.load_model(tmp_path / "student" / "best.safetensors").eval()(splits.test.x).argmax(1)
    t_model = dk.load_model(tfile).eval()
    t_logits = t_model(splits.test.x)  # a two-member ensemble of one file: its T = 1 distribution is the member's
    assert rec["final"]["test"]["agreement"] == pytest.approx(float((s_pred == t_logits.argmax(1)).float().mean()))
    assert rec["final"]["teacher_test"]["errors"] == int((t_logits.argmax(1) != splits.test.y).sum())
    assert rec["teacher_sha256"] == [dk.data.common.sha256_file(tfile)] * 2
    # the teacher's outputs on the training split were computed once, for both members, and read from the run's store
    from darkknowledge.store import StoredTeacher

    stored = StoredTeacher(tmp_path / "student" / "teacher_store")
    rows = torch.arange(len(splits.train))
    cached = stored.member_logits(splits.train.x, rows)
    with torch.no_grad():
        t_train = t_model(splits.train.x)
    assert cached.shape == (len(splits.train), 2, 10) and torch.allclose(cached, t_train[:, None].expand(-1, 2, -1))
    # a teacher with 5 classes for a 10-class student: error before training starts
    bad = dk.create_model("mlp", in_features=64, hidden=[8], num_classes=5)
    dk.save_model(bad, tmp_path / "bad.safetensors", "mlp", {"in_features": 64, "hidden": [8], "num_classes": 5})
    student["distill"]["teachers"] = [str(tmp_path / "bad.safetensors")]
    student["out_dir"] = str(tmp_path / "student2")
    with pytest.raises(ValueError, match="classes"):
        train(validate(student), progress=False)
    assert not (tmp_path / "student2" / "checkpoint.pt").exists()


def test_nan_input_stops_with_step_and_keeps_checkpoint(tmp_path):
    """A NaN reaching the logits stops training naming epoch, step and batch; the last checkpoint survives."""
    from darkknowledge.engine import epoch_order, prepare_data

    cfg = validate(_cfg(tmp_path / "nan", epochs=2, checkpoint_every_steps=20))
    splits = prepare_data(cfg.data)
    order = epoch_order(len(splits.train), cfg.seed, 0)
    bad = int(order[100 * cfg.batch_size + 5])  # in the 101st batch of epoch 1
    x = splits.train.x.clone()
    x[bad] = float("nan")
    splits.train = type(splits.train)(x, splits.train.y, splits.train.index)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 101") as e:
        train(cfg, splits=splits, progress=False)
    assert str(int(splits.train.index[bad])) in str(e.value)
    ck = torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=False)
    assert ck["state"]["global_step"] == 100
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_bad_temperature_and_labels():
    with pytest.raises(ValueError):
        dk.DistillationObjective(temperature=0)
    with pytest.raises(ValueError):
        dk.DistillationObjective(temperature=-1.0)
    with pytest.raises(Exception, match="temperature"):
        validate({"distill": {"teachers": ["x"], "temperature": 0}})


def test_empty_dataset_and_bad_labels_are_clear_errors(tmp_path):
    from darkknowledge.engine import prepare_data

    cfg = validate(_cfg(tmp_path / "e", epochs=1))
    splits = prepare_data(cfg.data)
    empty = type(splits.train)(splits.train.x[:0], splits.train.y[:0], splits.train.index[:0])
    with pytest.raises(ValueError, match="empty"):
        train(cfg, splits=type(splits)(empty, splits.val, splits.test, 10, "synthetic"), progress=False)
    bad = type(splits.train)(splits.train.x, splits.train.y + 5, splits.train.index)
    with pytest.raises(ValueError, match="out of range"):
        train(cfg, splits=type(splits)(bad, splits.val, splits.test, 10, "synthetic"), progress=False)
    with pytest.raises(ValueError, match="empty"):
        train(validate(_cfg(tmp_path / "f", data={"dataset": "synthetic", "val_size": 2000, "include_classes": []})),
              progress=False)
