"""Teachers, ensembles and the engine's per-run teacher store (Hinton, Vinyals & Dean 2015, spec §2.2).

With member logits v^(1..M) at temperature T:
  arithmetic: p = (1/M) sum_m softmax(v^(m)/T)
  geometric:  p ∝ prod_m softmax(v^(m)/T)^(1/M) = softmax(mean_m v^(m) / T)
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import darkknowledge as dk
import darkknowledge.store as dkstore
from darkknowledge.methods import Distiller
from darkknowledge.store import (
    StaleStoreError,
    StoredTeacher,
    StoreError,
    compute_member_logits,
    data_fingerprint,
    member_sha256,
    run_store,
    state_sha256,
)

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
    cached = dk.CachedTeacher(compute_member_logits(live, x), combine=combine)
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
    batched = dk.CachedTeacher(compute_member_logits(live, x, batch_size=6), combine=combine)
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


# --------------------------------------------------------------------------- the per-run store


def _open(path, teacher, x) -> StoredTeacher:
    return StoredTeacher(path, member_sha256(teacher), data_fingerprint(x), check_rows=False)


def test_run_store_is_written_once_reused_and_exact(tmp_path, monkeypatch):
    """run_store writes the teacher's float32 member logits once; a second call reuses them; served by position
    they equal the live teacher's soft targets bit for bit (the engine's bit-identical training rests on it)."""
    writes = []
    orig = dkstore.write_store

    def counting(*a, **k):
        writes.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(dkstore, "write_store", counting)
    teacher = dk.Ensemble([_mlp(1), _mlp(2)])
    x = _x(9)
    path = tmp_path / "sub" / "teacher_store"
    c1 = run_store(teacher, x, path)
    assert (path / "manifest.json").is_file() and len(writes) == 1
    c2 = run_store(teacher, x, path)
    assert len(writes) == 1 and isinstance(c2, StoredTeacher) and c2.precomputed and not c2.live
    idx = torch.arange(9)
    assert torch.equal(c1.member_logits(None, idx), c2.member_logits(None, idx))
    assert torch.equal(c2.member_logits(None, idx), compute_member_logits(teacher, x))
    for t in (1.0, 4.0):
        assert torch.equal(c2.soft_targets(None, t, idx), teacher.soft_targets(x, t))
    m = c2.manifest
    assert (m["dtype"], m["layout"], m["row_keys"], m["rows"]) == ("float32", "full", None, 9)
    with pytest.raises(ValueError, match="position"):  # no row keys: no lookup by content
        c2.member_logits(x)


def test_stale_store_is_rebuilt(tmp_path, caplog):
    """A store made by another teacher (different weights, or another combination rule) or for other inputs is
    detected as stale and rewritten with the right values."""
    x = _x(8)
    path = tmp_path / "teacher_store"
    old, new = dk.as_teacher(_mlp(1)), dk.as_teacher(_mlp(2))
    run_store(old, x, path)
    with caplog.at_level(logging.WARNING, logger="darkknowledge.store"):
        c = run_store(new, x, path)
    assert "other teacher weights" in caplog.text
    assert torch.equal(c.soft_targets(None, 3.0, torch.arange(8)), new.soft_targets(x, 3.0))
    with pytest.raises(StaleStoreError):
        _open(path, old, x)
    _open(path, new, x)
    # other inputs, same teacher
    x2 = x + 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="darkknowledge.store"):
        c = run_store(new, x2, path)
    assert "other data" in caplog.text
    assert torch.equal(c.soft_targets(None, 3.0, torch.arange(8)), new.soft_targets(x2, 3.0))
    # the same members combined by another rule
    ms = [_mlp(1), _mlp(2)]
    run_store(dk.Ensemble(ms, "arithmetic"), x, path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="darkknowledge.store"):
        c = run_store(dk.Ensemble(ms, "geometric"), x, path)
    assert "combine 'arithmetic' (expected 'geometric')" in caplog.text and c.combine == "geometric"


@pytest.mark.parametrize("damage", ["altered", "truncate", "no-manifest", "not-a-store"])
def test_damaged_store_is_rebuilt(tmp_path, caplog, damage):
    """Altered values (the file's size intact), a truncated shard, a lost manifest or a folder that is no store
    are detected (StoreError on open) and run_store rewrites the store; the values after are correct."""
    teacher = dk.Ensemble([_mlp(1), _mlp(2)])
    x = _x(6)
    path = tmp_path / "teacher_store"
    run_store(teacher, x, path)
    shard = path / "shard-00000.logits.npy"
    raw = shard.read_bytes()
    if damage == "altered":
        shard.write_bytes(raw[:-4] + bytes(4))
    elif damage == "truncate":
        shard.write_bytes(raw[: len(raw) // 2])
    elif damage == "no-manifest":
        (path / "manifest.json").unlink()
    else:
        for f in path.iterdir():
            f.unlink()
        (path / "other.txt").write_text("x")
    with pytest.raises(StoreError):
        _open(path, teacher, x)
    with caplog.at_level(logging.WARNING, logger="darkknowledge.store"):
        c = run_store(teacher, x, path)
    assert "rewriting" in caplog.text
    assert damage != "altered" or "checksum" in caplog.text
    assert torch.equal(c.soft_targets(None, 2.0, torch.arange(6)), teacher.soft_targets(x, 2.0))
    _open(path, teacher, x)  # rewritten, valid
    assert sorted(f.name for f in path.iterdir()) == ["manifest.json", "shard-00000.logits.npy"]


def test_teachers_declare_what_they_serve_and_their_weights(tmp_path):
    """live (any input) and precomputed (outputs already computed) for each kind of teacher; the weights'
    identity per member: a model's sha256, each ensemble member's, a store's recorded list."""
    ms = [_mlp(1), _mlp(2)]
    x = _x(5)
    model, ens = dk.as_teacher(ms[0]), dk.Ensemble(ms)
    cached = dk.CachedTeacher(compute_member_logits(ens, x))
    stored = run_store(ens, x, tmp_path / "s")
    with_fallback = StoredTeacher(tmp_path / "s", check_rows=False, fallback=ens)
    caps = {t: (t.live, t.precomputed) for t in (model, ens, cached, stored, with_fallback)}
    assert list(caps.values()) == [(True, False), (True, False), (False, True), (False, True), (True, True)]
    assert model.weights_sha256() == [state_sha256(ms[0])] and member_sha256(ms[0]) == [state_sha256(ms[0])]
    assert ens.weights_sha256() == [state_sha256(m) for m in ms] == stored.weights_sha256()
    assert cached.weights_sha256() == [state_sha256(cached)]


def test_non_finite_teacher_outputs_are_never_stored(tmp_path):
    """A teacher whose logits hold NaN: run_store raises naming the row and leaves no store behind."""
    class NaNTeacher(dk.Teacher):
        def member_logits(self, x, idx=None):
            out = torch.zeros(x.shape[0], 1, C)
            out[x[:, 0] > 0] = float("nan")
            return out

    x = _x(6)
    x[:, 0] = torch.tensor([-1.0, -1, 1, -1, -1, -1])
    with pytest.raises(ValueError, match="row 2 are non-finite"):
        run_store(NaNTeacher(), x, tmp_path / "teacher_store")
    assert list(tmp_path.iterdir()) == []


def test_wrong_row_count_and_write_false(tmp_path):
    """A store of another length is rebuilt; ``write=False`` (another rank owns the folder) computes a missing
    store in memory and writes nothing."""
    teacher = dk.as_teacher(_mlp(1))
    x = _x(5)
    path = tmp_path / "teacher_store"
    mem = run_store(teacher, x, path, write=False)
    assert isinstance(mem, dk.CachedTeacher) and not path.exists()
    run_store(teacher, x[:4], path)
    c = run_store(teacher, x, path)
    assert len(c) == 5 and torch.equal(c.member_logits(None, torch.arange(5)), mem.table)
    assert torch.equal(c.soft_targets(None, 1.0, torch.arange(5)), teacher.soft_targets(x, 1.0))


def test_weight_hashes_cover_zero_dim_buffers():
    """Teachers with scalar buffers (BatchNorm's num_batches_tracked) can be hashed and stored; the hash
    changes when a buffer changes; a model's hash is the sha256 of its names and bytes, in name order."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(D, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, C))
    t = dk.as_teacher(m)
    f1 = member_sha256(t)
    assert f1 == [state_sha256(m)]
    m[1].running_mean.add_(1.0)
    assert member_sha256(t) != f1
    m[1].num_batches_tracked.add_(1)
    f2 = state_sha256(m)
    m[1].num_batches_tracked.add_(1)
    assert state_sha256(m) != f2
    import hashlib

    h = hashlib.sha256()
    for name, v in sorted(m.state_dict().items()):
        h.update(name.encode() + str((tuple(v.shape), str(v.dtype))).encode())
        h.update(v.contiguous().numpy().tobytes())
    assert state_sha256(m) == h.hexdigest()
