"""Bad input and faults: each case gets a clear one-line error naming the culprit and changes no file.

Table-driven through the CLI (a subprocess each; exit status 2, one line on stderr, no traceback, the
``results/`` tree and the run directory byte-identical before and after), then the Python API, then
property-based checks (Hypothesis) of the config overrides, the IDX reader and the losses' input checks.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import darkknowledge as dk
from darkknowledge.config import ConfigError, apply_overrides, parse_overrides, validate
from darkknowledge.data import IDXFormatError, TensorData, read_idx
from darkknowledge.engine import train

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def tree_hash(*roots: Path) -> str:
    h = hashlib.sha256()
    for root in roots:
        if not root.exists():
            h.update(b"<absent>")
            continue
        for p in sorted(root.rglob("*")):
            h.update(str(p.relative_to(root)).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    args784 = {"in_features": 784, "hidden": [8]}
    dk.save_model(dk.create_model("mlp", **args784), d / "t784.safetensors", "mlp", args784)
    args5 = {"in_features": 64, "hidden": [8], "num_classes": 5}
    dk.save_model(dk.create_model("mlp", **args5), d / "t5.safetensors", "mlp", args5)
    args64 = {"in_features": 64, "hidden": [8]}
    dk.save_model(dk.create_model("mlp", **args64), d / "m64.safetensors", "mlp", args64)
    (d / "corrupt_run").mkdir()
    (d / "corrupt_run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    # round two (issue 26)
    (d / "dup.yaml").write_text("epochs: 2\nmodel: {name: mlp, args: {in_features: 64}}\nepochs: 3\n")
    (d / "a_file").write_text("not a folder")
    (d / "usermodels.py").write_text(
        "import torch\n"
        "class Raises(torch.nn.Module):\n"
        "    def __init__(self, num_classes=10, **kw):\n"
        "        super().__init__()\n"
        "        raise RuntimeError('cannot build: no GPU kernels')\n"
        "class Pair(torch.nn.Module):\n"
        "    def __init__(self, num_classes=10, **kw):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(64, num_classes)\n"
        "    def forward(self, x):\n"
        "        z = self.fc(x.flatten(1))\n"
        "        return z, z.detach()\n")
    nan = dk.create_model("mlp", **args64)
    with torch.no_grad():
        nan.head.weight[0, 0] = float("nan")
    dk.save_model(nan, d / "nan.safetensors", "mlp", args64)
    train(_digits_cfg(d / "finished"), progress=False)  # a finished run (of another config than DIGITS)
    names = {"t784": "t784.safetensors", "t5": "t5.safetensors", "m64": "m64.safetensors", "corrupt": "corrupt_run",
             "dir": ".", "dup": "dup.yaml", "file": "a_file", "nan": "nan.safetensors", "finished": "finished"}
    return {k: str(d / v) for k, v in names.items()}


DIGITS = ["--config", "configs/digits_mlp.yaml", "--no-progress"]

# (id, argv after `darkknowledge`, words the one-line message must contain)
CLI_CASES = [
    ("reproduce-seeds-0", ["reproduce", "subclass-ablation", "--seeds", "0"], ["--seeds", ">= 1"]),
    ("reproduce-seeds-negative", ["reproduce", "subclass-clickthrough", "--seeds", "-1"], ["--seeds", ">= 1"]),
    ("reproduce-demo-only", ["reproduce", "demo", "--seeds", "2", "--only", "teacher"], ["demo", "takes no --only"]),
    ("reproduce-unknown", ["reproduce", "nope"], ["unknown experiment", "nope"]),
    ("momentum-5", ["train", *DIGITS, "optim.momentum=5", "out_dir={dir}/r1"], ["optim.momentum", "[0, 1)"]),
    ("epochs-true", ["train", *DIGITS, "epochs=true", "out_dir={dir}/r2"], ["epochs", "integer"]),
    ("lr-nan", ["train", *DIGITS, "optim.lr=.nan", "out_dir={dir}/r3"], ["optim.lr"]),
    ("w-hard-nan", ["train", *DIGITS, "distill={{teachers: [{m64}]}}", "distill.w_hard=.nan", "out_dir={dir}/r4"],
     ["distill.w_hard"]),
    ("fraction-tiny", ["train", *DIGITS, "data.fraction=1e-9", "out_dir={dir}/r5"], ["data.fraction", "keeps none"]),
    ("threads-negative", ["train", *DIGITS, "threads=-3", "out_dir={dir}/r6"], ["threads", ">= 1"]),
    ("unknown-key", ["train", *DIGITS, "optim.lrr=0.1", "out_dir={dir}/r7"], ["optim.lrr", "unknown key"]),
    ("missing-config", ["train", "--config", "nope.yaml"], ["config file not found", "nope.yaml"]),
    ("teacher-784-on-digits", ["distill", *DIGITS, "--teacher", "{t784}", "out_dir={dir}/r8"],
     ["teacher", "cannot take", "(1, 8, 8)"]),
    ("teacher-5-classes", ["distill", *DIGITS, "--teacher", "{t5}", "out_dir={dir}/r9"], ["5 classes"]),
    ("teacher-missing", ["distill", *DIGITS, "--teacher", "{dir}/none.safetensors", "distill.temperature=20",
                         "out_dir={dir}/r10"], ["model file not found", "none.safetensors"]),
    ("evaluate-other-architecture", ["evaluate", "{t784}", "--dataset", "digits"], ["cannot take", "(1, 8, 8)"]),
    ("evaluate-5-class-teacher", ["evaluate", "{m64}", "--dataset", "digits", "--teacher", "{t5}"],
     ["teacher", "5 outputs"]),
    ("evaluate-unknown-dataset", ["evaluate", "{m64}", "--dataset", "nope"], ["unknown dataset", "nope"]),
    ("corrupt-checkpoint", ["train", *DIGITS, "out_dir={corrupt}", "--resume"], ["checkpoint", "corrupt"]),
    ("ensemble-0-members", ["ensemble", *DIGITS, "--members", "0", "--out", "{dir}/e0"], ["--members", ">= 1"]),
    ("ensemble-bad-key", ["ensemble", *DIGITS, "--members", "2", "--out", "{dir}/e1", "optim.lrr=1"],
     ["optim.lrr", "unknown key"]),
    ("sweep-no-grid", ["sweep", *DIGITS, "--out", "{dir}/s0", "epochs=2"], ["at least one key with several values"]),
    ("sweep-bad-cell", ["sweep", *DIGITS, "--out", "{dir}/s1", "optim.lr=0.1,-1"], ["optim.lr"]),
    ("sweep-unbalanced", ["sweep", *DIGITS, "--out", "{dir}/s2", "model.args.hidden=[3,4"], ["unbalanced"]),
    ("workers-0", ["reproduce", "hinton-mnist", "--workers", "0"], ["--workers", ">= 1"]),
    ("reproduce-demo-workers", ["reproduce", "demo", "--workers", "2"], ["demo", "takes no --workers"]),
    ("ray-address-without-ray", ["sweep", *DIGITS, "--out", "{dir}/s3", "--ray-address", "auto", "epochs=1,2"],
     ["--ray-address needs --executor ray"]),
    ("distill-bad-manifest", ["distill", *DIGITS, "--teacher", "{dir}/none.json", "out_dir={dir}/r10"],
     ["ensemble manifest", "unreadable"]),
    # round two (issue 26): each was silent, unclear or destructive before
    ("yaml-duplicate-key", ["train", "--config", "{dup}", "--no-progress", "out_dir={dir}/r11"],
     ["duplicate key 'epochs'", "line 3"]),
    ("override-twice", ["train", *DIGITS, "epochs=1", "out_dir={dir}/r17", "--out", "{dir}/r16"],
     ["out_dir is given twice", "--out"]),
    ("temperature-1e-30", ["distill", *DIGITS, "--teacher", "{m64}", "distill.temperature=1e-30",
                           "out_dir={dir}/r12"], ["temperature", "[0.01, 1000]"]),
    ("sweep-same-value-twice", ["sweep", *DIGITS, "--out", "{dir}/s4", "optim.lr=0.1,0.10"],
     ["optim.lr", "0.1 and 0.10 are the same value"]),
    ("sweep-key-twice", ["sweep", *DIGITS, "--out", "{dir}/s5", "epochs=1,2", "epochs=3,4"], ["epochs", "twice"]),
    ("sweep-grid-too-big", ["sweep", *DIGITS, "--out", "{dir}/s6", "seed=" + ",".join(map(str, range(40))),
                            "epochs=" + ",".join(map(str, range(1, 41)))], ["1600 cells", "at most 1000"]),
    ("ensemble-a-billion-members", ["ensemble", *DIGITS, "--members", "1000000000", "--out", "{dir}/e2"],
     ["--members", "1..1000"]),
    ("out-is-a-file", ["train", *DIGITS, "--out", "{file}"], ["is a file, not a folder"]),
    ("sweep-out-is-a-file", ["sweep", *DIGITS, "--out", "{file}", "epochs=1,2"], ["a_file is a file, not a folder"]),
    ("out-under-a-file", ["train", *DIGITS, "epochs=1", "--out", "{file}/run"], ["a_file", "is a file"]),
    ("model-raises-in-init", ["train", *DIGITS, "model.name=usermodels:Raises",
                              "out_dir={dir}/r13"], ["usermodels:Raises", "RuntimeError", "cannot build"]),
    ("model-returns-a-tuple", ["train", *DIGITS, "model.name=usermodels:Pair",
                               "out_dir={dir}/r14"], ["student", "returns a tuple", "logits"]),
    ("teacher-nan-weights", ["distill", *DIGITS, "--teacher", "{nan}", "out_dir={dir}/r15"],
     ["teacher", "nan.safetensors", "non-finite weights"]),
    ("finished-run-no-resume", ["train", *DIGITS, "out_dir={finished}"], ["already holds a run", "--overwrite"]),
    ("finished-run-other-config", ["train", *DIGITS, "--resume", "out_dir={finished}"],
     ["finished run of other inputs", "a different config", "--overwrite"]),
    ("resume-and-overwrite", ["train", *DIGITS, "--resume", "--overwrite", "out_dir={finished}"], ["give one"]),
    ("demo-over-committed-results", ["demo", "--quick", "--out", "results/demo"],
     ["results/demo", "reproduce demo", "does not write over"]),
    ("reproduce-over-another-experiment", ["reproduce", "demo-digits", "--quick", "--out", "results/demo"],
     ["results/demo", "reproduce demo --seeds 1", "does not write over"]),
    ("ray-bad-address", ["sweep", *DIGITS, "--out", "{dir}/s7", "--executor", "ray", "--ray-address", "nope",
                         "epochs=1,2"], ["Ray address 'nope'"]),
    ("ray-unreachable", ["sweep", *DIGITS, "--out", "{dir}/s8", "--executor", "ray", "--ray-address",
                         "127.0.0.1:9", "epochs=1,2"], ["Ray at 127.0.0.1:9"]),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, files):
    _, argv, words = case
    argv = [a.format(**files) for a in argv]
    run_dirs = [Path(a.split("=", 1)[1]) for a in argv if a.startswith("out_dir=")]
    run_dirs += [Path(argv[i + 1]) for i, a in enumerate(argv) if a == "--out" and not argv[i + 1].startswith("results")]
    before = tree_hash(REPO / "results", *run_dirs)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), files["dir"]])}  # usermodels.py
    r = subprocess.run([sys.executable, "-m", "darkknowledge", *argv], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    assert tree_hash(REPO / "results", *run_dirs) == before


def test_the_help_example_distill_with_overrides_is_accepted(tmp_path, files):
    """`distill --config C --teacher X distill.temperature=20` (the --help example) used to fail with
    "distill.teachers: Field required"; now the teachers are set before the overrides are validated."""
    from darkknowledge.cli import build_parser
    from darkknowledge.config import load_config

    args = build_parser().parse_args(["distill", "--config", str(REPO / "configs/digits_mlp.yaml"), "--teacher",
                                      files["m64"], "distill.temperature=20"])
    overrides = [*args.overrides, "distill.teachers=[" + files["m64"] + "]"]
    cfg = load_config(args.config, overrides)
    assert cfg.method_args["temperature"] == 20 and cfg.distill.teachers == [files["m64"]]


# --------------------------------------------------------------------------- the Python API


def _digits_cfg(out: Path, **kw) -> dk.TrainConfig:
    return validate({"name": "b", "epochs": 1, "batch_size": 64, "model": {"name": "mlp", "args": {"in_features": 64,
                     "hidden": [16]}}, "data": {"dataset": "digits", "val_size": 200}, "out_dir": str(out), **kw})


@pytest.mark.parametrize("part", ["train", "val", "test"])
def test_labels_out_of_range_in_any_split_fail_before_training(tmp_path, part):
    cfg = _digits_cfg(tmp_path / "r")
    splits = dk.engine.prepare_data(cfg.data)
    d = getattr(splits, part)
    setattr(splits, part, TensorData(d.x, d.y.clone().fill_(10), d.index))
    with pytest.raises(ValueError, match=f"{part} labels out of range"):
        train(cfg, splits=splits, progress=False)
    assert not (tmp_path / "r").exists()


def test_float_labels_and_short_labels(tmp_path):
    cfg = _digits_cfg(tmp_path / "r")
    splits = dk.engine.prepare_data(cfg.data)
    splits.test = TensorData(splits.test.x, splits.test.y.float(), splits.test.index)
    with pytest.raises(TypeError, match="integer class ids"):
        train(cfg, splits=splits, progress=False)
    with pytest.raises(ValueError, match="examples but y has"):
        TensorData(splits.test.x, splits.test.y[:-1])
    assert not (tmp_path / "r").exists()


def test_altered_teacher_cache_is_detected_and_rebuilt(tmp_path, caplog):
    t = train(_digits_cfg(tmp_path / "t", epochs=3), progress=False)
    assert t["final"]["test"]["accuracy"] > 0.5
    tfile = str(tmp_path / "t" / "best.safetensors")
    s1 = train(_digits_cfg(tmp_path / "s1", distill={"teachers": [tfile]}), progress=False)
    store = tmp_path / "s1" / "teacher_store"
    shard = store / "shard-00000.logits.npy"
    table = np.load(shard)
    np.save(shard, np.roll(table, 1, axis=-1))  # the same size and header, other values
    with pytest.raises(dk.store.StoreError, match="checksum"):
        dk.store.StoredTeacher(store)
    # a second run in the same place rebuilds it (with a warning) and trains exactly as the first
    (tmp_path / "s1" / "run.json").unlink()
    (tmp_path / "s1" / "checkpoint.pt").unlink()
    with caplog.at_level("WARNING"):
        s2 = train(_digits_cfg(tmp_path / "s1", distill={"teachers": [tfile]}), progress=False)
    assert "checksum" in caplog.text
    assert s2["final"]["test"] == s1["final"]["test"]


# --------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["epochs", "batch_size", "optim.lr", "optim.momentum", "data.fraction", "threads",
                            "distill.temperature", "distill.w_hard"]),
       value=st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                       st.text(max_size=5)))
def test_overrides_either_validate_within_range_or_raise_config_error(key, value):
    base = {"distill": {"teachers": ["t.safetensors"]}}
    try:
        cfg = apply_overrides(base, {key.split(".")[0]: {key.split(".")[1]: value}} if "." in key else {key: value})
    except ConfigError as e:
        assert key.split(".")[-1] in str(e)
        return
    got = cfg.model_dump()
    for part in key.replace("distill.", "method_args.").split("."):  # kd's settings are method_args now
        got = got[part]
    assert not isinstance(value, bool) or isinstance(got, bool)  # no bool silently read as a number
    if key in ("epochs", "batch_size"):
        assert isinstance(got, int) and got >= 1
    if key == "optim.momentum":
        assert 0 <= got < 1
    if key in ("optim.lr", "distill.temperature"):
        assert got > 0 and got == got and got != float("inf")


@given(st.lists(st.text(alphabet="abc.=[]0123456789,", max_size=12), max_size=4))
def test_parse_overrides_never_crashes_unclearly(items):
    try:
        parse_overrides(items)
    except ConfigError:
        pass


@settings(max_examples=80, deadline=None)
@given(data=st.binary(max_size=64))
def test_idx_reader_rejects_garbage_with_a_clear_error(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("idx") / "x.idx.gz"
    p.write_bytes(gzip.compress(data))
    try:
        arr = read_idx(p)
    except IDXFormatError:
        return
    # whatever parses must be a consistent IDX file: magic 0x0000, a known type code, dims matching the size
    assert data[:2] == b"\x00\x00"
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    assert tuple(arr.shape) == tuple(dims)


@settings(max_examples=60, deadline=None)
@given(t=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3)),
       bad=st.sampled_from([None, "nan", "inf"]))
def test_soft_targets_inputs_are_checked(t, bad):
    z = torch.randn(4, 5)
    if bad:
        z[1, 2] = float(bad)
    try:
        p = dk.soft_targets(z, t)
    except (ValueError, FloatingPointError):
        return
    assert bad is None
    assert torch.isfinite(p).all() and torch.allclose(p.sum(1), torch.ones(4))


# --------------------------------------------------------------------------- faults


def test_a_silent_server_costs_at_most_the_download_budget(tmp_path):
    """A server that accepts connections but never answers: each URL times out, the total is bounded by the
    budget, and the error names every place looked and every URL tried."""
    import socket
    import time

    from darkknowledge.data.common import DatasetNotFoundError, RemoteFile, locate_files

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)  # connections complete in the backlog; nothing is ever read or written
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/file"
    files = [RemoteFile(f"f{i}", None, (url, url)) for i in range(3)]
    t0 = time.monotonic()
    try:
        with pytest.raises(DatasetNotFoundError) as e:
            locate_files("silent", files, tmp_path / "data", timeout=0.5, budget=1.2)
    finally:
        srv.close()
    assert time.monotonic() - t0 < 6  # six URLs at 0.5 s would be 3 s; the budget stops it after ~1.2 s
    assert "not tried" in str(e.value) and "timed out" in str(e.value)


def test_stale_temp_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path):
    cfg = _digits_cfg(tmp_path / "r")
    train(cfg, progress=False)
    stale = tmp_path / "r" / ".checkpoint.pt.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    (tmp_path / "r" / "run.json").unlink()
    train(cfg, resume=True, progress=False)
    assert not stale.exists()


# --------------------------------------------------------------------------- round two: OS errors, Ctrl-C, faults


def _main(argv: list[str], capsys) -> tuple[int, str]:
    from darkknowledge import cli

    rc = cli.main(argv)
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, ["no space left", "kept as they were"]),
    (errno.EACCES, ["permission denied", "--out"]),
    (errno.EROFS, ["read-only file system"]),
    (errno.EDQUOT, ["quota"]),
])
def test_os_errors_while_writing_are_one_line_naming_the_file(tmp_path, monkeypatch, capsys, code, words):
    import tempfile

    def refuse(*a, dir=None, prefix="", **k):
        raise OSError(code, os.strerror(code), str(Path(dir) / prefix))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    rc, err = _main(["train", *DIGITS, "epochs=1", f"out_dir={tmp_path / 'r'}"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(tmp_path / "r") in err and all(w in err for w in words), err
    assert not (tmp_path / "r" / "run.json").exists()


@pytest.mark.parametrize("command, hint, absent", [
    ("train", "rerun with --resume", None),
    ("demo", "rerun with --resume", None),
    ("sweep", "rerun the same command", "--resume"),
    ("ensemble", "rerun the same command", "--resume"),
    ("evaluate", "nothing was written", "--resume"),
])
def test_ctrl_c_names_resume_only_where_the_command_takes_it(monkeypatch, capsys, command, hint, absent):
    from darkknowledge import cli

    def interrupted(args):
        raise KeyboardInterrupt

    name = {"train": "_train_cmd", "demo": "_demo_cmd", "sweep": "_sweep_cmd", "ensemble": "_ensemble_cmd",
            "evaluate": "_evaluate_cmd"}[command]
    monkeypatch.setattr(cli, name, interrupted)
    argv = {"train": ["train"], "demo": ["demo"], "sweep": ["sweep", "--out", "x"],
            "ensemble": ["ensemble", "--members", "2", "--out", "x"], "evaluate": ["evaluate", "m"]}[command]
    rc, err = _main(argv, capsys)
    assert rc == 130 and hint in err and len(err.splitlines()) == 1
    assert absent is None or absent not in err
    assert hasattr(cli.build_parser().parse_args(argv), "resume") == (command in cli.RESUMABLE)


def test_a_bug_keeps_its_traceback_and_debug_shows_a_user_errors(monkeypatch, capsys):
    from darkknowledge import cli

    def bug(args):
        raise ZeroDivisionError("a bug")

    def mistake(args):
        raise ValueError("your mistake")

    monkeypatch.setattr(cli, "_evaluate_cmd", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["evaluate", "m"])
    monkeypatch.setattr(cli, "_evaluate_cmd", mistake)
    assert _main(["evaluate", "m"], capsys) == (2, "darkknowledge evaluate: error: your mistake")
    with pytest.raises(ValueError):
        cli.main(["--debug", "evaluate", "m"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError):
        cli.main(["evaluate", "m"])


def test_files_honour_the_umask(tmp_path):
    from darkknowledge.utils import atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640


# One writer each: make the state it writes over, then run the command that writes it again, failing at that
# file (disk full: fsync raises ENOSPC; kill: the process dies between writing the temporary file and renaming
# it). Every file that was there before must be byte-identical afterwards, and no temporary file is left.

def _writer_run(tmp_path: Path, target: str):
    """(setup, again, folder) for the writer of ``target``."""
    from darkknowledge.engine.fanout import sweep, train_ensemble
    from darkknowledge.engine.jobs import cached_eval
    from darkknowledge.report import Results

    out = tmp_path / "w"
    cfg = _digits_cfg(out, optim={"name": "adam", "lr": 1e-3})
    if target in ("run.json", "checkpoint.pt", "best.safetensors"):
        return (lambda: train(cfg, progress=False),
                lambda: train(_digits_cfg(out, seed=1), overwrite=True, progress=False), out)
    if target == "sweep.json":
        return (lambda: sweep(cfg, ["seed=0,1"], out, progress=False),
                lambda: sweep(cfg, ["seed=0,1,2"], out, progress=False), out)
    if target == "ensemble.json":
        return (lambda: train_ensemble(cfg, 1, out, progress=False),
                lambda: train_ensemble(cfg, 2, out, progress=False), out)
    if target == "summary.json":
        def commit(v):
            res = Results(out)
            res.write_json("summary.json", {"v": v})
            res.commit({"command": "x"}, lambda p: f"report {v}")
        return (lambda: commit(1), lambda: commit(2), out)
    assert target == "eval.json"
    return (lambda: (train(cfg, progress=False), cached_eval(out, "a", lambda: {"a": 1})),
            lambda: cached_eval(out, "b", lambda: {"b": 2}), out)


WRITERS = ["run.json", "checkpoint.pt", "best.safetensors", "sweep.json", "ensemble.json", "summary.json", "eval.json"]


@pytest.mark.parametrize("mode", ["disk-full", "kill"])
@pytest.mark.parametrize("target", WRITERS)
def test_a_failing_writer_loses_nothing(tmp_path, monkeypatch, target, mode):
    setup, again, folder = _writer_run(tmp_path, target)
    setup()
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".lock")}
    assert any(p.name == target for p in before)
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{target}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        if Path(dst).name == target and Path(src).name.startswith(f".{target}.") and Path(src).name.endswith(".tmp"):
            raise KeyboardInterrupt  # the kill, between the write and the rename
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync" if mode == "disk-full" else "replace", fsync if mode == "disk-full" else replace)
    with pytest.raises(OSError if mode == "disk-full" else KeyboardInterrupt) as e:
        again()
    if mode == "disk-full":  # the error names the file being written, not its temporary twin
        assert e.value.errno == errno.ENOSPC and Path(e.value.filename).name == target
    monkeypatch.undo()
    for p, data in before.items():
        assert p.is_file() and p.read_bytes() == data, p
    assert not [p for p in folder.rglob(".*.tmp")]
