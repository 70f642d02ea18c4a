"""The README's promises: its test command is what CI runs, its Python example runs, the CLI works."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from darkknowledge.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_demo_and_test_commands():
    blocks = _bash_blocks()
    assert "darkknowledge demo" in blocks[0]
    assert "pytest" in blocks[1]
    assert "torch==2.13.0" in blocks[0] and "torch==2.13.0" in blocks[1]


def test_ci_runs_the_readme_test_command():
    test_cmd = _bash_blocks()[1].strip()
    ci = (REPO / ".ci" / "run").read_text()
    # CI splits the README line at its `&&`s; every part must appear verbatim, in order
    parts = [p.strip() for p in test_cmd.split("&&")]
    pos = 0
    for p in parts:
        p_ci = p.replace(" -e", " -q torch==2.13.0 -e").replace("torch==2.13.0 -q torch==2.13.0", "-q torch==2.13.0") \
            if "pip install" in p else p
        i = ci.find(p_ci, pos)
        assert i >= 0, f"CI does not run the README step {p!r}"
        pos = i


def test_readme_python_example_runs():
    code = re.findall(r"```python\n(.*?)```", README, flags=re.S)[0]
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith("#")]) <= 20
    exec(compile(code, "README.md", "exec"), {})


def test_cli_train_evaluate_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--config", str(REPO / "configs" / "digits_mlp.yaml"), "--no-progress",
               f"out_dir={out}", "epochs=2"])
    assert rc == 0
    assert (out / "run.json").exists()
    rc = main(["evaluate", str(out / "best.safetensors"), "--dataset", "digits", "--json", str(tmp_path / "m.json")])
    assert rc == 0
    assert "accuracy" in json.loads((tmp_path / "m.json").read_text())[str(out / "best.safetensors")]
    capsys.readouterr()
    # distil from it, as a two-member ensemble
    rc = main(["distill", "--config", str(REPO / "configs" / "digits_mlp.yaml"), "--teacher",
               str(out / "best.safetensors"), "--teacher", str(out / "best.safetensors"), "--no-progress",
               f"out_dir={tmp_path / 'student'}", "epochs=1", "model.args.hidden=[16]"])
    assert rc == 0
    assert "agreement" in capsys.readouterr().out
    # bad input: a clear error, exit code 2, no traceback
    assert main(["train", "--config", str(REPO / "configs" / "digits_mlp.yaml"), "optim.lrr=3"]) == 2
    assert "optim.lrr" in capsys.readouterr().err
    assert main(["train", "--config", str(REPO / "configs" / "digits_mlp.yaml"), f"out_dir={out}"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["distill", "--config", str(REPO / "configs" / "digits_mlp.yaml"), "--teacher",
                 str(out / "best.safetensors"), "distill.temperature=0", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "temperature" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.safetensors"), "--dataset", "digits"]) == 2


def test_missing_dataset_error_names_places(tmp_path, monkeypatch):
    from darkknowledge.data import DatasetNotFoundError, load_dataset

    monkeypatch.setenv("DARKKNOWLEDGE_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("mnist", data_dir=tmp_path / "flag", download=False)
    msg = str(e.value)
    assert str(tmp_path / "flag") in msg and str(tmp_path / "env") in msg
    assert "--data-dir" in msg and "DARKKNOWLEDGE_DATA" in msg


@pytest.mark.slow  # end-to-end tier: the quick demo
def test_demo_quick_on_digits_trains_and_compares(tmp_path, monkeypatch):
    """The demo trains every time into a fresh folder under runs/demo (never into the repository), writes its
    report and figure, and compares itself with the committed reference runs."""
    from darkknowledge.experiments.demo import run_demo

    monkeypatch.chdir(tmp_path)
    summary = run_demo(quick=True, dataset="digits", progress=False)
    (run,) = list((tmp_path / "runs" / "demo").iterdir())
    for k in ("teacher_errors", "baseline_errors", "distilled_errors", "distilled_agreement"):
        assert summary[k]["n"] == 1
    report = (run / "report.md").read_text()
    assert report.startswith("# darkknowledge demo (digits, quick)") and "QUICK MODE" in report
    assert (run / "demo.png").stat().st_size > 5000
    recs = {m: json.loads((run / "runs" / m / "run.json").read_text()) for m in ("teacher", "baseline", "distilled")}
    assert summary["baseline_errors"]["mean"] == recs["baseline"]["final"]["test"]["errors"]
    assert summary["teacher_errors"]["mean"] == recs["distilled"]["final"]["teacher_test"]["errors"]
    ref = REPO / "results" / "demo-digits" / "quick" / "summary.json"
    if ref.exists():  # the comparison quotes the committed reference numbers
        r = json.loads(ref.read_text())["baseline_accuracy"]
        assert f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}" in report
    # a second demo goes to a new folder; --resume continues the newest one without training again
    run_demo(quick=True, dataset="digits", progress=False)
    assert len(list((tmp_path / "runs" / "demo").iterdir())) == 2
    again = run_demo(quick=True, dataset="digits", progress=False, resume=True)
    assert again == json.loads(sorted((tmp_path / "runs" / "demo").iterdir())[-1].joinpath("summary.json").read_text())


def test_python_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "darkknowledge", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "darkknowledge" in r.stdout
