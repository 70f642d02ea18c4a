"""``darkknowledge.report`` and the stage runner: numbers, paper-vs-ours tables, templates, a results folder
written as a whole, and every migrated committed report re-rendered byte for byte from its records."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from darkknowledge.config import validate
from darkknowledge.engine.jobs import Job, register_job_kind
from darkknowledge.engine.stages import Experiment, Outcome, Stage, run_experiment
from darkknowledge.report import (
    Results,
    SummaryView,
    Vs,
    count,
    fmt,
    paper_table,
    pct,
    provenance,
    render,
    summarize,
)
from darkknowledge.utils import atomic_write_json

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- numbers, tables, templates


def test_numbers():
    e = summarize({"a": [1.0, 2.0, 4.0], "none": []})
    assert set(e) == {"a"}
    assert e["a"]["std"] == pytest.approx(1.5275252316519468)  # sample std (ddof 1) of 1, 2, 4
    assert fmt(e["a"]) == "2.33 ± 1.53 (n=3)"
    assert fmt(summarize({"x": [0.5]})["x"], 1, show_n="multi") == "0.5 ± 0.0"
    assert pct(summarize({"x": [0.25, 0.75]})["x"]) == "50.00 ± 35.36 (n=2)"
    assert fmt(None) == "–" and fmt({"mean": float("nan"), "std": 0.0, "n": 1}) == "–"
    assert count(12326.0) == "12,326" and count(None) == "–"


def test_summary_tables_are_kept_as_rows():
    rows = [{"params": 10, "rel_gain": 0.1}, {"params": 20, "rel_gain": -0.2}]
    out = summarize({"sweep": rows, "a": [1.0]})
    assert out["sweep"] == rows and out["sweep"] is not rows and out["a"]["n"] == 1
    made = {"mean": 0.5, "std": 0.1, "n": 6, "values": [0.4, None], "estimator": "ratio of means"}
    assert summarize({"kept": made})["kept"] == made
    with pytest.raises(TypeError, match="not both"):
        summarize({"mixed": [1.0, {"x": 1}]})


def test_paper_table_rows_are_data():
    summary = summarize({"acc": [0.80, 0.82]})
    rows = [("baseline", Vs("acc", paper=0.589, scale=100, unit="%"), "x"),
            ("no paper value", Vs("acc", scale=100), "y"),
            ("neither", Vs(None, paper="63.4%"), "z")]
    assert paper_table(["system", "paper", "ours (%)", "note"], rows, summary) == (
        "| system | paper | ours (%) | note |\n|---|---|---|---|\n"
        "| baseline | 58.9% | 81.00 ± 1.41 (n=2) | x |\n"
        "| no paper value | – | 81.00 ± 1.41 (n=2) | y |\n"
        "| neither | 63.4% | – | z |")


def test_template_formats_summary_entries():
    S = SummaryView(summarize({"wer": [0.1, 0.2], "t": [2.0]}))  # noqa: N806
    out = render("{S.wer:2%} | {S.t:1} | {S.missing:2} | {x:.3f} | {S.t[mean]:g}", S=S, x=1 / 3)
    assert out == "15.00 ± 7.07 (n=2) | 2.0 ± 0.0 (n=1) | – | 0.333 | 2"
    with pytest.raises(ValueError, match="format spec"):
        render("{S.wer:.2f}", S=S)


# --------------------------------------------------------------------------- a results folder as a whole


def _folder(tmp_path: Path) -> Path:
    out = tmp_path / "res"
    out.mkdir()
    (out / "summary.json").write_text("old summary\n")
    (out / "figure.png").write_bytes(b"old figure")
    atomic_write_json(out / "provenance.json", {"git_commit": "old"})
    (out / "report.md").write_text("commit old: old summary\n")
    return out


def _report(res: Results):
    return lambda prov: f"commit {prov['git_commit']}: {res.path('summary.json').read_text()}"


def test_a_failing_render_leaves_the_folder_as_it_was(tmp_path):
    out = _folder(tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = Results(out)
    res.write_text("summary.json", "new summary\n")
    res.write_text("figure.png", "new figure")
    res.discard()  # what the runner does on an exception before the swap
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_provenance_is_kept_when_nothing_changed_and_renewed_otherwise(tmp_path):
    out = _folder(tmp_path)
    res = Results(out)
    res.write_text("summary.json", "old summary\n")
    assert res.commit({"git_commit": "new"}, _report(res)) is False
    assert json.loads((out / "provenance.json").read_text()) == {"git_commit": "old"}
    assert not (out / ".staging").exists()
    res = Results(out)
    res.write_text("summary.json", "new summary\n")
    assert res.commit({"git_commit": "new"}, _report(res)) is True
    assert (out / "report.md").read_text() == "commit new: new summary\n"
    assert json.loads((out / "provenance.json").read_text()) == {"git_commit": "new"}
    assert (out / "figure.png").read_bytes() == b"old figure"  # not produced this time: kept


def test_a_swap_killed_half_way_is_finished_by_the_next_results(tmp_path):
    out = _folder(tmp_path)
    staging = out / ".staging"
    staging.mkdir()
    (staging / "summary.json").write_text("new summary\n")
    (staging / "report.md").write_text("new report\n")
    (staging / "COMPLETE").write_bytes(b"")
    os.replace(staging / "summary.json", out / "summary.json")  # killed after the first file
    Results(out).discard()
    assert (out / "report.md").read_text() == "new report\n" and not staging.exists()
    # an incomplete staging folder (killed while rendering) is dropped, not swapped in
    staging.mkdir()
    (staging / "report.md").write_text("half\n")
    Results(out).discard()
    assert (out / "report.md").read_text() == "new report\n"


# --------------------------------------------------------------------------- the stage runner


@register_job_kind("test-fake-run")
def fake_run(config, *, progress, need_weights, errors: int) -> dict:
    """A "run" that only writes its record: the runner's bookkeeping without training."""
    rec = {"config": validate(config).model_dump(), "final": {"test": {"errors": errors}}, "wall_time_s": 1.0}
    atomic_write_json(Path(config["out_dir"]) / "run.json", rec)
    return rec


