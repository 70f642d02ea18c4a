"""Tables that answer the user's question (issue 25, points 5-7): the ensemble's own row, a labels-only
baseline row in a distillation sweep, typed grid values, a warning before training when the teacher is not
ahead of a labels baseline, integers in metrics.csv, ``[jobs]`` lines as each job finishes, import-path
models from the working directory, and ``evaluate --dataset`` without the network."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch

import darkknowledge as dk
from darkknowledge.cli import main
from darkknowledge.config import validate
from darkknowledge.engine.jobs import Job, SerialExecutor, run_jobs
from darkknowledge.metrics import labels_baseline_accuracy

TINY = ["epochs=1", "threads=1", "batch_size=100", "data.dataset=digits", "data.val_size=200",
        "model.name=mlp", "model.args={in_features: 64, hidden: [16]}", "optim.lr=0.05"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "t"
    base = [t for t in TINY[:-2] if not t.startswith("epochs=")]  # an override given twice is an error
    assert main(["train", "--out", str(out), "--no-progress", *base, "model.args={in_features: 64, "
                 "hidden: [128]}", "epochs=40", "optim.name=adam", "optim.lr=0.01", "optim.schedule=constant"]) == 0
    assert json.loads((out / "run.json").read_text())["final"]["val"]["accuracy"] > 0.96
    return out / "best.safetensors"


def test_a_distillation_sweep_has_labels_only_rows_and_typed_values(teacher, tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "--teacher", str(teacher), "--out", str(out), "--no-progress", *TINY,
                 "method_args.temperature=1,4", "model.args.hidden=[8],[16]"]) == 0
    res = json.loads((out / "sweep.json").read_text())
    assert [a["values"] for a in res["axes"]] == [[1, 4], [[8], [16]]]  # typed, as the config reads them
    assert {json.dumps(c["values"], sort_keys=True) for c in res["cells"]} == {
        json.dumps({"method_args.temperature": t, "model.args.hidden": h}, sort_keys=True)
        for t in (1, 4) for h in ([8], [16])}
    # one labels-only run per value of the non-distillation axis, no teacher in it
    assert [b["values"] for b in res["baseline"]] == [{"model.args.hidden": [8]}, {"model.args.hidden": [16]}]
    for b in res["baseline"]:
        rec = json.loads((Path(b["out_dir"]) / "run.json").read_text())
        assert rec["config"]["distill"] is None and rec["config"]["method"] is None
        assert rec["config"]["model"]["args"]["hidden"] == b["values"]["model.args.hidden"]
        assert b["test_accuracy"] == rec["final"]["test"]["accuracy"]
    table = capsys.readouterr().out
    assert table.count("| labels only |") == 2
    assert main(["sweep", "--teacher", str(teacher), "--out", str(tmp_path / "sw2"), "--no-progress", "--no-baseline",
                 *TINY, "method_args.temperature=1,4"]) == 0
    assert json.loads((tmp_path / "sw2" / "sweep.json").read_text())["baseline"] == []


def test_the_ensemble_row_is_its_members_combined(tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["ensemble", "--members", "2", "--out", str(out), "--no-progress", *TINY]) == 0
    m = json.loads((out / "ensemble.json").read_text())
    assert "ensemble of 2 (arithmetic)" in capsys.readouterr().out
    # independently: the mean of the members' softmax outputs on the test split
    test = dk.data.load_dataset("digits", val_size=200).test
    models = [dk.load_model(out / f"member{i}" / "best.safetensors") for i in range(2)]
    with torch.no_grad():
        p = torch.stack([torch.softmax(mm.eval()(test.x), 1) for mm in models]).mean(0)
    assert m["ensemble"]["test"]["errors"] == int((p.argmax(1) != test.y).sum())


def test_a_teacher_behind_a_labels_baseline_is_warned_about_before_training(teacher, tmp_path):
    weak = tmp_path / "weak.safetensors"
    dk.save_model(dk.create_model("mlp", in_features=64, hidden=[32], num_classes=10), weak, "mlp",
                  {"in_features": 64, "hidden": [32], "num_classes": 10})  # untrained: chance level
    for t, warned in ((weak, True), (teacher, False)):
        out = tmp_path / f"d-{t.stem}"
        assert main(["distill", "--teacher", str(t), "--out", str(out), "--no-progress", *TINY]) == 0
        rec = json.loads((out / "run.json").read_text())
        hit = [w for w in rec.get("warnings", []) if "not ahead of a labels-only baseline" in w]
        assert bool(hit) == warned, rec.get("warnings")
    # metrics.csv: counts stay integers
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows[0]["epoch"] == "1" and rows[0]["val/errors"].isdigit() and "." in rows[0]["val/accuracy"]


def test_the_labels_baseline_is_a_logistic_regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 5, generator=g)
    y = (x[:, 0] > 0).long()  # linearly separable
    assert labels_baseline_accuracy(x[:400], y[:400], x[400:], y[400:]) >= 0.97
    assert labels_baseline_accuracy(x[:400], torch.zeros(400, dtype=torch.long), x[400:], y[400:]) is None
    assert labels_baseline_accuracy(torch.zeros(10, 5000), y[:10], torch.zeros(4, 5000), y[:4]) is None  # too wide


def test_jobs_report_as_each_finishes(tmp_path, capsys):
    """Under the serial executor a job runs when submitted: each ``[jobs] k/N`` line must come before the
    next job starts, not all at the end."""

    class Spy(SerialExecutor):
        def submit(self, job, progress=False):
            print("[submit]", file=sys.stderr)
            return super().submit(job, False)

    base = validate({"epochs": 1, "threads": 1, "data": {"dataset": "digits", "val_size": 200, "fraction": 0.2},
                     "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [8]}}}).model_dump()
    jobs = [Job({**base, "seed": i, "out_dir": str(tmp_path / f"j{i}")}) for i in range(3)]
    run_jobs(jobs, Spy(), progress=True)
    lines = [ln.split(" ")[0] + (ln.split(" ")[1] if ln.startswith("[jobs]") else "")
             for ln in capsys.readouterr().err.splitlines() if ln.startswith(("[submit]", "[jobs]"))]
    assert lines == ["[submit]", "[jobs]1/3", "[submit]", "[jobs]2/3", "[submit]", "[jobs]3/3"]


def test_an_import_path_model_in_the_working_directory_is_found(tmp_path, monkeypatch):
    """As ``python -m`` has it, though a console script's sys.path lacks the working directory."""
    (tmp_path / "cwdnets.py").write_text("import torch\n\nclass Net(torch.nn.Linear):\n"
                                         "    def __init__(self, num_classes=3):\n"
                                         "        super().__init__(4, num_classes)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    assert dk.create_model("cwdnets:Net", num_classes=5).out_features == 5
    assert sys.path[-1] == str(tmp_path)  # appended: installed packages still win
    with pytest.raises(KeyError, match="looked in the working directory"):
        dk.create_model("nosuchmod:Net")


def test_evaluate_never_downloads_unless_asked(tmp_path, monkeypatch, capsys):
    import urllib.request

    import darkknowledge.data.common as common

    def no_network(*a, **k):
        raise AssertionError("evaluate reached for the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(common, "DEFAULT_CACHE", tmp_path / "cache")
    monkeypatch.setenv("DARKKNOWLEDGE_DATA", str(tmp_path / "env"))
    model = tmp_path / "m.safetensors"
    dk.save_model(dk.create_model("mlp", num_classes=10), model, "mlp", {"num_classes": 10})
    assert main(["evaluate", str(model), "--dataset", "mnist", "--data-dir", str(tmp_path / "empty")]) == 2
    assert "downloading disabled" in capsys.readouterr().err


def test_evaluate_reads_only_the_data_of_a_distill_config(tmp_path, capsys):
    """A student config whose teachers come from ``distill --teacher`` names its data all the same;
    ``--split val`` scores the validation split the run selected on; a missing model file is said first."""
    (tmp_path / "c.yaml").write_text("model: {name: mlp}\ndata: {dataset: digits, val_size: 200}\n"
                                     "distill: {temperature: 4}\n")
    model = tmp_path / "m.safetensors"
    dk.save_model(dk.create_model("mlp", in_features=64, num_classes=10), model, "mlp",
                  {"in_features": 64, "num_classes": 10})
    assert main(["evaluate", str(model), "--config", str(tmp_path / "c.yaml"), "--split", "val"]) == 0
    assert "digits val split (200 examples)" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "nope.safetensors"), "--config", str(tmp_path / "c.yaml")]) == 2
    assert "model file not found" in capsys.readouterr().err
