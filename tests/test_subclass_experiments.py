"""Quick modes of the five subclass-distillation experiments (CI smoke tests) and the Criteo loader.

The MNIST experiments share one results folder so that ``subclass-data-efficiency`` and
``subclass-ablation`` reuse the quick ``subclass-mnist-2x5`` teacher, as the full runs do.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from darkknowledge.experiments import get_experiment, list_experiments

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
        e = summary[k]
        assert set(e) >= {"mean", "std", "n", "values"}, k
        assert e["n"] == len(e["values"]) >= 1, k
        assert all(isinstance(v, float) and math.isfinite(v) for v in e["values"]), k
    assert (out / "report.md").read_text().strip()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["quick"] is True and prov["stage_wall_time_s"]
    assert list(out.glob("*.png"))
    return summary


def test_registered():
    assert set(NAMES) <= set(list_experiments())
    assert "demo" in list_experiments()


def test_mnist_2x5_quick(results, shared_data):
    from darkknowledge.experiments.subclass_mnist_2x5 import SUMMARY_KEYS

    out = _run("subclass-mnist-2x5", results / "subclass-mnist-2x5", shared_data)
    s = _check_summary(out, SUMMARY_KEYS)
    assert 50 < s["teacher_acc"]["mean"] <= 100
    assert 0 <= s["teacher_subclass_recovery"]["mean"] <= 100
    assert 15 < s["chance_subclass_recovery"]["mean"] < 30  # knows the class, guesses among 5
    assert "reference: official demo" in (out / "report.md").read_text()


def test_data_efficiency_quick(results, shared_data):
    from darkknowledge.experiments.subclass_data_efficiency import SUMMARY_KEYS

    out = _run("subclass-data-efficiency", results / "subclass-data-efficiency", shared_data)
    _check_summary(out, SUMMARY_KEYS)
    assert set(SUMMARY_KEYS) == {f"{m}_acc_{p}pct" for m in ("scratch", "conventional", "subclass")
                                 for p in (1, 5, 25)}
    # the teacher was shared with subclass-mnist-2x5 (trained there if that test did not run first)
    assert (results / "subclass-mnist-2x5" / "runs-quick" / "teacher_seed0" / "run.json").exists()


def test_ablation_quick(results, shared_data):
    from darkknowledge.experiments.subclass_ablation import SUMMARY_KEYS

    out = _run("subclass-ablation", results / "subclass-ablation", shared_data)
    s = _check_summary(out, SUMMARY_KEYS)
    assert s["noaux_teacher_subclasses_used"]["mean"] <= 10


def test_clickthrough_quick(results):
    from darkknowledge.experiments.subclass_clickthrough import SUMMARY_KEYS

    data_dir = SHARED_DATA if os.path.isdir(os.path.join(SHARED_DATA, "criteo-sample")) else None
    out = _run("subclass-clickthrough", results / "subclass-clickthrough", data_dir)
    s = _check_summary(out, SUMMARY_KEYS)
    assert 0.01 < s["test_ctr"]["mean"] < 0.1  # "a few percent"
    assert s["oracle_logloss"]["mean"] < s["base_rate_logloss"]["mean"]
    assert "SYNTHETIC" in (out / "report.md").read_text()


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

    res = criteo_sample_check(SHARED_DATA)
    assert res["rows"] == 1000 and res["clicks"] == 205
    assert math.isfinite(res["heldout_logloss"]) and 0 <= res["heldout_auc"] <= 1


def test_fresh_clone_rerenders_without_weights(results, shared_data, monkeypatch):
    """Committed results hold records and ``eval.json`` caches, never weights: the report re-renders
    without training; without the caches, the needed runs are retrained to the same numbers."""
    import darkknowledge.experiments.runner as runner

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


def test_clickthrough_rerenders_without_weights(results, monkeypatch):
    import darkknowledge.experiments.runner as runner

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
