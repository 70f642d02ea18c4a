"""The teacher store (Hinton et al. 2015 §4: an ensemble's outputs on a big transfer set, computed once).

Top-k rule under test: per member, the k largest logits v_S are kept; every other class j ∈ R gets
f = logsumexp_{j∈R} v_j − log(C − k), so at T = 1 the top-k probabilities are unchanged and the residual
mass 1 − Σ_S p_i is shared equally by the C − k other classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import darkknowledge as dk
from darkknowledge.config import validate
from darkknowledge.engine import train
from darkknowledge.engine.train import prepare_data
from darkknowledge.store import (
    StaleStoreError,
    StoredTeacher,
    StoreError,
    data_fingerprint,
    expected_bytes,
    member_sha256,
    memory_report,
    store_memory,
    write_store,
)
from darkknowledge.teachers import combine_members

torch.set_num_threads(1)

D, C, M, N = 8, 10, 3, 700


def _ensemble(seed: int = 0, combine: str = "arithmetic") -> dk.Ensemble:
    torch.manual_seed(seed)
    return dk.Ensemble([nn.Linear(D, C) for _ in range(M)], combine=combine)


def _x(seed: int = 1, n: int = N) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """One ensemble, its inputs and float32 member logits, and stores at k = all, 3, C − 1 and C."""
    d = tmp_path_factory.mktemp("stores")
    t, x = _ensemble(), _x()
    ref = torch.stack([m(x) for m in t.members], 1).detach()
    for k in (None, 3, C - 1, C):  # shards (256 rows) straddle the teacher's batches (100 rows)
        write_store(t, x, d / f"k{k}", k=k, shard_size=256, batch_size=100)
    return d, t, x, ref


def test_full_store_round_trip_equals_fp16_logits(setup):
    d, t, x, ref = setup
    st = StoredTeacher(d / "kNone", member_sha256(t), data_fingerprint(x))
    want = ref.half().float()
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:300]
    assert st.member_logits(x[idx], idx).dtype == torch.float32
    assert torch.equal(st.member_logits(x[idx], idx), want[idx])
    assert torch.equal(st.member_logits(x[idx]), want[idx])  # no idx: rows found by content
    for T in (0.5, 1.0, 4.0):
        assert torch.equal(st.soft_targets(x[idx], T, idx), combine_members(want[idx], T, "arithmetic"))
    cached = dk.CachedTeacher(want)
    assert torch.equal(st.logits(x[idx], idx), cached.logits(x[idx], idx))
    m = json.loads((d / "kNone" / "manifest.json").read_text())
    assert (m["rows"], m["classes"], m["members"], m["k"], m["dtype"]) == (N, C, M, None, "float16")
    assert len(m["shards"]) == 3 and [s["rows"] for s in m["shards"]] == [256, 256, 188]
    assert m["member_sha256"] == [dk.store.state_sha256(mm) for mm in t.members] and m["combine"] == "arithmetic"
    assert np.load(d / "kNone" / m["shards"][0]["files"]["logits"]["file"], mmap_mode="r").dtype == np.float16


def test_topk_keeps_the_k_largest_and_spreads_the_residual_mass(setup):
    d, _, x, ref = setup
    k = 3
    st = StoredTeacher(d / "k3")
    got = st.member_logits(x, torch.arange(N))
    top = torch.topk(ref, k, dim=-1)
    m = json.loads((d / "k3" / "manifest.json").read_text())
    stored = np.concatenate([np.load(d / "k3" / s["files"]["indices"]["file"]) for s in m["shards"]])
    assert stored.dtype == np.int16 and torch.equal(torch.from_numpy(stored).long(), top.indices)  # classes, order
    assert torch.equal(got.gather(-1, top.indices), top.values.half().float())  # their logits exactly (fp16)
    missing = torch.ones_like(ref, dtype=torch.bool).scatter(-1, top.indices, False)
    rest = got[missing].view(N, M, C - k)
    assert (rest[..., 0] <= got.gather(-1, top.indices).min(-1).values).all()  # (fp16 ties possible)
    assert torch.equal(rest, rest[..., :1].expand_as(rest))  # one fill value per row and member
    # the fill, against an independent float64 formula: log-mean-exp of the missing logits
    r64 = ref.double()[missing].view(N, M, C - k)
    f = torch.log(torch.exp(r64).mean(-1))
    assert torch.allclose(rest[..., 0].double(), f, rtol=1e-3, atol=1e-3)
    # at T = 1: a distribution; top-k probabilities kept; the residual mass shared equally. The reference is
    # the true distribution of the kept (fp16) logits with the exact tail, so only the fill's fp16 rounding
    # (|f| · 2^-11 in the tail's log-mass) separates them
    p = torch.softmax(got.double(), -1)
    p_true = torch.softmax(torch.where(missing, ref.double(), ref.half().double()), -1)
    assert torch.allclose(p.sum(-1), torch.ones(N, M, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(p.gather(-1, top.indices), p_true.gather(-1, top.indices), rtol=3e-3, atol=0)
    resid = 1 - p_true.gather(-1, top.indices).sum(-1)
    pm = p[missing].view(N, M, C - k)
    assert torch.allclose(pm, (resid / (C - k)).unsqueeze(-1).expand_as(pm), rtol=5e-3, atol=0)
    # for T > 1 the tail's share is at least the true one (power-mean inequality)
    q, q_true = torch.softmax(got.double() / 4, -1), torch.softmax(ref.double() / 4, -1)
    assert (q[missing].view(N, M, -1).sum(-1) >= q_true[missing].view(N, M, -1).sum(-1) - 2e-3).all()


def test_topk_with_k_C_and_C_minus_1_is_the_full_store_bit_for_bit(setup):
    d, _, x, ref = setup
    idx = torch.arange(N)
    full = StoredTeacher(d / "kNone")
    assert StoredTeacher(d / f"k{C}").layout == "full"  # k = C is the full layout
    kc1 = StoredTeacher(d / f"k{C - 1}")
    assert kc1.layout == "topk"  # one missing class per row: the fill is that class's logit
    assert torch.equal(kc1.member_logits(x, idx), ref.half().float())
    for T in (0.5, 1.0, 2.0, 20.0):
        want = full.soft_targets(x, T, idx)
        assert torch.equal(StoredTeacher(d / f"k{C}").soft_targets(x, T, idx), want)
        assert torch.equal(kc1.soft_targets(x, T, idx), want)


def test_geometric_combine_is_recorded_and_used(tmp_path):
    t, x = _ensemble(combine="geometric"), _x(n=50)
    write_store(t, x, tmp_path / "g")
    st = StoredTeacher(tmp_path / "g")
    assert st.combine == "geometric"
    want = combine_members(t.member_logits(x).half().float(), 3.0, "geometric")
    assert torch.equal(st.soft_targets(x, 3.0, torch.arange(50)), want)


def test_a_stale_store_is_refused(setup):
    d, t, x, _ = setup
    changed = _ensemble()
    with torch.no_grad():
        changed.members[1].bias[0] += 1e-3
    with pytest.raises(StaleStoreError, match="other teacher weights"):
        StoredTeacher(d / "k3", expected_member_sha256=member_sha256(changed))
    with pytest.raises(StaleStoreError, match="other data"):
        StoredTeacher(d / "k3", expected_fingerprint=data_fingerprint(x[:-1]))
    StoredTeacher(d / "k3", member_sha256(_ensemble()), data_fingerprint(x))  # the same teacher, rebuilt: fresh
    with pytest.raises(StaleStoreError, match="fallback"):
        StoredTeacher(d / "k3", fallback=changed)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _one_line_store_error(path, match):
    with pytest.raises(StoreError, match=match) as e:
        StoredTeacher(path)
    assert not isinstance(e.value, StaleStoreError) and "\n" not in str(e.value)
    return str(e.value)


def test_damaged_truncated_or_missing_shards_are_refused(setup, tmp_path):
    d = setup[0]
    m = json.loads((d / "k3" / "manifest.json").read_text())
    name = m["shards"][1]["files"]["values"]["file"]
    s = _copy(d / "k3", tmp_path / "flip")
    raw = bytearray((s / name).read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one logit
    (s / name).write_bytes(bytes(raw))
    assert name in _one_line_store_error(s, "damaged")
    StoredTeacher(s, verify=False)  # verify=False skips the hashing (sizes and shapes still checked)
    s = _copy(d / "k3", tmp_path / "trunc")
    (s / name).write_bytes((s / name).read_bytes()[:-7])
    assert name in _one_line_store_error(s, "truncated")
    with pytest.raises(StoreError, match="truncated"):
        StoredTeacher(s, verify=False)
    s = _copy(d / "k3", tmp_path / "missing")
    (s / name).unlink()
    assert name in _one_line_store_error(s, "missing")
    s = _copy(d / "k3", tmp_path / "manifest")
    (s / "manifest.json").write_text((s / "manifest.json").read_text().replace('"rows": 700', '"rows": 701'))
    _one_line_store_error(s, "manifest")


def _rewrite(store: Path, name: str, arr: np.ndarray) -> None:
    """Replace a shard file and re-sign the manifest, so that only the content checks can notice."""
    from darkknowledge.data.common import sha256_file
    from darkknowledge.store import _manifest_sha256

    np.save(store / name, arr)
    m = json.loads((store / "manifest.json").read_text())
    for sh in m["shards"]:
        for spec in sh["files"].values():
            if spec["file"] == name:
                spec["bytes"], spec["sha256"] = (store / name).stat().st_size, sha256_file(store / name)
                spec["shape"], spec["dtype"] = list(arr.shape), arr.dtype.name
    m["manifest_sha256"] = _manifest_sha256(m)
    (store / "manifest.json").write_text(json.dumps(m))


def test_non_finite_values_wrong_shapes_and_bad_indices_are_refused(setup, tmp_path):
    d = setup[0]
    m = json.loads((d / "kNone" / "manifest.json").read_text())
    name = m["shards"][2]["files"]["logits"]["file"]
    s = _copy(d / "kNone", tmp_path / "nan")
    arr = np.load(s / name).copy()
    arr[5, 1, 2] = np.inf
    _rewrite(s, name, arr)
    assert name in _one_line_store_error(s, "non-finite")
    with pytest.raises(StoreError, match="non-finite"):  # unverified, still caught when the row is served
        StoredTeacher(s, verify=False).member_logits(None, torch.tensor([512 + 5]))
    s = _copy(d / "kNone", tmp_path / "shape")
    _rewrite(s, name, np.load(s / name)[:, :, :-1].copy())
    assert name in _one_line_store_error(s, "shape")
    m3 = json.loads((d / "k3" / "manifest.json").read_text())
    iname = m3["shards"][0]["files"]["indices"]["file"]
    s = _copy(d / "k3", tmp_path / "idx")
    ind = np.load(s / iname).copy()
    ind[0, 0, 0] = C
    _rewrite(s, iname, ind)
    assert iname in _one_line_store_error(s, "class indices")


class _Failing(nn.Module):
    """A teacher that dies on its third batch."""

    def __init__(self):
        super().__init__()
        self.lin, self.calls = nn.Linear(D, C), 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("killed mid-write")
        return self.lin(x)


def test_an_interrupted_write_leaves_no_store(setup, tmp_path):
    x = _x()
    with pytest.raises(RuntimeError, match="killed"):
        write_store(_Failing(), x, tmp_path / "s", shard_size=100, batch_size=100)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary directory
    # an existing store survives a failed overwrite, and is replaced by a successful one
    write_store(_ensemble(), x, tmp_path / "s", k=2)
    with pytest.raises(FileExistsError):
        write_store(_ensemble(), x, tmp_path / "s")
    with pytest.raises(RuntimeError, match="killed"):
        write_store(_Failing(), x, tmp_path / "s", batch_size=100, overwrite=True)
    assert StoredTeacher(tmp_path / "s").k == 2 and [p.name for p in tmp_path.iterdir()] == ["s"]
    write_store(_ensemble(), x, tmp_path / "s", overwrite=True)
    assert StoredTeacher(tmp_path / "s").k is None and [p.name for p in tmp_path.iterdir()] == ["s"]
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError, match="not a teacher store"):
        write_store(_ensemble(), x, tmp_path / "other", overwrite=True)


def test_rows_are_checked_and_unknown_inputs_need_a_fallback(setup):
    d, t, x, ref = setup
    st = StoredTeacher(d / "k3")
    with pytest.raises(ValueError, match="is not store row"):
        st.member_logits(x[:4], torch.tensor([1, 0, 2, 3]))  # idx in another index space than x
    assert torch.equal(StoredTeacher(d / "k3", check_rows=False).member_logits(x[:2], torch.tensor([1, 0])),
                       st.member_logits(x[[1, 0]], torch.tensor([1, 0])))
    with pytest.raises(IndexError):
        st.member_logits(None, torch.tensor([N]))
    new = _x(seed=9, n=5)
    with pytest.raises(ValueError, match="not in the store"):
        st(new)
    mixed = torch.cat([x[:3], new])
    fb = StoredTeacher(d / "kNone", fallback=_ensemble())
    got = fb.member_logits(mixed)
    assert torch.equal(got[:3], ref[:3].half().float())
    assert torch.allclose(got[3:], _ensemble().member_logits(new))


def test_memory_figures(setup):
    d = setup[0]
    for k in (None, 3, C - 1):
        man = (d / f"k{k}" / "manifest.json").stat().st_size
        assert store_memory(d / f"k{k}") - man == expected_bytes(N, C, M, k, shard_size=256)
    rep = memory_report(100_000, 30, 10)
    assert [r["k"] for r in rep] == [1, 5, 10, "all"]
    per_row = [10 * (1 * 4 + 2) + 8, 10 * (5 * 4 + 2) + 8, 10 * (10 * 4 + 2) + 8, 10 * 30 * 2 + 8]
    assert [round(r["bytes_per_row"]) for r in rep] == per_row  # fp16 values, int16 indices, fp16 fill, key


# --------------------------------------------------------------------------- through the engine


class _RoundedLinear(nn.Module):
    """A teacher whose logits are fp16 numbers (float64 product, then rounded), so a k = all store holds them
    exactly and a student distilled from the store must match one distilled from this live teacher bit for bit."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        super().__init__()  # the Gaussian-cluster classifier of the synthetic set: w_c = μ_c / σ², b_c = −|μ_c|² / 2σ²
        mu = torch.stack([x[y == c].mean(0) for c in range(10)])
        self.lin = nn.Linear(64, 10)
        with torch.no_grad():
            self.lin.weight.copy_(mu / 9)
            self.lin.bias.copy_(-(mu ** 2).sum(1) / 18)

    def forward(self, x):
        return (x.double() @ self.lin.weight.double().T + self.lin.bias.double()).half().float()


