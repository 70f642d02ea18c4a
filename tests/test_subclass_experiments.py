"""Quick modes of the five subclass-distillation experiments (CI smoke tests) and the Criteo loader.

The MNIST experiments share one results folder so that ``subclass-data-efficiency`` and
``subclass-ablation`` reuse the quick ``subclass-mnist-2x5`` teacher, as the full runs do.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from darkknowledge.experiments import get_experiment

# the real datasets folder beside the repo (as in conftest.py), or $DARKKNOWLEDGE_DATA
SHARED_DATA = os.environ.get("DARKKNOWLEDGE_DATA") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

NAMES = ("subclass-mnist-2x5", "subclass-data-efficiency", "subclass-ablation", "subclass-clickthrough",
         "subclass-cifar-2x5")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("subclass-results")


def _check_summary(out: Path, keys) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    for k in keys:
        assert k in summary, k
    for k, e in summary.items():
        assert set(e) >= {"mean", "std", "n", "values"}, k
        assert e["n"] == len(e["values"]) >= 1, k
        assert all(isinstance(v, float) and math.isfinite(v) for v in e["values"]), k
        # mean and sample standard deviation (ddof = 1; 0 for one value), recomputed
        assert e["mean"] == pytest.approx(math.fsum(e["values"]) / e["n"], rel=1e-12, abs=1e-12), k
        assert e["std"] == pytest.approx(statistics.stdev(e["values"]) if e["n"] > 1 else 0.0, rel=1e-9, abs=1e-12), k
    assert (out / "report.md").read_text().strip()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["quick"] is True and prov["stage_wall_time_s"]
    assert list(out.glob("*.png"))
    return summary


# ------------------------------------------------------------------ summaries recomputed from the run records


def _record(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _acc(run: Path) -> float:
    return 100 * _record(run)["final"]["test"]["accuracy"]


def _nmi(c: np.ndarray) -> float:
    """Mutual information over the mean of the two entropies (arithmetic NMI), from a contingency table."""
    p = c / c.sum()
    px, py = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(px, py)[nz])).sum())

    def h(q: np.ndarray) -> float:
        return float(-(q[q > 0] * np.log(q[q > 0])).sum())

    return mi / ((h(px) + h(py)) / 2)


def _subclass_eval(run: Path, subclasses: int = 5) -> dict:
    """A run's cached subclass evaluation, checked against its own contingency table
    ``C[predicted subclass, fine label]`` and the run record."""
    from scipy.optimize import linear_sum_assignment

    ev = json.loads((run / "eval.json").read_text())["subclass_eval_test"]["value"]
    c = np.asarray(ev["contingency"])
    n = c.sum()
    assert n == _record(run)["dataset"]["test"]
    assert ev["accuracy"] == pytest.approx(_record(run)["final"]["test"]["accuracy"], abs=2e-4)  # ties: ≤ 1 example
    assert ev["counts"] == c.sum(1).tolist()
    assert ev["num_used"] == int((c.sum(1) >= 0.01 * n).sum())  # subclasses with ≥ 1 % of the examples
    r, k = linear_sum_assignment(-c)
    assert ev["recovery"] == pytest.approx(c[r, k].sum() / n, abs=1e-12)  # the best one-to-one matching
    assert ev["recovery"] <= min(c.max(0).sum(), c.max(1).sum()) / n
    same_class = (np.arange(c.shape[0])[:, None] // subclasses) == (np.arange(c.shape[1])[None, :] // subclasses)
    cw = np.where(same_class, c, 0)
    r, k = linear_sum_assignment(-cw)
    assert ev["recovery_within"] == pytest.approx(cw[r, k].sum() / n, abs=1e-12)
    assert ev["recovery_within"] <= ev["recovery"]
    assert ev["nmi"] == pytest.approx(_nmi(c), rel=1e-9, abs=1e-12)
    return ev


def _values(summary: dict, key: str) -> list[float]:
    return summary[key]["values"]


def check_mnist_2x5(out: Path, runs: Path, seeds: range) -> None:
    """Every summary number of subclass-mnist-2x5 from the run records and evaluation caches."""
    s = json.loads((out / "summary.json").read_text())
    for name in ("teacher", "scratch", "conventional", "penultimate", "subclass"):
        assert _values(s, f"{name}_acc") == pytest.approx([_acc(runs / f"{name}_seed{i}") for i in seeds]), name
    for name in ("conventional", "penultimate", "subclass"):
        agree = [100 * _record(runs / f"{name}_seed{i}")["final"]["test"]["agreement"] for i in seeds]
        assert _values(s, f"{name}_agreement") == pytest.approx(agree), name
    for who, run, keys in (("teacher", "teacher", ("subclass_recovery", "nmi", "subclasses_used")),
                           ("student", "subclass", ("subclass_recovery", "nmi", "subclasses_used"))):
        evs = [_subclass_eval(runs / f"{run}_seed{i}") for i in seeds]
        field = {"subclass_recovery": lambda e: 100 * e["recovery"], "nmi": lambda e: e["nmi"],
                 "subclasses_used": lambda e: e["num_used"]}
        for k in keys:
            assert _values(s, f"{who}_{k}") == pytest.approx([field[k](e) for e in evs]), (who, k)
    within = [100 * _subclass_eval(runs / f"teacher_seed{i}")["recovery_within"] for i in seeds]
    assert _values(s, "teacher_subclass_recovery_within_class") == pytest.approx(within)
    # the teacher was trained with the auxiliary loss on the class labels only
    for i in seeds:
        rec = _record(runs / f"teacher_seed{i}")
        assert rec["config"]["method"] == "subclass_teacher" and rec["config"]["method_args"]["beta"] > 0
        assert all(set(e["train_loss"]) == {"ce", "aux"} for e in rec["epochs"])


def check_data_efficiency(out: Path, runs: Path, teacher_runs: Path, seeds: range) -> None:
    """Each student's accuracy and training-set size (p % of the teacher's) from its run record."""
    from darkknowledge.experiments.subclass_data_efficiency import METHODS, PERCENTS

    s = json.loads((out / "summary.json").read_text())
    full = {i: _record(teacher_runs / f"teacher_seed{i}")["dataset"]["train"] for i in seeds}
    for p in PERCENTS:
        for m in METHODS:
            runs_mp = [runs / f"{m}_{p}pct_seed{i}" for i in seeds]
            assert _values(s, f"{m}_acc_{p}pct") == pytest.approx([_acc(r) for r in runs_mp]), (m, p)
            for i, r in zip(seeds, runs_mp):
                assert _record(r)["dataset"]["train"] == max(1, round(p / 100 * full[i])), (m, p)
        for m in ("scratch", "conventional"):
            diff = np.subtract(_values(s, f"subclass_acc_{p}pct"), _values(s, f"{m}_acc_{p}pct"))
            assert _values(s, f"subclass_minus_{m}_{p}pct") == pytest.approx(diff.tolist()), (m, p)


def check_ablation(out: Path, runs: Path, aux_runs: Path, seeds: range) -> None:
    """The no-aux teacher really had β = 0 (no "aux" term logged), and every summary number comes from the
    runs: the no-aux runs here, the aux runs shared with subclass-mnist-2x5."""
    s = json.loads((out / "summary.json").read_text())
    for tag, teacher, student in (("noaux", runs / "teacher_beta0_seed{}", runs / "subclass_beta0_seed{}"),
                                  ("aux", aux_runs / "teacher_seed{}", aux_runs / "subclass_seed{}")):
        t_runs = [Path(str(teacher).format(i)) for i in seeds]
        s_runs = [Path(str(student).format(i)) for i in seeds]
        for t in t_runs:
            beta = _record(t)["config"]["method_args"]["beta"]
            assert (beta == 0) == (tag == "noaux"), (tag, beta)
            keys = {"ce"} if tag == "noaux" else {"ce", "aux"}
            assert all(set(e["train_loss"]) == keys for e in _record(t)["epochs"]), tag
        for t, st in zip(t_runs, s_runs):  # each student distilled from its own teacher
            (teacher_file,) = _record(st)["config"]["distill"]["teachers"]
            assert Path(teacher_file).parts[-3:] == (t.parent.name, t.name, "best.safetensors"), (st, teacher_file)
        t_evs = [_subclass_eval(t) for t in t_runs]
        assert _values(s, f"{tag}_teacher_acc") == pytest.approx([_acc(t) for t in t_runs]), tag
        assert _values(s, f"{tag}_teacher_subclasses_used") == [e["num_used"] for e in t_evs], tag
        assert _values(s, f"{tag}_teacher_subclass_recovery") == pytest.approx([100 * e["recovery"] for e in t_evs])
        assert _values(s, f"{tag}_teacher_nmi") == pytest.approx([e["nmi"] for e in t_evs]), tag
        assert _values(s, f"{tag}_subclass_acc") == pytest.approx([_acc(r) for r in s_runs]), tag
        rec = [100 * _subclass_eval(r)["recovery"] for r in s_runs]
        assert _values(s, f"{tag}_student_subclass_recovery") == pytest.approx(rec), tag


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_mnist_2x5_quick(results, shared_data):
    from darkknowledge.experiments.subclass_mnist_2x5 import SUMMARY_KEYS

    out = _run("subclass-mnist-2x5", results / "subclass-mnist-2x5", shared_data)
    s = _check_summary(out, SUMMARY_KEYS)
    check_mnist_2x5(out, out / "runs-quick", range(1))
    assert 50 < s["teacher_acc"]["mean"] <= 100
    assert 15 < s["chance_subclass_recovery"]["mean"] < 30  # knows the class, guesses among 5
    assert "reference: official demo" in (out / "report.md").read_text()


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_data_efficiency_quick(results, shared_data):
    from darkknowledge.experiments.subclass_data_efficiency import SUMMARY_KEYS

    out = _run("subclass-data-efficiency", results / "subclass-data-efficiency", shared_data)
    _check_summary(out, SUMMARY_KEYS)
    # the teacher was shared with subclass-mnist-2x5 (trained there if that test did not run first)
    teacher_runs = results / "subclass-mnist-2x5" / "runs-quick"
    assert (teacher_runs / "teacher_seed0" / "run.json").exists()
    check_data_efficiency(out, out / "runs-quick", teacher_runs, range(1))


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_ablation_quick(results, shared_data):
    from darkknowledge.experiments.subclass_ablation import SUMMARY_KEYS

    out = _run("subclass-ablation", results / "subclass-ablation", shared_data)
    _check_summary(out, SUMMARY_KEYS)
    check_ablation(out, out / "runs-quick", results / "subclass-mnist-2x5" / "runs-quick", range(1))


def test_committed_results_match_their_records():
    """The same checks on the committed full results (records and evaluation caches; no weights needed)."""
    res = Path(__file__).resolve().parents[1] / "results"
    if not (res / "subclass-mnist-2x5" / "summary.json").exists():
        pytest.skip("no committed subclass results")
    seeds = range(json.loads((res / "subclass-mnist-2x5" / "summary.json").read_text())["teacher_acc"]["n"])
    mnist_runs = res / "subclass-mnist-2x5" / "runs"
    check_mnist_2x5(res / "subclass-mnist-2x5", mnist_runs, seeds)
    check_data_efficiency(res / "subclass-data-efficiency", res / "subclass-data-efficiency" / "runs", mnist_runs,
                          seeds)
    check_ablation(res / "subclass-ablation", res / "subclass-ablation" / "runs", mnist_runs, seeds)


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_clickthrough_quick(results):
    from darkknowledge.experiments.subclass_clickthrough import SUMMARY_KEYS

    data_dir = SHARED_DATA if os.path.isdir(os.path.join(SHARED_DATA, "criteo-sample")) else None
    out = _run("subclass-clickthrough", results / "subclass-clickthrough", data_dir)
    s = _check_summary(out, SUMMARY_KEYS)
    assert 0.01 < s["test_ctr"]["mean"] < 0.1  # "a few percent"
    assert s["oracle_logloss"]["mean"] < s["base_rate_logloss"]["mean"]
    assert "SYNTHETIC" in (out / "report.md").read_text()


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_cifar_2x5_quick(results, shared_data):
    if not os.path.isfile(os.path.join(shared_data, "cifar10-jpeg", "cifar10_jpeg_q75.tar.gz")):
        pytest.skip("CIFAR-10 JPEG copy not found")
    from darkknowledge.experiments.subclass_mnist_2x5 import SUMMARY_KEYS

    out = _run("subclass-cifar-2x5", results / "subclass-cifar-2x5", shared_data)
    _check_summary(out, SUMMARY_KEYS)
    assert "JPEG-compressed" in (out / "report.md").read_text()


def _run(name: str, out: Path, data_dir: str | None) -> Path:
    get_experiment(name)(out=out, data_dir=data_dir, quick=True, seeds=1, progress=False)
    return out


def test_resnet_cifar_and_ctr_mlp_shapes():
    import darkknowledge as dk
    from darkknowledge.experiments import subclass_cifar_2x5, subclass_clickthrough  # noqa: F401 (registers)

    net = dk.create_model("subclass", backbone="resnet_cifar", subclasses=5, num_classes=2, n=1, width=8,
                          augment=True)
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    assert net.subclass_logits(x).shape == (4, 10) and net.forward_features(x).shape == (4, 32)
    assert torch.equal(net.subclass_logits(x), net.subclass_logits(x))  # no augmentation in eval mode
    ctr = dk.create_model("ctr_mlp", num_classes=2, num_buckets=64, emb_dim=3, hidden=[8])
    xc = torch.cat([torch.randn(5, 26), torch.randint(0, 64, (5, 26)).float()], dim=1)
    assert ctr(xc).shape == (5, 2) and ctr.forward_features(xc).shape == (5, 8)


def test_criteo_loader_on_real_sample(tmp_path):
    from darkknowledge.data.criteo import CAT_COLUMNS, INT_COLUMNS, criteo_features, read_criteo

    path = Path(SHARED_DATA) / "criteo-sample" / "criteo_kaggle_train_head1000.tsv.gz"
    if not path.is_file():
        pytest.skip("Criteo sample not found")
    data = read_criteo(path)
    assert len(INT_COLUMNS) == 13 and len(CAT_COLUMNS) == 26
    assert data.labels.shape == (1000,) and int(data.labels.sum()) == 205
    assert data.ints.shape == (1000, 13) and data.cats.shape == (1000, 26)
    # the well-known first row of Criteo's train.txt: 0 1 1 5 0 1382 4 15 2 181 1 2 _ 2 68fd1e64 80e26c9b ...
    assert data.labels[0] == 0
    np.testing.assert_array_equal(data.ints[0, :12], [1, 1, 5, 0, 1382, 4, 15, 2, 181, 1, 2, np.nan])
    assert data.cats[0, 0] == 0x68FD1E64 and data.cats[0, 1] == 0x80E26C9B
    dense, cat = criteo_features(data, num_buckets=4096)
    assert dense.shape == (1000, 26) and cat.shape == (1000, 26) and 0 <= cat.min() and cat.max() < 4096
    # the same pipeline as the synthetic experiment, on the real rows
    from darkknowledge.experiments.subclass_clickthrough import criteo_sample_check

    res = criteo_sample_check(SHARED_DATA, tmp_path / "criteo_sample")
    assert res["rows"] == 1000 and res["clicks"] == 205
    assert res["ctr"] == pytest.approx(0.205)
    assert res["int_missing_rate"] == pytest.approx(float(np.isnan(data.ints).mean()))
    assert res["cat_missing_rate"] == pytest.approx(float((data.cats == -1).mean()))
    # the base-rate predictor fitted on the first 800 rows, scored on the last 200, recomputed
    y = data.labels.astype(np.float64)
    p = y[:800].mean()
    base = -np.mean(y[800:] * np.log(p) + (1 - y[800:]) * np.log(1 - p))
    assert res["heldout_base_rate_logloss"] == pytest.approx(base, rel=1e-6)
    # the tiny model found some signal in 800 rows (0.65 when written; a model that learned nothing scores
    # 0.5), and its log loss is far from what inverted or saturated predictions give
    assert res["heldout_auc"] > 0.55
    assert res["heldout_logloss"] < 2 * base


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_fresh_clone_rerenders_without_weights(results, shared_data, monkeypatch):
    """Committed results hold records and ``eval.json`` caches, never weights: the report re-renders
    without training; without the caches, the needed runs are retrained to the same numbers."""
    import darkknowledge.engine.jobs as runner

    out = results / "subclass-mnist-2x5"
    if not (out / "summary.json").exists():
        _run("subclass-mnist-2x5", out, shared_data)
    before = json.loads((out / "summary.json").read_text())

    def strip(names: tuple[str, ...]) -> None:
        for f in list((out / "runs-quick").rglob("*")):
            if f.name in names or f.suffix in (".safetensors", ".pt"):
                f.unlink()

    strip(())
    with monkeypatch.context() as m:
        m.setattr(runner, "train", lambda *a, **k: pytest.fail("re-rendering must not train"))
        _run("subclass-mnist-2x5", out, shared_data)
    assert json.loads((out / "summary.json").read_text()) == before
    strip(("eval.json",))
    _run("subclass-mnist-2x5", out, shared_data)
    assert json.loads((out / "summary.json").read_text()) == before
    assert (out / "runs-quick" / "teacher_seed0" / "best.safetensors").exists()


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_clickthrough_rerenders_without_weights(results, monkeypatch):
    import darkknowledge.engine.jobs as runner

    out = results / "subclass-clickthrough"
    data_dir = SHARED_DATA if os.path.isdir(os.path.join(SHARED_DATA, "criteo-sample")) else None
    if not (out / "summary.json").exists():
        _run("subclass-clickthrough", out, data_dir)
    before = json.loads((out / "summary.json").read_text())
    for f in list(out.rglob("*")):
        if f.suffix in (".safetensors", ".pt"):
            f.unlink()
    with monkeypatch.context() as m:
        m.setattr(runner, "train", lambda *a, **k: pytest.fail("re-rendering must not train"))
        _run("subclass-clickthrough", out, data_dir)
    assert json.loads((out / "summary.json").read_text()) == before


@pytest.mark.parametrize("name", ["subclass-data-efficiency", "subclass-ablation"])
def test_committed_report_on_shared_teachers_rerenders_byte_for_byte(name, shared_data, tmp_path, monkeypatch):
    """As tests/test_report.py's RERENDER, for the two experiments whose teachers live in subclass-mnist-2x5's
    folder: a fresh clone's records (no weights) re-render the committed folder exactly, training nothing."""
    import shutil

    import darkknowledge.engine.jobs as jobs

    repo = Path(__file__).resolve().parents[1]
    if not (repo / "results" / name / "summary.json").exists():
        pytest.skip("no committed results")
    for folder in (name, "subclass-mnist-2x5"):
        shutil.copytree(repo / "results" / folder, tmp_path / "results" / folder,
                        ignore=shutil.ignore_patterns("*.safetensors", "*.pt", "checkpoint*", ".staging"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jobs, "train", lambda *a, **k: pytest.fail("a committed report must re-render without training"))
    sub = Path("results") / name
    before = {p.name: p.read_bytes() for p in sub.iterdir() if p.is_file()}
    get_experiment(name)(out=str(sub), data_dir=shared_data, seeds=3, progress=False)
    after = {p.name: p.read_bytes() for p in sub.iterdir() if p.is_file()}
    assert sorted(after) == sorted(before)
    for f in before:
        assert after[f] == before[f], f"{sub / f} changed"
