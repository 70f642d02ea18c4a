"""Teachers, ensembles and the teacher cache (Hinton, Vinyals & Dean 2015, spec §2.2).

With member logits v^(1..M) at temperature T:
  arithmetic: p = (1/M) sum_m softmax(v^(m)/T)
  geometric:  p ∝ prod_m softmax(v^(m)/T)^(1/M) = softmax(mean_m v^(m) / T)
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import darkknowledge as dk
import darkknowledge.cache as dkcache
from darkknowledge.cache import CacheError, StaleCacheError, cached_teacher, fingerprint, load_cache, save_cache
from darkknowledge.methods import Distiller

torch.set_num_threads(1)

D, C = 12, 5


def _mlp(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    m = dk.create_model("mlp", in_features=D, hidden=[16], num_classes=C, dropout=dropout)
    with torch.no_grad():  # spread the logits so the members disagree visibly
        m.head.weight.mul_(4.0)
    return m


def _x(n: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _members(x: torch.Tensor, models) -> list[torch.Tensor]:
    with torch.no_grad():
        return [m.eval()(x).double() for m in models]


# --------------------------------------------------------------------------- ensemble combination rules


@pytest.mark.parametrize("t", [1.0, 4.0, 20.0])
def test_arithmetic_ensemble_is_mean_of_tempered_distributions(t):
    """§2.2: arithmetic p = (1/M) sum_m softmax(v_m/T): the mean of the members' distributions *at T*."""
    models = [_mlp(s) for s in (1, 2, 3)]
    ens = dk.Ensemble(models, combine="arithmetic")
    x = _x()
    v = _members(x, models)
    expected = sum(F.softmax(vm / t, dim=1) for vm in v) / len(v)
    p = ens.soft_targets(x, t)
    torch.testing.assert_close(p.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p.sum(1).double(), torch.ones(x.shape[0], dtype=torch.float64), atol=1e-6, rtol=0)


def test_arithmetic_ensemble_is_not_softmax_of_mean_or_t1_mean():
    """§2.2: at T = 20 the arithmetic target is the mean of the T = 20 distributions — not the softmax of the
    mean logits, and not the T = 1 mean re-tempered."""
    models = [_mlp(s) for s in (1, 2, 3)]
    x = _x()
    v = _members(x, models)
    p = dk.Ensemble(models, combine="arithmetic").soft_targets(x, 20.0).double()
    softmax_of_mean = F.softmax(torch.stack(v).mean(0) / 20.0, dim=1)
    mean_t1 = sum(F.softmax(vm, dim=1) for vm in v) / len(v)
    retempered = F.softmax(mean_t1.log() / 20.0, dim=1)
    assert float((p - softmax_of_mean).abs().max()) > 1e-4
    assert float((p - retempered).abs().max()) > 1e-3


@pytest.mark.parametrize("t", [1.0, 3.0, 20.0])
def test_geometric_ensemble_is_renormalised_product(t):
    """§2.2: geometric p = prod_m softmax(v_m/T)^(1/M) / Z computed explicitly in float64, which also equals
    softmax(mean_m v_m / T) (the log-normalisers cancel)."""
    models = [_mlp(s) for s in (4, 5, 6, 7)]
    ens = dk.Ensemble(models, combine="geometric")
    x = _x()
    v = _members(x, models)
    m = len(v)
    prod = torch.ones_like(v[0])
    for vm in v:
        prod = prod * F.softmax(vm / t, dim=1) ** (1.0 / m)
    expected = prod / prod.sum(1, keepdim=True)
    torch.testing.assert_close(expected, F.softmax(torch.stack(v).mean(0) / t, dim=1), rtol=1e-10, atol=1e-12)
    p = ens.soft_targets(x, t).double()
    torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p.sum(1), torch.ones(x.shape[0], dtype=torch.float64), atol=1e-6, rtol=0)
    # and it differs from the arithmetic mean
    ar = dk.Ensemble(models, combine="arithmetic").soft_targets(x, t).double()
    assert float((p - ar).abs().max()) > 1e-4


def test_combine_members_on_logit_tensor():
    """combine_members on [B, M, C] logits: both rules; a single member is just softmax(v/T)."""
    g = torch.Generator().manual_seed(0)
    ml = 3 * torch.randn(4, 3, C, generator=g, dtype=torch.float64)
    t = 2.5
    torch.testing.assert_close(dk.combine_members(ml, t, "arithmetic"), F.softmax(ml / t, -1).mean(1))
    torch.testing.assert_close(dk.combine_members(ml, t, "geometric"), F.softmax(ml.mean(1) / t, -1))
    one = ml[:, :1]
    for rule in ("arithmetic", "geometric"):
        torch.testing.assert_close(dk.combine_members(one, t, rule), F.softmax(one[:, 0] / t, -1))
    with pytest.raises(ValueError, match="combine"):
        dk.combine_members(ml, t, "median")
    with pytest.raises(ValueError):
        dk.combine_members(ml[:, 0], t)
    with pytest.raises(ValueError, match="temperature"):
        dk.combine_members(ml, 0.0)


