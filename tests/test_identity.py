"""A run's identity is its inputs' content (engine/identity.py): what is reused, what is refused, what is not
written over. Tiny runs on the digits (an 8x8 MLP, one epoch: well under a second each)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import darkknowledge as dk
from darkknowledge.config import validate
from darkknowledge.data import load_dataset
from darkknowledge.engine import RunExistsError, train
from darkknowledge.engine.fanout import sweep, train_ensemble
from darkknowledge.engine.identity import (
    CODE_VERSION,
    InputsChangedError,
    config_key,
    describe_change,
    file_sha256,
    run_identity,
    tensor_sha256,
)
from darkknowledge.engine.jobs import Job, finished_record, run_cached, run_jobs

MLP = {"name": "mlp", "args": {"in_features": 64, "hidden": [8]}}


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DARKKNOWLEDGE_HASH_CACHE", str(tmp_path / "hash-cache.json"))


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> dict[str, str]:
    """The digits as a user's npz files."""
    d = tmp_path_factory.mktemp("npz")
    s = load_dataset("digits", val_size=0)
    np.savez(d / "train.npz", x=s.train.x.numpy(), y=s.train.y.numpy())
    np.savez(d / "test.npz", x=s.test.x.numpy(), y=s.test.y.numpy())
    return {"train": str(d / "train.npz"), "test": str(d / "test.npz")}


def cfg_for(out: Path, **kw) -> dk.TrainConfig:
    base = {"name": "i", "epochs": 1, "batch_size": 64, "model": MLP, "data": {"dataset": "digits", "val_size": 200},
            "optim": {"name": "adam", "lr": 1e-3}, "out_dir": str(out), "device": "cpu"}
    return validate({**base, **kw})


def npz_cfg(out: Path, files: dict[str, str], **kw) -> dk.TrainConfig:
    return cfg_for(out, data={"dataset": "mine", "format": "npz", "files": files, "val_size": 200}, **kw)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in (".lock", ".lock.json")}


# --------------------------------------------------------------------------- the identity itself


def test_config_key_ignores_where_things_are_and_nothing_else(tmp_path):
    a = cfg_for(tmp_path / "a", distill={"teachers": ["t/best.safetensors"]})
    b = cfg_for(Path("/elsewhere/b"), distill={"teachers": [str(Path.cwd() / "t" / "best.safetensors")]})
    b.data.data_dir = "/data"
    assert config_key(a) == config_key(b)
    assert config_key(a) != config_key(cfg_for(tmp_path / "a", seed=1, distill={"teachers": ["t"]}))
    assert config_key(a) != config_key(cfg_for(tmp_path / "a", distill={"teachers": ["t", "u"]}))


def test_file_hash_is_the_sha256_and_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(2 << 20))
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    calls = []
    import darkknowledge.engine.identity as idn

    monkeypatch.setattr(idn, "sha256_file", lambda p: calls.append(p) or "x")
    idn._MEMO.clear()
    file_sha256(f)  # from the cache file written by the first call
    assert calls == [] and (tmp_path / "hash-cache.json").is_file()
    data = f.read_bytes()
    f.write_bytes(data[::-1])  # same size, new mtime: hashed again
    os.utime(f, ns=(1, 1))
    assert file_sha256(f) == "x" and len(calls) == 1


def test_tensor_hash_sees_a_change_in_place():
    x = torch.zeros(3, 4)
    h0 = tensor_sha256([x])
    assert tensor_sha256([x]) == h0
    x[1, 2] = 1
    assert tensor_sha256([x]) != h0
    assert tensor_sha256([torch.zeros(4, 3)]) != h0 and tensor_sha256([torch.zeros(3, 4, dtype=torch.float64)]) != h0


# --------------------------------------------------------------------------- train(): reuse, refuse, overwrite


def test_a_finished_run_is_reused_and_its_files_untouched(tmp_path):
    cfg = cfg_for(tmp_path / "r")
    rec = train(cfg, progress=False)
    assert rec["identity"]["code"] == CODE_VERSION and rec["weights_sha256"] == file_sha256(tmp_path / "r" /
                                                                                           "best.safetensors")
    before = snapshot(tmp_path / "r")
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(cfg, progress=False)
    again = train(cfg, resume=True, progress=False)
    assert again["final"] == rec["final"] and snapshot(tmp_path / "r") == before


