"""The engine's contracts: the method call (epoch, step), one writer per run directory, teacher identity on
resume, byte-deterministic model files, and every dataset / model an experiment records is loadable."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import darkknowledge as dk
from darkknowledge.config import validate
from darkknowledge.data import list_datasets
from darkknowledge.engine import RunLock, RunLockedError, TeacherMismatchError, train
from darkknowledge.methods import Method, register_method

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def _cfg(out: Path, **kw) -> dict:
    cfg = {"name": "e", "seed": 1, "epochs": 2, "batch_size": 500, "threads": 1,
           "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [16]}},
           "data": {"dataset": "synthetic", "val_size": 2000}, "optim": {"name": "sgd", "lr": 0.05},
           "out_dir": str(out)}
    cfg.update(kw)
    return cfg


CALLS: list[tuple[int, int]] = []


@register_method("_record_calls")
class _RecordCalls(Method):
    """Cross-entropy, remembering the (epoch, step) keywords the engine passes."""

    def forward(self, x, y, idx=None, *, epoch: int = 0, step: int = 0):
        CALLS.append((epoch, step))
        logits = self.student(x)
        return logits, {"hard": torch.nn.functional.cross_entropy(logits, y)}


def test_engine_passes_epoch_and_global_step(tmp_path):
    CALLS.clear()
    rec = train(validate(_cfg(tmp_path / "r", method="_record_calls")), progress=False)
    steps = -(-rec["dataset"]["train"] // 500)
    assert CALLS == [(e, e * steps + i) for e in range(2) for i in range(steps)]


def test_a_locked_run_directory_is_refused_and_untouched(tmp_path):
    out = tmp_path / "r"
    with RunLock(out):
        before = sorted(p.name for p in out.iterdir())
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            train(validate(_cfg(out)), progress=False)
        assert sorted(p.name for p in out.iterdir()) == before
    rec = train(validate(_cfg(out)), progress=False)  # free again once released
    assert json.loads((out / "run.json").read_text()) == rec and len(rec["epochs"]) == 2


def test_two_processes_on_one_directory_never_both_proceed(tmp_path):
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(_cfg(tmp_path / "r", epochs=6, batch_size=100)))
    cmd = [sys.executable, "-m", "darkknowledge", "train", "--no-progress", "--config", str(cfg)]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)][1]
    assert "in use by another process" in loser or "already holds a run" in loser
    assert loser.count("\n") == 1  # one line, no traceback


def test_resume_with_a_replaced_teacher_is_refused(tmp_path):
    t1 = train(validate(_cfg(tmp_path / "t1", epochs=1)), progress=False)
    train(validate(_cfg(tmp_path / "t2", epochs=1, seed=2)), progress=False)
    assert t1["final"]["test"]["accuracy"] > 0.3
    teacher = tmp_path / "teacher.safetensors"
    teacher.write_bytes((tmp_path / "t1" / "best.safetensors").read_bytes())
    s = validate(_cfg(tmp_path / "s", distill={"teachers": [str(teacher)], "temperature": 2.0}))
    rec = train(s, progress=False)
    assert rec["teacher_sha256"] == [hashlib.sha256(teacher.read_bytes()).hexdigest()]
    (tmp_path / "s" / "run.json").unlink()  # as if killed after its last checkpoint
    teacher.write_bytes((tmp_path / "t2" / "best.safetensors").read_bytes())
    with pytest.raises(TeacherMismatchError, match="teacher changed"):
        train(s, resume=True, progress=False)
    assert not (tmp_path / "s" / "run.json").exists()


@pytest.mark.slow  # end-to-end tier: training in subprocesses
def test_model_files_are_byte_deterministic(tmp_path):
    """safetensors keeps metadata in a hash map (its order varies between processes); ours is one entry."""
    code = ("import sys, torch, darkknowledge as dk; torch.manual_seed(0); "
            "m = dk.create_model('mlp', in_features=8, hidden=[4]); "
            "dk.save_model(m, sys.argv[1], 'mlp', {'in_features': 8, 'hidden': [4]}, {'epoch': 3, 'b': 1, 'a': 2})")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], env=ENV, check=True)
    digests = {hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a", "b", "c")}
    assert len(digests) == 1
    meta = dk.models.read_model_meta(tmp_path / "a")
    assert meta["epoch"] == 3 and meta["darkknowledge_model"]["name"] == "mlp"


def _recorded_runs() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((REPO / "results").rglob("run.json"))]


def test_every_recorded_dataset_and_model_is_loadable(tmp_path):
    """Every run record under results/ names a registered dataset, and its model (rebuilt from the record's
    config, saved, reloaded) is the same module with the same outputs."""
    recs = _recorded_runs()
    assert recs, "no committed run records"
    kinds = {}
    for r in recs:
        assert r["dataset"]["name"] in list_datasets(), r["dataset"]["name"]
        kinds.setdefault((r["config"]["model"]["name"], json.dumps(r["config"]["model"]["args"], sort_keys=True)), r)
    for i, ((name, _), r) in enumerate(sorted(kinds.items())):
        args = {"num_classes": 2 if "2x5" in r["dataset"]["name"] or "click" in r["dataset"]["name"] else 10,
                **r["config"]["model"]["args"]}
        m = dk.create_model(name, **args).eval()
        dk.save_model(m, tmp_path / f"{i}.safetensors", name, args)
        back = dk.load_model(tmp_path / f"{i}.safetensors").eval()
        assert type(back) is type(m)
        assert back.state_dict().keys() == m.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), m.state_dict().values()))


def test_cli_evaluates_a_subclass_checkpoint(shared_data, tmp_path):
    """`darkknowledge evaluate` on a subclass-net checkpoint over a 2x5 dataset (the kinds the subclass
    experiments write)."""
    args = {"backbone": "mlp", "subclasses": 5, "num_classes": 2, "in_features": 784, "hidden": [16]}
    m = dk.create_model("subclass", **args)
    dk.save_model(m, tmp_path / "s.safetensors", "subclass", args)
    r = subprocess.run([sys.executable, "-m", "darkknowledge", "evaluate", str(tmp_path / "s.safetensors"),
                        "--dataset", "mnist-2x5", "--data-dir", shared_data, "--json", str(tmp_path / "m.json")],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "m.json").read_text())[str(tmp_path / "s.safetensors")]
    splits = dk.data.load_dataset("mnist-2x5", shared_data, val_size=0)
    pred = m.eval()(splits.test.x).argmax(1)
    assert got["errors"] == int((pred != splits.test.y).sum())
    assert got["n"] == 10_000


DEVICES: list[tuple[str, str, str]] = []


@register_method("_record_devices")
class _RecordDevices(Method):
    """Cross-entropy plus the teacher's soft targets, remembering where every tensor of a step lives."""

    needs_teacher = True

    def forward(self, x, y, idx=None, *, epoch: int = 0, step: int = 0):
        logits = self.student(x)
        p = self.teacher.soft_targets(x, 2.0, idx)
        DEVICES.append((str(x.device), str(next(self.student.parameters()).device), str(p.device)))
        return logits, {"hard": torch.nn.functional.cross_entropy(logits, y), "soft": 0.0 * p.sum()}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA here"))])