def _cfg(out: Path, name: str, seed: int) -> dict:
    return {"name": name, "seed": seed, "epochs": 1, "model": {"name": "mlp", "args": {"in_features": 64}},
            "data": {"dataset": "digits"}, "out_dir": str(out / "runs" / f"{name}{seed}")}


def _toy(calls: list[str]) -> Experiment:
    def jobs(name: str):
        return lambda ctx: [Job(_cfg(ctx.out, name, k), {"errors": 10 * (name == "b") + k}, kind="test-fake-run")
                            for k in ctx.seeds]

    def numbers(name: str):
        def collect(ctx, recs):
            calls.append(name)
            return Outcome({f"{name}_errors": [r["final"]["test"]["errors"] for r in recs]}, {name: len(recs)})
        return collect

    return Experiment("toy", settings=lambda quick: {"quick": quick}, default_seeds=lambda s: 3,
                      stages=[Stage("a", jobs("a"), numbers("a")), Stage("b", jobs("b"), numbers("b"))],
                      summary_keys=["b_errors", "a_errors"],
                      report=lambda ctx, summary, prov: render("{S.a_errors:1} / {S.b_errors:1}\n",
                                                               S=SummaryView(summary)))


def test_stage_runner_runs_selects_and_rerenders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls: list[str] = []
    exp = _toy(calls)
    summary = run_experiment(exp, "out", seeds=2, only="a", progress=False)
    assert list(summary) == ["a_errors"] and calls == ["a"]  # b: not selected, none of its runs finished
    assert json.loads(Path("out/details.json").read_text()) == {"a": 2}
    summary = run_experiment(exp, "out", seeds=2, progress=False)
    assert list(summary) == ["b_errors", "a_errors"] and summary["b_errors"]["values"] == [10, 11]
    assert Path("out/report.md").read_text() == "0.5 ± 0.7 (n=2) / 10.5 ± 0.7 (n=2)\n"
    prov = json.loads(Path("out/provenance.json").read_text())
    assert prov["command"] == "darkknowledge reproduce toy --seeds 2" and prov["seeds"] == [0, 1]
    # --only a with 3 seeds: b is reported with the 2 seeds whose runs have finished
    summary = run_experiment(exp, "out", seeds=3, only="a", progress=False)
    assert summary["a_errors"]["n"] == 3 and summary["b_errors"]["n"] == 2
    with pytest.raises(ValueError, match="unknown stage 'c'; stages: a, b"):
        run_experiment(exp, "out", only="c", progress=False)