def test_a_finished_run_without_its_checkpoint_is_not_retrained(tmp_path):
    """The committed results/**/runs/* hold run.json and no checkpoint: a rerun reuses, never retrains."""
    cfg = cfg_for(tmp_path / "r")
    train(cfg, progress=False)
    (tmp_path / "r" / "checkpoint.pt").unlink()
    before = snapshot(tmp_path / "r")
    assert run_cached(cfg, progress=False)["final"] == json.loads((tmp_path / "r" / "run.json").read_text())["final"]
    train(cfg, resume=True, progress=False)
    with pytest.raises(InputsChangedError, match="differs in: optim.lr"):
        train(cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": 0.5})}), resume=True, progress=False)
    assert snapshot(tmp_path / "r") == before


def test_a_moved_run_folder_is_the_same_run(tmp_path):
    rec = train(cfg_for(tmp_path / "a"), progress=False)
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = finished_record(cfg_for(tmp_path / "b"))
    assert moved is not None and moved["final"] == rec["final"] and moved["config"]["out_dir"] == str(tmp_path / "b")


def test_changed_data_file_is_refused_naming_it_then_overwritten_on_request(tmp_path, npz):
    files = {k: str(tmp_path / Path(v).name) for k, v in npz.items()}
    for k, v in npz.items():
        shutil.copy(v, files[k])
    cfg = npz_cfg(tmp_path / "r", files)
    train(cfg, progress=False)
    assert run_cached(cfg, progress=False) is not None  # the same inputs: reused
    z = np.load(files["train"])
    np.savez(files["train"], x=z["x"][::-1].copy(), y=z["y"][::-1].copy())  # same shapes, other order
    before = snapshot(tmp_path / "r")
    with pytest.raises(InputsChangedError, match=r"data.files.train changed \(sha256"):
        run_cached(cfg, progress=False)
    with pytest.raises(InputsChangedError, match="data.files.train"):
        run_jobs([Job(cfg.model_dump())], progress=False)
    assert snapshot(tmp_path / "r") == before
    rec = run_jobs([Job(cfg.model_dump())], progress=False, overwrite=True)[0]
    assert rec["identity"]["data"]["train"] == file_sha256(files["train"])
    assert describe_change(rec, cfg) is None


def test_a_resume_after_the_data_changed_is_refused(tmp_path, npz):
    files = {k: str(tmp_path / Path(v).name) for k, v in npz.items()}
    for k, v in npz.items():
        shutil.copy(v, files[k])
    cfg = npz_cfg(tmp_path / "r", files, epochs=2, max_steps=3)
    train(cfg, progress=False)
    (tmp_path / "r" / "run.json").unlink()  # as if killed after the last checkpoint
    z = np.load(files["test"])
    np.savez(files["test"], x=z["x"] * 0.5, y=z["y"])
    with pytest.raises(InputsChangedError, match="checkpoint.pt was started on other inputs: the data file "
                                                 "data.files.test changed"):
        train(cfg, resume=True, progress=False)


def test_dk_distill_out_dir_is_reused_only_for_the_same_data(tmp_path):
    s = load_dataset("digits", val_size=0)
    x, y = s.train.x.flatten(1), s.train.y

    def student():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 10))

    a = dk.distill(student(), None, x, y, epochs=1, out_dir=str(tmp_path / "d"), progress=False, device="cpu")
    b = dk.distill(student(), None, x, y, epochs=1, out_dir=str(tmp_path / "d"), progress=False, device="cpu")
    assert torch.equal(a[0].weight, b[0].weight)  # reused: the selected weights loaded into the new student
    with pytest.raises(InputsChangedError, match="data passed in"):
        dk.distill(student(), None, x.flip(0), y.flip(0), epochs=1, out_dir=str(tmp_path / "d"), progress=False,
                   device="cpu")


# --------------------------------------------------------------------------- sweeps, ensembles, teachers


def test_sweep_after_the_teacher_changed_refuses_then_overwrites(tmp_path):
    t = tmp_path / "t"
    train(cfg_for(t), progress=False)
    base = cfg_for(tmp_path / "x", distill={"teachers": [str(t / "best.safetensors")]})
    first = sweep(base, ["distill.temperature=2,4"], tmp_path / "s", progress=False)
    assert sweep(base, ["distill.temperature=2,4"], tmp_path / "s", progress=False)["cells"] == first["cells"]
    shutil.rmtree(t)
    train(cfg_for(t, seed=5), progress=False)  # another teacher in the same file
    with pytest.raises(InputsChangedError, match=r"teacher file #1 changed"):
        sweep(base, ["distill.temperature=2,4"], tmp_path / "s", progress=False)
    again = sweep(base, ["distill.temperature=2,4"], tmp_path / "s", progress=False, overwrite=True)
    new_t = file_sha256(t / "best.safetensors")
    assert all(json.loads((Path(c["out_dir"]) / "run.json").read_text())["identity"]["teachers"] == [new_t]
               for c in again["cells"])


def test_an_altered_ensemble_member_is_not_approved(tmp_path):
    cfg = cfg_for(tmp_path / "x")
    m = train_ensemble(cfg, 2, tmp_path / "e", progress=False)
    member = tmp_path / "e" / "member1" / "best.safetensors"
    assert m["members"][1]["sha256"] == file_sha256(member)
    sd = dk.load_model(member).state_dict()
    dk.save_model(torch.nn.Linear(1, 1), member, "mlp", {})  # the member replaced by something else
    before = (tmp_path / "e" / "ensemble.json").read_bytes()
    with pytest.raises(InputsChangedError, match="member1/best.safetensors was altered after the run finished"):
        train_ensemble(cfg, 2, tmp_path / "e", progress=False)
    assert (tmp_path / "e" / "ensemble.json").read_bytes() == before
    assert sd  # the original had weights; --overwrite retrains the altered member
    m2 = train_ensemble(cfg, 2, tmp_path / "e", progress=False, overwrite=True)
    assert m2["members"][1]["sha256"] == m["members"][1]["sha256"]  # deterministic: the same member again


