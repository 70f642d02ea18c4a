"""The job pool: a set of cached runs on a local process pool (or Ray) gives the records the serial
executor gives; dependent jobs wait for their teachers; finished jobs are skipped; failures are reported
after the rest ran; ensembles and sweeps are ordinary job sets (see :mod:`darkknowledge.engine.jobs`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from darkknowledge.cli import main
from darkknowledge.config import ConfigError, validate
from darkknowledge.engine.fanout import parse_grid, split_values, sweep, train_ensemble
from darkknowledge.engine.jobs import Job, JobsFailedError, LocalExecutor, make_executor, register_job_kind, run_jobs
from darkknowledge.teachers import ManifestError, teacher_files
from darkknowledge.utils import atomic_write_json


def _cfg(out: Path, seed: int = 1, **kw) -> dict:
    cfg = {"name": f"j{seed}", "seed": seed, "epochs": 1, "batch_size": 200, "threads": 1,
           "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [16]}},
           "data": {"dataset": "synthetic", "val_size": 500, "fraction": 0.1},
           "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "out_dir": str(out)}
    cfg.update(kw)
    return cfg


def _jobs(tmp: Path) -> list[Job]:
    teacher = _cfg(tmp / "teacher", seed=7)
    kd = {"teachers": [str(tmp / "teacher" / "best.safetensors")], "temperature": 4.0, "w_hard": 0.5}
    # the student comes first in the list: the pool must still start it only after its teacher
    return [Job(_cfg(tmp / "student", seed=8, distill=kd)), Job(teacher)] + \
        [Job(_cfg(tmp / f"s{k}", seed=k)) for k in range(3)]


def _finals(records: list[dict]) -> list:
    return [(r["config"]["name"], r["final"]) for r in records]


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pool")
    return tmp, run_jobs(_jobs(tmp), "local", workers=2, progress=False)


@pytest.mark.slow  # end-to-end tier: spawned workers / real runs
def test_pool_gives_the_serial_records(pooled, tmp_path):
    tmp, recs = pooled
    serial = run_jobs(_jobs(tmp_path), "local", workers=1, progress=False)
    assert _finals(recs) == _finals(serial)
    student = recs[0]
    teacher_file = tmp / "teacher" / "best.safetensors"
    from darkknowledge.data.common import sha256_file

    assert student["teacher_sha256"] == [sha256_file(teacher_file)]


@pytest.mark.slow  # end-to-end tier: spawned workers / real runs
def test_finished_jobs_are_skipped(pooled):
    tmp, recs = pooled
    stamps = {p: p.stat().st_mtime_ns for p in tmp.rglob("run.json")}
    again = run_jobs(_jobs(tmp), "local", workers=2, progress=False)
    assert _finals(again) == _finals(recs)
    assert {p: p.stat().st_mtime_ns for p in tmp.rglob("run.json")} == stamps


@pytest.mark.slow  # end-to-end tier: spawned workers / real runs
def test_failures_are_reported_after_the_rest_ran(tmp_path):
    bad_teacher = _cfg(tmp_path / "bad", seed=2, data={"dataset": "synthetic", "val_size": 500, "fraction": 0.1,
                                                     "format": "npz", "files": {"train": str(tmp_path / "no.npz"),
                                                                                "test": str(tmp_path / "no.npz")}})
    kd = {"teachers": [str(tmp_path / "bad" / "best.safetensors")], "temperature": 2.0}
    jobs = [Job(bad_teacher), Job(_cfg(tmp_path / "after_bad", seed=3, distill=kd)), Job(_cfg(tmp_path / "ok"))]
    with pytest.raises(JobsFailedError) as e:
        run_jobs(jobs, "local", workers=2, progress=False)
    assert set(e.value.failures) == {str(tmp_path / "bad"), str(tmp_path / "after_bad")}
    assert "not started" in e.value.failures[str(tmp_path / "after_bad")]
    assert (tmp_path / "ok" / "run.json").exists()
    assert not (tmp_path / "after_bad").exists()


_ORPHAN = """
import os, sys
from darkknowledge.engine.jobs import LocalExecutor
ex = LocalExecutor(1, threads=1)
print(ex.pool.submit(os.getpid).result(), flush=True)
os.kill(os.getpid(), 9)  # the parent dies without shutting its pool down (SIGKILL, OOM killer, lost session)
"""


@pytest.mark.slow  # end-to-end tier: spawned workers / real runs
def test_pool_workers_exit_when_the_parent_dies():
    """A killed ``sweep`` or ``reproduce --workers N`` must not leave its workers training on as orphans."""
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.wait(timeout=60)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(child, 9)
    pytest.fail(f"pool worker {child} outlived its parent by 15 s")


def test_bad_job_sets_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="share out_dir"):
        run_jobs([Job(_cfg(tmp_path / "a")), Job(_cfg(tmp_path / "a", seed=2))], progress=False)
    with pytest.raises(ConfigError):
        run_jobs([Job(_cfg(tmp_path / "b")), Job({**_cfg(tmp_path / "c"), "epochs": -1})], progress=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("slurm", 2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        LocalExecutor(0)


@pytest.mark.slow  # end-to-end tier: spawned workers / real runs
def test_ensemble_manifest_is_a_teacher_and_refuses_changed_members(tmp_path):
    m = train_ensemble(validate(_cfg(tmp_path / "x")), 2, tmp_path / "ens", workers=2, progress=False)
    assert [r["seed"] for r in m["members"]] == [1, 2]
    files = teacher_files([str(tmp_path / "ens" / "ensemble.json")])
    assert files == [str(tmp_path / "ens" / f"member{i}" / "best.safetensors") for i in range(2)]
    rc = main(["distill", "--teacher", str(tmp_path / "ens" / "ensemble.json"), "--out", str(tmp_path / "d"),
               "--no-progress", "epochs=1", "data.dataset=synthetic", "data.val_size=500", "data.fraction=0.1",
               "model.name=mlp", "model.args={in_features: 64, hidden: [16]}", "threads=1"])
    assert rc == 0
    rec = json.loads((tmp_path / "d" / "run.json").read_text())
    assert len(rec["teacher_sha256"]) == 2
    with open(files[1], "ab") as f:  # a member changes after the manifest was written
        f.write(b"\0")
    with pytest.raises(ManifestError, match="changed since the manifest"):
        teacher_files([str(tmp_path / "ens" / "ensemble.json")])
    with pytest.raises(ManifestError, match="not a darkknowledge ensemble manifest"):
        (tmp_path / "other.json").write_text("{}")
        teacher_files([str(tmp_path / "other.json")])


def test_grid_parsing():
    assert split_values("1,2,[3,4],{a: 1, b: 2}") == ["1", "2", "[3,4]", "{a: 1, b: 2}"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    fixed, axes = parse_grid(["epochs=3", "distill.temperature=1,2,4", "model.args.hidden=[300,300],[800,800]",
                              "model.args.hidden2=[30,30]"])
    assert fixed == ["epochs=3", "model.args.hidden2=[30,30]"]
    assert axes == [("distill.temperature", ["1", "2", "4"]), ("model.args.hidden", ["[300,300]", "[800,800]"])]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_values("[1,2")


@pytest.mark.slow  # end-to-end tier: spawned workers / real runs
def test_sweep_runs_every_cell_and_picks_on_validation(tmp_path):
    res = sweep(validate(_cfg(tmp_path / "x")), ["model.args.hidden=[8],[32]", "optim.lr=0.01,0.1"],
                tmp_path / "sw", workers=2, progress=False)
    cells = {c["cell"]: c for c in res["cells"]}
    assert set(cells) == {"hidden8_lr0.01", "hidden8_lr0.1", "hidden32_lr0.01", "hidden32_lr0.1"}
    rec = json.loads((tmp_path / "sw" / "hidden32_lr0.01" / "run.json").read_text())
    assert rec["config"]["model"]["args"]["hidden"] == [32] and rec["config"]["optim"]["lr"] == 0.01
    best = max(res["cells"], key=lambda c: c["val_accuracy"])
    assert res["best_on_validation"] == best["cell"]
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text()) == json.loads(json.dumps(res))


@pytest.mark.skipif(os.environ.get("DARKKNOWLEDGE_SKIP_RAY") == "1", reason="Ray test disabled")
@pytest.mark.slow  # end-to-end tier: spawned workers / real runs
def test_ray_executor_two_tiny_jobs(tmp_path):
    ray = pytest.importorskip("ray")
    jobs = [Job(_cfg(tmp_path / f"r{k}", seed=k)) for k in range(2)]
    try:
        recs = run_jobs(jobs, "ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    serial = run_jobs([Job(_cfg(tmp_path / f"l{k}", seed=k)) for k in range(2)], progress=False)
    assert [r["final"] for r in recs] == [r["final"] for r in serial]


# --------------------------------------------------------------------------- registered job kinds


@register_job_kind("test-jobs-fake")
def _fake_run(config, *, progress, need_weights, errors: int) -> dict:
    """A "run" that only writes its record."""
    rec = {"config": validate(config).model_dump(), "final": {"test": {"errors": errors}}}
    atomic_write_json(Path(config["out_dir"]) / "run.json", rec)
    return rec


def _fake_cfg(out: Path, k: int) -> dict:
    return {"name": f"w{k}", "seed": k, "epochs": 1, "model": {"name": "mlp", "args": {"in_features": 64}},
            "data": {"dataset": "digits"}, "out_dir": str(out / f"w{k}")}


@pytest.mark.slow  # two spawned workers importing torch: ~10 s
def test_a_registered_kind_runs_in_a_spawned_worker(tmp_path):
    """The workers have never imported this module: each Job names it (``Job.module``) and the worker imports
    it, which registers the kind."""
    jobs = [Job(_fake_cfg(tmp_path, k), {"errors": k}, kind="test-jobs-fake") for k in range(2)]
    assert jobs[0].module == __name__
    recs = run_jobs(jobs, workers=2, progress=False)
    assert [r["final"]["test"]["errors"] for r in recs] == [0, 1]
    assert run_jobs(jobs, progress=False) == recs  # finished: not run again


def test_unknown_or_twice_registered_job_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown job kind 'nope'"):
        Job({"out_dir": "x"}, kind="nope")
    with pytest.raises(ValueError, match="already registered"):
        register_job_kind("test-jobs-fake")(lambda config, **kw: {})
    with pytest.raises(ValueError, match="already registered"):
        register_job_kind("train")(lambda config, **kw: {})


def test_a_ray_address_that_never_answers_fails_in_bounded_time_naming_it():
    """A server that accepts connections and never answers (Ray itself would retry for minutes)."""
    import socket
    import time

    from darkknowledge.engine.jobs import RayConnectError, _connect_ray

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    addr = f"127.0.0.1:{srv.getsockname()[1]}"
    t0 = time.monotonic()
    try:
        with pytest.raises(RayConnectError, match=f"Ray at {addr} did not answer within 0.5 s"):
            _connect_ray(lambda: time.sleep(60), addr, timeout_s=0.5)
    finally:
        srv.close()
    assert time.monotonic() - t0 < 5
    with pytest.raises(RayConnectError, match="not 'auto' nor host:port"):
        _connect_ray(lambda: None, "head-without-port", timeout_s=0.5)
    with pytest.raises(RayConnectError, match="cannot connect to Ray at auto: no cluster"):
        _connect_ray(lambda: (_ for _ in ()).throw(ConnectionError("no cluster")), "auto", timeout_s=0.5)


def test_run_jobs_refuses_a_finished_job_of_another_config_before_running_anything(tmp_path):
    """A legacy-style record (no identity) of another config in a job's folder: refused up front, naming the
    key, not trained over; other jobs do not start either."""
    from darkknowledge.engine.identity import InputsChangedError

    cfg = validate({"name": "j", "epochs": 1, "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [4]}},
                    "data": {"dataset": "digits", "val_size": 100}, "out_dir": str(tmp_path / "a")})
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "run.json").write_text(json.dumps({"config": {**cfg.model_dump(), "epochs": 3}}))
    other = cfg.model_copy(update={"out_dir": str(tmp_path / "b")})
    with pytest.raises(InputsChangedError, match="differs in: epochs"):
        run_jobs([Job(other.model_dump()), Job(cfg.model_dump())], progress=False)
    assert not (tmp_path / "b").exists()
    assert json.loads((tmp_path / "a" / "run.json").read_text())["config"]["epochs"] == 3