def test_provenance_fields():
    p = provenance("darkknowledge reproduce x", 1.5, [0, 1])
    assert p["command"] == "darkknowledge reproduce x" and p["seeds"] == [0, 1] and p["wall_time_s"] == 1.5
    assert {"git_commit", "machine", "python"} <= set(p)


# --------------------------------------------------------------------------- committed reports re-render


def _data_dir(need: str) -> str:
    for d in (os.environ.get("DARKKNOWLEDGE_DATA"), str(REPO.parent / "shared" / "data")):
        if d and (Path(d) / need).exists():
            return d
    pytest.skip(f"{need} not found")


RERENDER = [  # (experiment, results folder, options, the data it needs)
    ("demo", "results/demo", {"seeds": 1}, "mnist/train-images-idx3-ubyte.gz"),
    ("demo-digits", "results/demo-digits", {"seeds": 3}, None),
    ("demo-digits", "results/demo-digits", {"seeds": 3, "quick": True}, None),
    ("hinton-speech", "results/hinton-speech", {}, "fsdd/fsdd.npz"),
    ("subclass-mnist-2x5", "results/subclass-mnist-2x5", {"seeds": 3}, "mnist/train-images-idx3-ubyte.gz"),
    ("subclass-clickthrough", "results/subclass-clickthrough", {"seeds": 3}, "criteo-sample"),
    ("subclass-cifar-2x5", "results/subclass-cifar-2x5", {"seeds": 3}, "cifar10-jpeg/cifar10_jpeg_q75.tar.gz"),
    ("hinton-mnist", "results/hinton-mnist", {}, None),
    ("consistent-teaching", "results/consistent-teaching", {}, "fsdd/fsdd.npz"),
    ("hinton-specialists", "results/hinton-specialists", {}, "omniglot-small/images_background_small1.zip"),
]


@pytest.mark.parametrize("name,folder,opts,need", RERENDER)
def test_committed_report_rerenders_byte_for_byte(name, folder, opts, need, tmp_path, monkeypatch):
    """A fresh clone's records (no weights) re-render the committed folder exactly, training nothing."""
    import darkknowledge.engine.jobs as jobs
    from darkknowledge.experiments import get_experiment

    data_dir = _data_dir(need) if need else None
    shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "stores",
                                                                                   "checkpoint*", ".staging"))
    monkeypatch.chdir(tmp_path)

    def boom(*a, **k):
        raise AssertionError("a committed report must re-render without training")

    monkeypatch.setattr(jobs, "train", boom)
    sub = Path(folder) / ("quick" if opts.get("quick") else "")
    before = {p.name: p.read_bytes() for p in sub.iterdir() if p.is_file()}
    get_experiment(name)(out=folder, data_dir=data_dir, progress=False, **opts)
    after = {p.name: p.read_bytes() for p in sub.iterdir() if p.is_file()}
    assert sorted(after) == sorted(before)
    for f in before:
        assert after[f] == before[f], f"{sub / f} changed"