def test_legacy_records_without_identity_are_still_accepted(tmp_path):
    cfg = cfg_for(tmp_path / "r")
    rec = train(cfg, progress=False)
    for k in ("identity", "weights_sha256"):
        rec.pop(k)
    (tmp_path / "r" / "run.json").write_text(json.dumps(rec))
    assert finished_record(cfg) is not None
    assert finished_record(cfg_for(tmp_path / "r", seed=3)) is None
    ident = run_identity(cfg)
    assert describe_change(rec, cfg, ident) is None


@pytest.mark.parametrize("rel", ["results/demo/runs/teacher/run.json", "results/hinton-mnist/runs"])
def test_committed_records_are_accepted_as_legacy(rel):
    root = Path(__file__).resolve().parents[1]
    paths = [root / rel] if rel.endswith(".json") else sorted((root / rel).rglob("run.json"))[:5]
    assert paths
    for p in paths:
        rec = json.loads(p.read_text())
        assert "identity" not in rec
        cfg = validate({**rec["config"], "out_dir": str(p.parent)})
        assert describe_change(rec, cfg) is None, p


def test_a_failed_overwrite_leaves_the_old_run_as_it_was(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path / "r")
    train(cfg, progress=False)
    before = snapshot(tmp_path / "r")
    tr = sys.modules["darkknowledge.engine.train"]

    def boom(*a, **k):
        raise KeyboardInterrupt  # Ctrl-C half-way through the new run

    monkeypatch.setattr(tr, "_validate", boom)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tmp_path / "r", seed=1), overwrite=True, progress=False)
    assert snapshot(tmp_path / "r") == before and not (tmp_path / "r" / ".replaced").exists()
    monkeypatch.undo()
    rec = train(cfg_for(tmp_path / "r", seed=1), overwrite=True, progress=False)
    assert rec["seed"] == 1 and not (tmp_path / "r" / ".replaced").exists()
    assert snapshot(tmp_path / "r") != before


def test_an_image_folder_is_hashed_by_its_files(tmp_path):
    from darkknowledge.engine.identity import path_sha256

    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "a.png").write_bytes(b"one")
    h = path_sha256(tmp_path / "imgs")
    assert h == path_sha256(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "b.png").write_bytes(b"two")  # a new image
    h2 = path_sha256(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "b.png").rename(tmp_path / "imgs" / "cat" / "c.png")  # relabelled / renamed
    assert len({h, h2, path_sha256(tmp_path / "imgs")}) == 3


def test_a_config_field_added_later_at_its_default_is_not_a_change(tmp_path):
    cfg = cfg_for(tmp_path / "r")
    rec = train(cfg, progress=False)
    rec["config"].pop("channels_last")  # as written before the field existed
    rec["identity"]["config"] = "written by another version"
    assert describe_change(rec, cfg) is None
    assert "differs in: seed" in describe_change(rec, cfg_for(tmp_path / "r", seed=4))


def test_a_teacher_handed_in_is_identified_by_its_weights_not_by_the_files_named(tmp_path):
    torch.manual_seed(0)
    t1, t2 = torch.nn.Linear(64, 10), torch.nn.Linear(64, 10)
    cfg = cfg_for(tmp_path / "s", distill={"teachers": ["(in-memory teacher)"]})
    splits = dk.engine.prepare_data(cfg.data)
    flat = type(splits)(*[type(d)(d.x.flatten(1), d.y, d.index) for d in (splits.train, splits.val, splits.test)],
                        splits.num_classes, splits.name)
    rec = run_cached(cfg, splits=flat, teacher=t1, progress=False)
    assert rec["identity"]["teachers"] is None and len(rec["identity"]["teacher_weights"]) == 1
    assert finished_record(cfg) is not None  # the files named cannot be compared with weights handed in
    assert train(cfg, resume=True, splits=flat, teacher=t1, progress=False)["final"] == rec["final"]
    with pytest.raises(InputsChangedError, match=r"teacher \(weights handed in\) #1 changed"):
        train(cfg, resume=True, splits=flat, teacher=t2, progress=False)


def test_an_overwrite_killed_midway_is_rolled_back_by_the_next_command(tmp_path):
    """SIGKILL leaves the old run in .replaced beside the new run's first checkpoint; the next command on the
    folder puts the old run back before looking at it."""
    from darkknowledge.engine.identity import set_aside

    cfg = cfg_for(tmp_path / "r")
    rec = train(cfg, progress=False)
    before = snapshot(tmp_path / "r")
    set_aside(tmp_path / "r")
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"the killed overwrite's first checkpoint")
    assert train(cfg, resume=True, progress=False)["final"] == rec["final"]
    assert snapshot(tmp_path / "r") == before and not (tmp_path / "r" / ".replaced").exists()
