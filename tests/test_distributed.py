"""One run on two processes (torchrun + DDP, gloo on CPU) trains exactly like one process with the same
global batch, for ``labels`` and ``kd``; a SIGKILLed rank and a resume end as the uninterrupted run; a
resume with another world size is refused (see :mod:`darkknowledge.engine.distributed`)."""

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
import yaml
from safetensors.torch import load_file

from darkknowledge.config import validate
from darkknowledge.engine import train
from darkknowledge.engine.distributed import WorldSizeError

REPO = Path(__file__).resolve().parents[1]
N_TRAIN = 3803  # 38 batches of 100 and a last batch of 3
pytestmark = [pytest.mark.skipif(not torch.distributed.is_available() or sys.platform != "linux",
                                 reason="needs torch.distributed (gloo) on Linux"),
              pytest.mark.slow]  # end-to-end tier: torchrun with two processes


def _cfg(out: Path, **kw) -> dict:
    # dropout-free; 3,803 of the 19,000 training examples (fraction) in batches of 100: 39 steps per epoch, the
    # last a batch of 3 that splits unevenly, 2 + 1, so each rank's loss must be scaled by N·n_r/B (4/3, 2/3)
    # for the averaged gradient to be the single-process one
    cfg = {"name": "ddp", "seed": 3, "epochs": 2, "batch_size": 100, "threads": 1,
           "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [32]}},
           "data": {"dataset": "synthetic", "val_size": 1000, "fraction": N_TRAIN / 19000},
           "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "out_dir": str(out)}
    cfg.update(kw)
    return cfg


def _torchrun(cfg: dict, tmp: Path, *extra: str, tag: str = "", wait: bool = True):
    path = tmp / f"{Path(cfg['out_dir']).name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "DK_TEST_TAG": tag}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "darkknowledge", "train", "--config", str(path), "--no-progress", *extra]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


@pytest.fixture(scope="module")
def two_proc_labels(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = _cfg(tmp / "two", checkpoint_every_steps=5)
    r = _torchrun(cfg, tmp)
    return tmp, cfg, r


def test_labels_two_processes_equal_one(two_proc_labels, tmp_path):
    tmp, cfg, r = two_proc_labels
    one = train(validate({**cfg, "out_dir": str(tmp_path / "one")}), progress=False)
    two = json.loads((Path(cfg["out_dir"]) / "run.json").read_text())
    assert one["dataset"]["train"] == two["dataset"]["train"] == N_TRAIN and N_TRAIN % 100 == 3
    assert torch.load(Path(cfg["out_dir"]) / "checkpoint.pt", weights_only=False)["state"]["global_step"] == 2 * 39
    assert _max_diff(tmp_path / "one" / "last.safetensors", Path(cfg["out_dir"]) / "last.safetensors") < 1e-5
    assert two["distributed"] == {"world_size": 2, "backend": "gloo"}
    # the logged loss is summed over ranks: the same as one process's, to float precision
    assert two["epochs"][-1]["train_loss"]["hard"] == pytest.approx(one["epochs"][-1]["train_loss"]["hard"],
                                                                     rel=1e-5)
    # rank 0 alone reports
    assert r.stdout.count("test metrics") == 1


def test_kd_two_processes_equal_one(tmp_path):
    teacher = train(validate(_cfg(tmp_path / "teacher", epochs=1, model={
        "name": "mlp", "args": {"in_features": 64, "hidden": [64]}})), progress=False)
    assert teacher["final"]["test"]["accuracy"] > 0.5
    t_file = str(tmp_path / "teacher" / "best.safetensors")
    kd = {"teachers": [t_file], "temperature": 4.0, "w_soft": 1.0, "w_hard": 0.3}
    train(validate(_cfg(tmp_path / "one", distill=kd)), progress=False)
    _torchrun(_cfg(tmp_path / "two", distill=kd), tmp_path)
    assert _max_diff(tmp_path / "one" / "last.safetensors", tmp_path / "two" / "last.safetensors") < 1e-5
    # the teacher store is written once (by rank 0) and is the single-process one (its manifest holds its files' sha256)
    assert (tmp_path / "two" / "teacher_store" / "manifest.json").read_bytes() == \
        (tmp_path / "one" / "teacher_store" / "manifest.json").read_bytes()


def _rank_pids(tag: str, rank: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DK_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env:
            pids.append(int(p.name))
    return pids


def test_sigkill_one_rank_then_resume_ends_as_uninterrupted(two_proc_labels, tmp_path):
    tmp, ref_cfg, _ = two_proc_labels
    cfg = {**ref_cfg, "out_dir": str(tmp_path / "killed")}
    tag = f"kill-{os.getpid()}-{time.time_ns()}"
    proc = _torchrun(cfg, tmp_path, tag=tag, wait=False)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    pids = _rank_pids(tag, 1)
    assert pids and proc.poll() is None, "the run ended before rank 1 could be killed"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-2000:]
    assert not (tmp_path / "killed" / "run.json").exists()
    _torchrun(cfg, tmp_path, "--resume")
    a = load_file(str(tmp_path / "killed" / "last.safetensors"))
    b = load_file(str(Path(ref_cfg["out_dir"]) / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rec = json.loads((tmp_path / "killed" / "run.json").read_text())
    ref = json.loads((Path(ref_cfg["out_dir"]) / "run.json").read_text())
    assert rec["final"] == ref["final"]


def test_resume_with_another_world_size_is_refused(two_proc_labels):
    tmp, ref_cfg, _ = two_proc_labels
    out = Path(ref_cfg["out_dir"])
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["world_size"] == 2 and len(ck["rank_rngs"]) == 2
    # an unfinished run (a finished one is reused as it is, whatever the world size): its checkpoint alone
    record = (out / "run.json").read_bytes()
    (out / "run.json").unlink()
    try:
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        with pytest.raises(WorldSizeError, match="torchrun --nproc_per_node 2"):
            train(validate(ref_cfg), resume=True, progress=False)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    finally:
        (out / "run.json").write_bytes(record)
