"""Cached experiment runs: a fresh clone holds run records and evaluation caches, never weights.

``run_cached`` must reuse a finished record, retrain (deterministically) a record whose weights the
caller needs but which are missing, and only then run ``before_train``; ``cached_eval`` must reuse an
evaluation while ``run.json`` is unchanged and recompute it otherwise (or when its cache is corrupt).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import darkknowledge.engine.jobs as runner
from darkknowledge.engine.jobs import cached_eval, finished_record, run_cached
from darkknowledge.models import read_model_meta

REPO = Path(__file__).resolve().parents[1]


def _cfg(out: Path, epochs: int = 3) -> dict:
    return {"name": "digits_tiny", "seed": 0, "epochs": epochs, "batch_size": 64, "threads": 1,
            "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [32]}},
            "data": {"dataset": "digits", "val_size": 200},
            "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "schedule": "cosine"},
            "out_dir": str(out)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[dict, dict]:
    cfg = _cfg(tmp_path_factory.mktemp("run") / "digits_tiny")
    return cfg, run_cached(cfg, progress=False)


def _no_training(monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("trained although a finished record exists")

    monkeypatch.setattr(runner, "train", boom)


def test_finished_record_is_reused_without_training(trained, monkeypatch):
    cfg, rec = trained
    _no_training(monkeypatch)
    calls = []
    again = run_cached(cfg, progress=False, before_train=lambda: calls.append(1))
    assert again["final"] == rec["final"]
    assert calls == []  # a cached run never materialises its dependencies
    assert finished_record(cfg)["final"] == rec["final"]


def test_other_config_is_not_a_finished_record(trained):
    cfg, _ = trained
    assert finished_record({**cfg, "epochs": cfg["epochs"] + 1}) is None


def test_missing_weights_retrain_deterministically_when_needed(trained, monkeypatch):
    cfg, rec = trained
    best = Path(cfg["out_dir"]) / "best.safetensors"
    before, before_meta = load_file(best), read_model_meta(best)
    for f in ("best.safetensors", "last.safetensors", "checkpoint.pt"):
        (Path(cfg["out_dir"]) / f).unlink(missing_ok=True)
    # not needed: the record alone is enough, nothing trains
    with monkeypatch.context() as m:
        _no_training(m)
        assert run_cached(cfg, progress=False)["final"] == rec["final"]
    assert not best.exists()
    # needed: retrained from scratch, dependencies first, same weights and metrics, and the original
    # record kept byte for byte (so evaluations cached against it stay valid)
    rec_bytes = (Path(cfg["out_dir"]) / "run.json").read_bytes()
    calls = []
    new = run_cached(cfg, progress=False, need_weights=True, before_train=lambda: calls.append(1))
    assert calls == [1]
    assert (Path(cfg["out_dir"]) / "run.json").read_bytes() == rec_bytes
    assert not (Path(cfg["out_dir"]) / ".rebuild").exists()
    after = load_file(best)  # (not the bytes: safetensors writes its metadata in hash-map order)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert read_model_meta(best) == before_meta
    assert new["final"]["test"] == rec["final"]["test"]
    assert new["final"]["selected_epoch"] == rec["final"]["selected_epoch"]


def test_cached_eval_follows_the_run_record(trained):
    cfg, _ = trained
    out = Path(cfg["out_dir"])
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"n": len(calls)}

    (out / "eval.json").unlink(missing_ok=True)
    assert cached_eval(out, "k", compute) == {"n": 1}
    assert cached_eval(out, "k", compute) == {"n": 1}  # cached
    assert cached_eval(out, "other", compute) == {"n": 2}  # keys are independent
    assert set(json.loads((out / "eval.json").read_text())) == {"k", "other"}
    # a changed run record (a retrained run) invalidates the cache
    rec_path = out / "run.json"
    original = rec_path.read_bytes()
    try:
        rec = json.loads(original)
        rec["wall_time_s"] = rec.get("wall_time_s", 0) + 1.0
        rec_path.write_text(json.dumps(rec))
        assert cached_eval(out, "k", compute) == {"n": 3}
    finally:
        rec_path.write_bytes(original)
    # a corrupt cache is recomputed, not trusted and not fatal
    (out / "eval.json").write_text("{not json")
    assert cached_eval(out, "k", compute) == {"n": 4}
    assert json.loads((out / "eval.json").read_text())["k"]["value"] == {"n": 4}


def test_missing_weights_beside_a_stale_checkpoint_still_retrain_from_scratch(tmp_path):
    """A leftover ``checkpoint.pt`` (from the end of the run) must not make the rebuild 'resume' past the
    last epoch and skip writing ``best.safetensors``; a rebuild that differs from its record replaces it."""
    cfg = _cfg(tmp_path / "r")
    rec = run_cached(cfg, progress=False)
    out = Path(cfg["out_dir"])
    assert (out / "checkpoint.pt").exists()
    (out / "best.safetensors").unlink()
    again = run_cached(cfg, progress=False, need_weights=True)
    assert (out / "best.safetensors").exists()
    assert again["final"] == rec["final"]
    # a record the rebuild does not reproduce (here: doctored) is replaced by the rebuilt one, with a warning
    doctored = json.loads((out / "run.json").read_text())
    doctored["final"]["test"]["errors"] += 1
    (out / "run.json").write_text(json.dumps(doctored))
    (out / "best.safetensors").unlink()
    fixed = run_cached(cfg, progress=False, need_weights=True)
    assert fixed["final"] == rec["final"]
    on_disk = json.loads((out / "run.json").read_text())
    assert on_disk["final"] == rec["final"] and on_disk["config"]["out_dir"] == str(out)


def test_cached_eval_version_bump_recomputes(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "run.json").write_text("{}")
    assert cached_eval(out, "k", lambda: {"v": 1}) == {"v": 1}
    assert cached_eval(out, "k", lambda: {"v": 2}) == {"v": 1}
    assert cached_eval(out, "k", lambda: {"v": 3}, version=2) == {"v": 3}
    # an entry written before versions existed counts as version 1
    cache = json.loads((out / "eval.json").read_text())
    cache["k"] = {"run_sha256": cache["k"]["run_sha256"], "value": {"v": 0}}
    (out / "eval.json").write_text(json.dumps(cache))
    assert cached_eval(out, "k", lambda: {"v": 9}) == {"v": 0}


def test_every_registered_experiment_has_its_committed_results(capsys):
    """The registry, the lazy name → module map, the CLI's list and the committed results agree: each name
    resolves to an Experiment of that name whose committed summary holds exactly its declared keys (fails when a
    module registers under another name, a name is dropped from the map, or a summary key is renamed)."""
    import json

    from darkknowledge.cli import main
    from darkknowledge.experiments import _EXPERIMENTS, _MODULES, get_experiment, list_experiments

    names = list_experiments()
    assert names == sorted(_MODULES)
    assert main(["reproduce", "--list"]) == 0
    assert capsys.readouterr().out.split() == ["experiments:", *names]
    for name in names:
        get_experiment(name)
        exp = _EXPERIMENTS[name]
        assert exp.name == name
        summary = json.loads((REPO / "results" / name / "summary.json").read_text())
        assert summary, name
        if exp.summary_keys is not None:  # only declared keys, in the declared order
            assert list(summary) == [k for k in exp.summary_keys if k in summary], name