def test_the_device_is_honoured_end_to_end(tmp_path, device):
    train(validate(_cfg(tmp_path / "t", epochs=1, device=device)), progress=False)
    DEVICES.clear()
    rec = train(validate(_cfg(tmp_path / "s", epochs=1, device=device, method="_record_devices",
                              distill={"teachers": [str(tmp_path / "t" / "best.safetensors")]})), progress=False)
    want = str(torch.device(device if device != "cuda" else "cuda:0"))
    assert DEVICES and set(DEVICES) == {(want, want, want)}
    assert rec["device"] == want and rec["config"]["device"] == device


def test_an_unavailable_device_is_a_clear_error_before_anything_is_written(tmp_path):
    bad = "mps" if not torch.cuda.is_available() else "cuda:99"
    with pytest.raises(ValueError, match="not available|only"):
        train(validate(_cfg(tmp_path / "r", device=bad)), progress=False)
    with pytest.raises(ValueError, match="not one of"):
        train(validate(_cfg(tmp_path / "r", device="tpu")), progress=False)
    assert not (tmp_path / "r").exists()


def test_metrics_csv_and_guidance_warnings(tmp_path):
    """metrics.csv mirrors the history; a weak teacher and a soft term that does not move are named."""
    import csv

    train(validate(_cfg(tmp_path / "t", epochs=1, model={"name": "mlp", "args": {"in_features": 64, "hidden": [4]}})),
          progress=False)
    rec = train(validate(_cfg(tmp_path / "s", epochs=3, optim={"name": "sgd", "lr": 1e-7},
                              distill={"teachers": [str(tmp_path / "t" / "best.safetensors")], "kind": "kl"})),
                progress=False)
    rows = list(csv.DictReader((tmp_path / "s" / "metrics.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3]
    assert [float(r["val/accuracy"]) for r in rows] == [e["val"]["accuracy"] for e in rec["epochs"]]
    assert [float(r["train_loss/soft"]) for r in rows] == [e["train_loss"]["soft"] for e in rec["epochs"]]
    text = " ".join(rec.get("warnings", []))
    assert "soft term has not moved" in text  # lr 1e-7: nothing moves
    # a well-trained student of a 4-unit teacher: the teacher is not clearly better
    rec2 = train(validate(_cfg(tmp_path / "s2", epochs=3, distill={"teachers": [str(tmp_path / "t" /
                                                                                   "best.safetensors")]})),
                 progress=False)
    assert any("not clearly better" in w for w in rec2.get("warnings", [])), rec2.get("warnings")