def test_ensemble_logits_at_t1():
    """Teacher.logits: one member's own logits; ensemble log of its T=1 distribution (arithmetic) or mean logit
    (geometric) — so softmax(logits) is the ensemble's T = 1 prediction."""
    models = [_mlp(s) for s in (1, 2)]
    x = _x()
    v = _members(x, models)
    ar = dk.Ensemble(models, "arithmetic")
    torch.testing.assert_close(F.softmax(ar.logits(x), 1), ar.soft_targets(x, 1.0))
    torch.testing.assert_close(dk.Ensemble(models, "geometric").logits(x).double(), torch.stack(v).mean(0),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dk.as_teacher(models[0]).logits(x).double(), v[0], rtol=1e-6, atol=1e-6)


def test_ensemble_rejects_bad_construction():
    with pytest.raises(ValueError, match="at least one"):
        dk.Ensemble([])
    with pytest.raises(ValueError, match="combine"):
        dk.Ensemble([_mlp(1)], combine="harmonic")
    torch.manual_seed(0)
    bad = dk.Ensemble([_mlp(1), dk.create_model("mlp", in_features=D, hidden=[4], num_classes=C + 1)])
    with pytest.raises(ValueError, match="shape"):
        bad.soft_targets(_x(), 2.0)


# --------------------------------------------------------------------------- frozen, eval mode


def test_members_are_frozen_and_in_eval_mode():
    """Teachers never train: parameters frozen, every module in eval mode (dropout off), so repeated calls
    are identical even with dropout members; teacher.train() and a parent's .train() keep it in eval."""
    models = [_mlp(1, dropout=0.5), _mlp(2, dropout=0.5)]
    for m in models:
        m.train()
    for teacher in (dk.Ensemble(models), dk.as_teacher(_mlp(3, dropout=0.5).train())):
        assert all(not p.requires_grad for p in teacher.parameters())
        assert not any(m.training for m in teacher.modules())
        x = _x()
        a = teacher.soft_targets(x, 4.0)
        b = teacher.soft_targets(x, 4.0)
        assert torch.equal(a, b)
        teacher.train()
        assert not any(m.training for m in teacher.modules())
        assert torch.equal(teacher.soft_targets(x, 4.0), a)
        parent = Distiller(_mlp(9), teacher)
        parent.train()
        assert parent.student.training
        assert not any(m.training for m in teacher.modules())
        out = teacher.soft_targets(x, 4.0)
        assert not out.requires_grad
        assert torch.equal(out, a)


def test_as_teacher_dispatch():
    """as_teacher: a Teacher is returned as is, a module becomes a ModelTeacher, a list an Ensemble."""
    m = _mlp(1)
    t = dk.as_teacher(m)
    assert isinstance(t, dk.ModelTeacher)
    assert dk.as_teacher(t) is t
    e = dk.as_teacher([_mlp(1), _mlp(2)], combine="geometric")
    assert isinstance(e, dk.Ensemble) and e.combine == "geometric"


# --------------------------------------------------------------------------- CachedTeacher


@pytest.mark.parametrize("combine", ["arithmetic", "geometric"])
def test_cached_teacher_equals_live_teacher(combine):
    """A CachedTeacher gives exactly the live teacher's soft targets (and logits) for the same indices."""
    models = [_mlp(1), _mlp(2), _mlp(3)]
    live = dk.Ensemble(models, combine=combine)
    x = _x(20)
    cached = dk.CachedTeacher(dkcache.compute_member_logits(live, x), combine=combine)
    assert len(cached) == 20 and cached.num_classes == C
    everything = torch.arange(20)
    for t in (1.0, 4.0, 20.0):
        assert torch.equal(cached.soft_targets(None, t, everything), live.soft_targets(x, t))
    assert torch.equal(cached.logits(None, everything), live.logits(x))
    # a subset of rows: the live forward pass on a smaller batch may round differently in the last bit
    idx = torch.tensor([3, 17, 0, 3, 9])
    assert torch.equal(cached.soft_targets(None, 4.0, idx), cached.soft_targets(None, 4.0, everything)[idx])
    torch.testing.assert_close(cached.soft_targets(None, 4.0, idx), live.soft_targets(x[idx], 4.0),
                               rtol=1e-6, atol=1e-7)
    # computing the cache in several batches changes nothing beyond float32 rounding
    batched = dk.CachedTeacher(dkcache.compute_member_logits(live, x, batch_size=6), combine=combine)
    torch.testing.assert_close(batched.table, cached.table, rtol=1e-6, atol=1e-6)


def test_cached_teacher_bad_indices():
    """Out-of-range (or missing) indices raise rather than wrap around."""
    cached = dk.CachedTeacher(torch.randn(4, C))
    with pytest.raises(IndexError):
        cached.soft_targets(None, 2.0, torch.tensor([0, 4]))
    with pytest.raises(IndexError):
        cached.soft_targets(None, 2.0, torch.tensor([-1]))
    with pytest.raises(ValueError, match="idx"):
        cached.soft_targets(None, 2.0)