def _cfg(out: Path, cache: bool) -> dict:
    return {"name": "s", "seed": 1, "epochs": 2, "batch_size": 500, "threads": 1,
            "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [16]}},
            "data": {"dataset": "synthetic", "val_size": 2000}, "optim": {"name": "sgd", "lr": 0.05},
            "distill": {"teachers": ["(given)"], "temperature": 3.0, "w_hard": 0.2, "cache": cache},
            "out_dir": str(out)}


@pytest.mark.parametrize("cache", [False, True])
def test_training_from_a_store_equals_training_from_the_live_teacher(tmp_path, cache):
    """idx from the engine are positions in splits.train; the store is written over splits.train.x (then the
    validation and test inputs, for the engine's teacher metrics). With ``distill.cache`` on, the live teacher's
    run trains from its per-run store, while the stored teacher is served as it is (precomputed: not stored twice)."""
    cfg = validate(_cfg(tmp_path / "live", cache))
    splits = prepare_data(cfg.data)
    teacher = _RoundedLinear(splits.train.x, splits.train.y)
    x_all = torch.cat([splits.train.x, splits.val.x, splits.test.x])
    write_store(teacher, x_all, tmp_path / "store")
    stored = StoredTeacher(tmp_path / "store", member_sha256(teacher), data_fingerprint(x_all))
    rec_live = train(cfg, splits=splits, teacher=teacher, progress=False)
    rec_store = train(validate(_cfg(tmp_path / "stored", cache)), splits=splits, teacher=stored, progress=False)
    for f in ("last.safetensors", "best.safetensors"):
        a, b = load_file(tmp_path / "live" / f), load_file(tmp_path / "stored" / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [e["train_loss"] for e in rec_live["epochs"]] == [e["train_loss"] for e in rec_store["epochs"]]
    assert rec_live["final"] == rec_store["final"]  # the teacher's test outputs come from the store too
    assert math.isfinite(rec_store["epochs"][-1]["train_loss"]["soft"])
    assert (tmp_path / "live" / "teacher_store").is_dir() == cache and not (tmp_path / "stored" / "teacher_store").exists()


def test_a_cached_teacher_given_to_train_equals_the_live_teacher(tmp_path):
    """``train(teacher=CachedTeacher(logits of splits.train.x))``: looked up by the engine's idx, not cached a
    second time; the weights equal the live teacher's run. A cache of another length, or an augmented transfer
    set, is refused with one line before anything is written."""
    cfg = validate(_cfg(tmp_path / "live", False))
    splits = prepare_data(cfg.data)
    teacher = _RoundedLinear(splits.train.x, splits.train.y)
    with torch.no_grad():
        cached = dk.CachedTeacher(teacher(splits.train.x))
    train(cfg, splits=splits, teacher=teacher, progress=False)
    rec = train(validate(_cfg(tmp_path / "cached", True)), splits=splits, teacher=cached, progress=False)
    a, b = load_file(tmp_path / "live" / "best.safetensors"), load_file(tmp_path / "cached" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "cached" / "teacher_store").exists() and "teacher_test" not in rec["final"]
    with pytest.raises(ValueError, match="holds 3 rows"):
        train(validate(_cfg(tmp_path / "short", False)), splits=splits, teacher=dk.CachedTeacher(torch.zeros(3, 10)),
              progress=False)
    shifted = _cfg(tmp_path / "shifted", False)
    shifted["data"]["augment"] = [{"name": "shift", "max": 1}]
    with pytest.raises(ValueError, match=r"data.augment \(shift\) changes what the student sees"):
        train(validate(shifted), splits=splits, teacher=cached, progress=False)
    assert not (tmp_path / "short").exists() and not (tmp_path / "shifted").exists()


def test_the_run_store_trains_exactly_as_the_live_teacher(tmp_path):
    """``distill.cache`` on: the engine writes ``teacher_store/`` (float32, rows by position) over the training
    split and trains from it — bit for bit the weights of the run with the live teacher (cache off; the teacher's
    outputs do not depend on the batch); a rerun in the same folder reuses the store without rewriting it."""
    cfg = validate(_cfg(tmp_path / "live", False))
    splits = prepare_data(cfg.data)
    teacher = _RoundedLinear(splits.train.x, splits.train.y)
    train(cfg, splits=splits, teacher=teacher, progress=False)
    on = tmp_path / "on"
    train(validate(_cfg(on, True)), splits=splits, teacher=teacher, progress=False)
    m = json.loads((on / "teacher_store" / "manifest.json").read_text())
    assert (m["dtype"], m["layout"], m["rows"], m["row_keys"]) == ("float32", "full", len(splits.train), None)
    assert m["member_sha256"] == member_sha256(teacher) and m["fingerprint"] == data_fingerprint(splits.train.x)
    written = (on / "teacher_store" / "manifest.json").stat().st_mtime_ns
    first = load_file(on / "last.safetensors")
    (on / "checkpoint.pt").unlink()
    (on / "run.json").unlink()
    train(validate(_cfg(on, True)), splits=splits, teacher=teacher, progress=False)
    assert (on / "teacher_store" / "manifest.json").stat().st_mtime_ns == written
    live = load_file(tmp_path / "live" / "last.safetensors")
    for again in (first, load_file(on / "last.safetensors")):
        assert again.keys() == live.keys() and all(torch.equal(again[k], live[k]) for k in live)