def test_cached_teacher_rejects_bad_tables():
    with pytest.raises(FloatingPointError):
        dk.CachedTeacher(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError):
        dk.CachedTeacher(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="combine"):
        dk.CachedTeacher(torch.zeros(2, 3), combine="max")


# --------------------------------------------------------------------------- cache files


def test_cached_teacher_file_written_and_reused(tmp_path, monkeypatch):
    """cached_teacher computes the logits once, writes the file, and a second call reuses it."""
    calls = []
    orig = dkcache.compute_member_logits

    def counting(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(dkcache, "compute_member_logits", counting)
    teacher = dk.Ensemble([_mlp(1), _mlp(2)])
    x = _x(9)
    path = tmp_path / "sub" / "cache.safetensors"
    c1 = cached_teacher(teacher, x, path)
    assert path.is_file() and len(calls) == 1
    c2 = cached_teacher(teacher, x, path)
    assert len(calls) == 1
    assert torch.equal(c1.table, c2.table)
    idx = torch.arange(9)
    assert torch.equal(c2.soft_targets(None, 4.0, idx), teacher.soft_targets(x, 4.0))


def test_stale_cache_is_rebuilt(tmp_path, caplog):
    """A cache made by another teacher (different weights) or for other inputs is detected as stale and
    rebuilt with the right values."""
    x = _x(8)
    path = tmp_path / "cache.safetensors"
    old = dk.as_teacher(_mlp(1))
    cached_teacher(old, x, path)
    new = dk.as_teacher(_mlp(2))
    with caplog.at_level(logging.WARNING, logger="darkknowledge.cache"):
        c = cached_teacher(new, x, path)
    assert "different teacher" in caplog.text
    assert torch.equal(c.soft_targets(None, 3.0, torch.arange(8)), new.soft_targets(x, 3.0))
    with pytest.raises(StaleCacheError):
        load_cache(path, fingerprint(old, x))
    load_cache(path, fingerprint(new, x))
    # other inputs, same teacher
    x2 = x + 1
    c = cached_teacher(new, x2, path)
    assert torch.equal(c.soft_targets(None, 3.0, torch.arange(8)), new.soft_targets(x2, 3.0))
    # the combine rule is part of the fingerprint
    ms = [_mlp(1), _mlp(2)]
    assert fingerprint(dk.Ensemble(ms, "arithmetic"), x) != fingerprint(dk.Ensemble(ms, "geometric"), x)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    """A truncated or garbage cache file is detected (CacheError from load_cache) and cached_teacher
    rebuilds it without raising; the values after are correct."""
    teacher = dk.Ensemble([_mlp(1), _mlp(2)])
    x = _x(6)
    path = tmp_path / "cache.safetensors"
    cached_teacher(teacher, x, path)
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"\x00\xffnot a safetensors file" * 10,
                      "empty": b""}[damage])
    with pytest.raises(CacheError, match="corrupt"):
        load_cache(path)
    c = cached_teacher(teacher, x, path)
    assert torch.equal(c.soft_targets(None, 2.0, torch.arange(6)), teacher.soft_targets(x, 2.0))
    load_cache(path, fingerprint(teacher, x))  # rewritten, valid


def test_nan_in_cache_file_raises(tmp_path):
    """NaN logits in a cache file raise CacheError on load_cache (never served to training)."""
    path = tmp_path / "nan.safetensors"
    bad = torch.randn(3, 1, C)
    bad[1, 0, 2] = float("nan")
    save_cache(path, bad, "fp", "arithmetic")
    with pytest.raises(CacheError, match="NaN"):
        load_cache(path)
    with pytest.raises(CacheError, match="NaN"):
        load_cache(path, "fp")


def test_cache_without_logits_key_raises(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weights": torch.zeros(2)}, str(path))
    with pytest.raises(CacheError):
        load_cache(path)


def test_cache_round_trip_and_wrong_row_count(tmp_path):
    """save_cache/load_cache round-trip exactly; a cache with the wrong number of rows is rebuilt."""
    path = tmp_path / "c.safetensors"
    logits = torch.randn(5, 2, C)
    save_cache(path, logits, "abc", "geometric")
    got, combine = load_cache(path, "abc")
    assert torch.equal(got, logits) and combine == "geometric"
    teacher = dk.as_teacher(_mlp(1))
    x = _x(5)
    save_cache(path, torch.zeros(4, 1, C), fingerprint(teacher, x), "arithmetic")
    c = cached_teacher(teacher, x, path)
    assert len(c) == 5
    assert torch.equal(c.soft_targets(None, 1.0, torch.arange(5)), teacher.soft_targets(x, 1.0))


def test_fingerprint_handles_zero_dim_buffers():
    """Teachers with scalar buffers (BatchNorm's num_batches_tracked) can be fingerprinted and cached;
    the fingerprint changes when a buffer changes."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(D, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, C))
    t = dk.as_teacher(m)
    x = _x(4)
    f1 = fingerprint(t, x)
    m[1].running_mean.add_(1.0)
    assert fingerprint(t, x) != f1
    m[1].num_batches_tracked.add_(1)
    f2 = fingerprint(t, x)
    m[1].num_batches_tracked.add_(1)
    assert fingerprint(t, x) != f2
