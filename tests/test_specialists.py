"""Specialist ensembles (Hinton, Vinyals & Dean 2015, §5; spec §3, §4.4), tested as mathematics: the
clustering, the specialist model and its data, the dustbin correction, the batched Eq. 5 solver against an
independent per-example scipy solution, its gradient, and the Table 3 / Table 4 metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn

import darkknowledge.specialists as sp
from darkknowledge.config import validate
from darkknowledge.data import Splits, TensorData
from darkknowledge.engine import train
from darkknowledge.models import create_model

torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- clustering


def _block_probs(blocks: list[list[int]], c: int, n: int, seed: int, mixes: tuple[tuple[int, int], ...] = (),
                 mix_rate: float = 0.0) -> np.ndarray:
    """Predictions that confuse the classes within each block: each example puts ~95% of its mass on one
    block, spread by a Dirichlet; for a block in a ``mixes`` pair, a share of its examples spreads over both."""
    rng = np.random.default_rng(seed)
    partner = {a: b for a, b in mixes} | {b: a for a, b in mixes}
    p = np.full((n, c), 0.05 / c)
    for i in range(n):
        b = int(rng.integers(len(blocks)))
        cls = list(blocks[b])
        if b in partner and rng.random() < mix_rate:
            cls += list(blocks[partner[b]])
        p[i, cls] += 0.95 * rng.dirichlet(np.full(len(cls), 0.5))
    return p / p.sum(1, keepdims=True)


def test_clustering_recovers_planted_confusable_blocks():
    perm = np.random.default_rng(0).permutation(12)
    blocks = [sorted(perm[i:i + 4].tolist()) for i in (0, 4, 8)]
    probs = _block_probs(blocks, 12, 3000, seed=1)
    res = sp.confusable_clusters(torch.as_tensor(probs), k=3, seed=0)
    assert sorted(res.clusters) == sorted(blocks)
    assert res.clusters == sorted(res.clusters, key=min)  # canonical order: by smallest member
    np.testing.assert_allclose(res.covariance, np.cov(probs, rowvar=False), rtol=1e-12, atol=1e-15)
    # labels, order and clusters agree; the order groups each cluster contiguously
    assert sorted(res.order.tolist()) == list(range(12))
    for j, cl in enumerate(res.clusters):
        assert sorted(np.flatnonzero(res.labels == j).tolist()) == cl
    grouped = res.labels[res.order]
    assert np.all(np.diff(grouped) >= 0)
    # seeded: the same seed gives the same clusters
    again = sp.confusable_clusters(probs, k=3, seed=0)
    assert again.clusters == res.clusters and np.array_equal(again.order, res.order)


def test_overlap_adds_each_class_to_its_next_nearest_clusters():
    blocks = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14]]
    probs = _block_probs(blocks, 15, 4000, seed=2, mixes=((0, 1), (2, 3)), mix_rate=0.5)  # two confusable pairs
    base = sp.confusable_clusters(probs, k=4, seed=0)
    assert sorted(base.clusters) == blocks
    res = sp.confusable_clusters(probs, k=4, overlap=1, seed=0)
    own = {c: j for j, cl in enumerate(base.clusters) for c in cl}
    for c in range(15):
        d = np.linalg.norm(res.covariance[:, c][None, :] - res.centers, axis=1)  # independent distances
        second = [j for j in np.argsort(d) if j != own[c]][0]
        holders = [j for j, cl in enumerate(res.clusters) if c in cl]
        assert holders == sorted([own[c], second]), c
    # the planted confusions decide where each class goes second: to its partner block's cluster
    assert sorted(res.clusters) == [blocks[0] + blocks[1]] * 2 + [blocks[2] + blocks[3]] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        two = sp.confusable_clusters(probs, k=4, overlap=2, seed=0)
    assert all(sum(c in cl for cl in two.clusters) == 3 for c in range(15))
    with pytest.warns(UserWarning, match="empty dustbin"):  # k = 2, overlap 1: both sets are every class
        assert sp.confusable_clusters(probs, k=2, overlap=1, seed=0).clusters == [list(range(15))] * 2
    with pytest.raises(ValueError, match="overlap"):
        sp.confusable_clusters(probs, k=4, overlap=4)


# ---------------------------------------------------------------------------------------------- specialist data


def test_targets_fraction_and_fifty_fifty_sampler():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 400 + [3] * 20 + [4] * 500)
    assert sp.specialist_targets(torch.tensor([3, 0, 1, 4, 2]), [3, 1]).tolist() == [0, 2, 1, 2, 2]
    assert sp.special_fraction(y, [1, 3]) == pytest.approx(50 / 1000)
    idx = sp.specialist_indices(y, [1, 3], generator=_gen(0))
    inside = torch.isin(y[idx], torch.tensor([1, 3]))
    assert idx.numel() == 100 and int(inside.sum()) == 50  # every special example once, as many others
    assert idx.unique().numel() == 100  # without replacement while the pools are large enough
    assert torch.equal(idx, sp.specialist_indices(y, [1, 3], generator=_gen(0)))
    assert not torch.equal(idx, sp.specialist_indices(y, [1, 3], generator=_gen(1)))
    # an odd n and a large n: round(n/2) special; pools reused evenly (balanced repetition)
    big = sp.specialist_indices(y, [1, 3], n=401, generator=_gen(0))
    counts = torch.bincount(big, minlength=1000)
    special = torch.isin(y, torch.tensor([1, 3]))
    assert int(special[big].sum()) == 201
    assert int(counts[special].max()) - int(counts[special].min()) <= 1 and int(counts[special].min()) == 4
    # the other half is uniform over the other examples: class shares follow their natural frequencies
    many = sp.specialist_indices(y, [1, 3], n=40000, generator=_gen(3))
    rest = y[many][~torch.isin(y[many], torch.tensor([1, 3]))]
    share = torch.bincount(rest, minlength=5)[[0, 2, 4]].double() / rest.numel()
    torch.testing.assert_close(share, torch.tensor([50, 400, 500], dtype=torch.float64) / 950, atol=0.01, rtol=0)


def test_dustbin_shift_rules_and_application():
    assert sp.dustbin_shift(0.1) == pytest.approx(math.log(5.0))  # log(0.5 / f): the oversampling factor
    assert sp.dustbin_shift(0.1, rule="prior") == pytest.approx(math.log(9.0))  # log((1 - f) / f)
    assert sp.dustbin_shift(0.25, special_share=0.75) == pytest.approx(math.log(3.0))
    assert sp.dustbin_shift(0.2, special_share=0.6, rule="prior") == pytest.approx(math.log(3.0 * 2.0))
    # the prior rule is exactly Bayes' prior shift from the 50/50 training mix to the natural one
    f = 0.08
    pi = torch.tensor([[0.3, 0.1, 0.6], [0.05, 0.9, 0.05]], dtype=torch.float64)  # posteriors on the mix
    prior_ratio = torch.tensor([f / 0.5, f / 0.5, (1 - f) / 0.5], dtype=torch.float64)
    bayes = pi * prior_ratio / (pi * prior_ratio).sum(1, keepdim=True)
    shifted = torch.softmax(sp.shift_dustbin_logits(pi.log(), sp.dustbin_shift(f, rule="prior")), 1)
    torch.testing.assert_close(shifted, bayes)
    # apply_dustbin_shift moves only the dustbin logit of a specialist
    torch.manual_seed(0)
    spec = sp.make_specialist(create_model("mlp", in_features=5, hidden=[4], num_classes=6), [2, 4])
    x = torch.randn(3, 5)
    before = spec(x).detach()
    sp.apply_dustbin_shift(spec, 1.25)
    torch.testing.assert_close(spec(x).detach(), before + torch.tensor([0.0, 0.0, 1.25]))
    with pytest.raises(ValueError):
        sp.dustbin_shift(0.0)


def test_make_specialist_starts_from_the_generalist():
    torch.manual_seed(0)
    gen = create_model("mlp", in_features=8, hidden=[6], num_classes=7)
    classes = [5, 1, 3]
    spec = sp.make_specialist(gen, classes)
    x = torch.randn(20, 8)
    z_g, z_s = gen(x).detach(), spec(x).detach()
    assert z_s.shape == (20, 4) and spec.num_classes == 4 and gen.num_classes == 7
    torch.testing.assert_close(z_s[:, :3], z_g[:, classes], rtol=0, atol=1e-6)  # S: the generalist's logits
    rest = [0, 2, 4, 6]
    torch.testing.assert_close(z_s[:, 3], z_g[:, rest].mean(1) + math.log(4), rtol=0, atol=1e-6)
    assert torch.all(z_s[:, 3] <= torch.logsumexp(z_g[:, rest], 1) + 1e-6)  # Jensen: a lower bound
    assert spec.special_classes == (5, 1, 3) and spec.output_layer_name == "head"
    # a copy: training the specialist leaves the generalist alone
    with torch.no_grad():
        for p in spec.parameters():
            p.add_(1.0)
    torch.testing.assert_close(gen(x).detach(), z_g)
    # when the other classes' rows are equal, the dustbin is exactly the collapsed generalist
    with torch.no_grad():
        gen.head.weight[rest] = gen.head.weight[0].clone()
        gen.head.bias[rest] = gen.head.bias[0].clone()
    spec2 = sp.make_specialist(gen, classes, output_layer_name="head")
    p_g = torch.softmax(gen(x).detach(), 1)
    collapsed = torch.cat([p_g[:, classes], p_g[:, rest].sum(1, keepdim=True)], 1)
    torch.testing.assert_close(torch.softmax(spec2(x).detach(), 1), collapsed, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="not an nn.Linear"):
        sp.make_specialist(gen, classes, output_layer_name="features.2")
    with pytest.raises(ValueError, match="dustbin"):
        sp.make_specialist(gen, list(range(7)))


def test_engine_trains_a_specialist_from_its_splits(tmp_path):
    g = _gen(0)
    mu = 3 * torch.randn(6, 10, generator=g)

    def draw(n):
        y = torch.randint(0, 6, (n,), generator=g)
        return TensorData(mu[y] + torch.randn(n, 10, generator=g), y)

    splits = Splits(draw(600), draw(200), draw(300), 6, "toy", [f"c{i}" for i in range(6)])
    torch.manual_seed(0)
    gen = create_model("mlp", in_features=10, hidden=[16], num_classes=6)
    classes = [4, 1]
    data = sp.specialist_splits(splits, classes, seed=0)
    assert data.num_classes == 3 and data.class_names == ["c4", "c1", "dustbin"]
    n_special = int(torch.isin(splits.train.y, torch.tensor(classes)).sum())
    assert len(data.train) == 2 * n_special and int((data.train.y < 2).sum()) == n_special
    assert torch.equal(data.train.y, sp.specialist_targets(splits.train.y[data.train.index], classes))
    assert torch.equal(data.test.y, sp.specialist_targets(splits.test.y, classes))  # natural test split
    assert int((data.val.y < 2).sum()) * 2 == len(data.val)  # balanced validation
    spec = sp.make_specialist(gen, classes)
    w0 = spec.head.weight.detach().clone()
    cfg = validate({"name": "spec", "seed": 0, "epochs": 2, "batch_size": 64, "threads": 1,
                    "model": {"name": "mlp", "args": {"in_features": 10, "hidden": [16]}},
                    "data": {"dataset": "toy"}, "optim": {"name": "sgd", "lr": 0.1}, "out_dir": str(tmp_path / "s")})
    rec = train(cfg, splits=data, student=spec, progress=False)
    assert rec["dataset"]["train"] == len(data.train) and (tmp_path / "s" / "best.safetensors").exists()
    assert rec["final"]["test"]["accuracy"] > 0.8  # separable toy problem
    assert not torch.equal(spec.head.weight.detach(), w0)
    assert spec(splits.test.x[:4]).shape == (4, 3)
    # the trained specialist's file rebuilds through the generalist's registry name with |S| + 1 outputs
    from darkknowledge.models import load_model

    back = load_model(tmp_path / "s" / "best.safetensors").eval()
    assert back.init_name == "mlp" and back.init_args["num_classes"] == 3 and gen.init_args["num_classes"] == 6
    with torch.no_grad():  # the selected epoch's weights: the record's test accuracy on the natural test split
        acc = float((back(data.test.x).argmax(1) == data.test.y).float().mean())
    assert acc == pytest.approx(rec["final"]["test"]["accuracy"], abs=1e-6)


# ---------------------------------------------------------------------------------------------- Eq. 5


def _case(b: int, c: int, sets: list[list[int]], seed: int, sharp: float = 2.0, dtype=torch.float64):
    g = _gen(seed)
    p_g = torch.softmax(sharp * torch.randn(b, c, generator=g, dtype=torch.float64), 1).to(dtype)
    p_specs = [torch.softmax(sharp * torch.randn(b, len(s) + 1, generator=g, dtype=torch.float64), 1).to(dtype)
               for s in sets]
    return p_g, p_specs


def _random_sets(c: int, m: int, size: int, seed: int) -> list[list[int]]:
    g = _gen(seed)
    return [sorted(torch.randperm(c, generator=g)[:size].tolist()) for _ in range(m)]


CASES = [  # (examples, classes, specialist sets, top_n, sharpness)
    (40, 10, [[0, 1, 2], [2, 3, 4, 5], [5, 6, 7], [7, 8, 9, 0]], 1, 2.0),  # overlapping chain
    (40, 10, [[0, 1, 2], [2, 3, 4, 5], [5, 6, 7], [7, 8, 9, 0]], 3, 3.0),
    (30, 24, _random_sets(24, 8, 5, seed=7), 1, 4.0),  # random overlapping sets, sharp
    (30, 24, _random_sets(24, 8, 5, seed=8), 4, 1.0),
]


@pytest.mark.parametrize("b,c,sets,top_n,sharp", CASES)
def test_batched_eq5_matches_per_example_scipy(b, c, sets, top_n, sharp):
    p_g, p_specs = _case(b, c, sets, seed=b + c + top_n, sharp=sharp)
    q, info = sp.combine(p_g, p_specs, sets, top_n=top_n, return_info=True)
    assert info["converged"] and info["max_grad"] <= 1e-11
    with threadpool_limits(1):
        q_ref, ref = sp.combine_reference(p_g, p_specs, sets, top_n=top_n, return_info=True)
    act = sp.active_specialists(p_g, sets, top_n)
    f = sp.combine_objective(q.log(), p_g, p_specs, sets, act)
    f_ref = sp.combine_objective(torch.as_tensor(q_ref).log(), p_g, p_specs, sets, act)
    assert torch.all((f - f_ref).abs() <= 1e-5)
    assert torch.all(f <= f_ref + 1e-9)  # never worse than scipy
    np.testing.assert_allclose(ref["values"], f_ref.numpy(), atol=1e-12)  # both objectives agree
    torch.testing.assert_close(q, torch.as_tensor(q_ref), rtol=0, atol=1e-6)  # strictly convex in q: unique
    torch.testing.assert_close(q.sum(1), torch.ones(b, dtype=torch.float64))


def test_eq5_gradient_is_the_spec_formula_and_vanishes_at_the_solution():
    sets = [[0, 1, 2], [2, 3], [4, 5, 6]]
    p_g, p_specs = _case(6, 8, sets, seed=3)
    act = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    z = torch.randn(6, 8, dtype=torch.float64, generator=_gen(4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: sp.combine_objective(z, p_g, p_specs, sets, act), (z,))
    grad = torch.autograd.grad(sp.combine_objective(z, p_g, p_specs, sets, act).sum(), z)[0]
    q = torch.softmax(z.detach(), 1)  # spec §3.3: q_c − p^g_c + Σ_m q_c (1 − p^m_{g(c)} / q^(m)_{g(c)})
    want = q - p_g
    for m, s in enumerate(sets):
        slot = torch.full((8,), len(s))
        slot[s] = torch.arange(len(s))
        qm = torch.zeros(6, len(s) + 1, dtype=torch.float64).index_add_(1, slot, q)
        want = want + act[:, m, None] * q * (1 - (p_specs[m] / qm)[:, slot])
    torch.testing.assert_close(grad, want)
    q_star = sp.combine(p_g, p_specs, sets, active=act)
    z_star = q_star.log().requires_grad_(True)
    g_star = torch.autograd.grad(sp.combine_objective(z_star, p_g, p_specs, sets, act).sum(), z_star)[0]
    assert g_star.abs().max() < 1e-10
    assert torch.equal(q_star[5], p_g[5])  # no active specialist


def test_eq5_objective_on_a_hand_example():
    # C = 3, one specialist on {0}: q^(m) = (q_0, q_1 + q_2), KL summed in probabilities
    p_g = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    p_m = torch.tensor([[0.8, 0.2]], dtype=torch.float64)
    q = torch.tensor([[0.6, 0.25, 0.15]], dtype=torch.float64)
    want = sum(p * math.log(p / r) for p, r in zip([0.5, 0.3, 0.2], [0.6, 0.25, 0.15]))
    want += 0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4)
    got = sp.combine_objective(q.log(), p_g, [p_m], [[0]], torch.tensor([[True]]))
    assert float(got) == pytest.approx(want, abs=1e-14)


def test_empty_active_set_returns_the_generalist_exactly():
    sets = [[0, 1], [2, 3]]
    p_g = torch.softmax(torch.randn(5, 6, generator=_gen(0)), 1)  # float32 in, float32 out
    p_specs = [torch.softmax(torch.randn(5, 3, generator=_gen(m + 1)), 1) for m in range(2)]
    p_g[:3, 4] += 5.0  # the top class of the first three is 4: no specialist covers it
    p_g[3, 0] += 5.0
    p_g[4, 3] += 5.0
    p_g = p_g / p_g.sum(1, keepdim=True)
    act = sp.active_specialists(p_g, sets)
    assert not act[:3].any() and act[3:].any(1).all()
    q = sp.combine(p_g, p_specs, sets)
    assert q.dtype == torch.float32 and torch.equal(q[:3], p_g[:3]) and not torch.equal(q[3:], p_g[3:])
    assert torch.equal(sp.combine(p_g, p_specs, sets, active=torch.zeros(5, 2, dtype=torch.bool)), p_g)


def test_models_over_every_class_give_the_arithmetic_mean():
    """When every model gives one probability per class (no dustbin mass), argmin Σ KL(p_i ‖ q) is the mean."""
    c = 7
    p_g, _ = _case(5, c, [], seed=0)
    others = [torch.softmax(torch.randn(5, c, generator=_gen(m), dtype=torch.float64), 1) for m in range(3)]
    p_specs = [torch.cat([p, torch.zeros(5, 1, dtype=torch.float64)], 1) for p in others]
    sets = [list(range(c))] * 3
    q = sp.combine(p_g, p_specs, sets)
    torch.testing.assert_close(q, (p_g + sum(others)) / 4, rtol=0, atol=1e-12)


def test_one_active_specialist_closed_form():
    """One specialist on S: q = (p^g + p^m)/2 on S; the rest gets the mean dustbin mass (P^g(R) + p^m_dust)/2,
    shared in the generalist's proportions (the KKT conditions of Eq. 5)."""
    s, rest = [1, 4, 2], [0, 3, 5]
    p_g, (p_m,) = _case(8, 6, [s], seed=5)
    q = sp.combine(p_g, [p_m], [s], active=torch.ones(8, 1, dtype=torch.bool))
    want = torch.empty_like(p_g)
    want[:, s] = (p_g[:, s] + p_m[:, :3]) / 2
    d = (p_g[:, rest].sum(1, keepdim=True) + p_m[:, 3:]) / 2
    want[:, rest] = p_g[:, rest] / p_g[:, rest].sum(1, keepdim=True) * d
    torch.testing.assert_close(q, want, rtol=0, atol=1e-12)


def test_membership_forms_and_class_order_agree():
    sets = [[3, 0, 5], [1, 2]]
    p_g, p_specs = _case(10, 6, sets, seed=9)
    q = sp.combine(p_g, p_specs, sets, top_n=2)
    # the same specialists given by a membership matrix: outputs in ascending class order
    perm = [torch.tensor([1, 0, 2, 3]), torch.tensor([0, 1, 2])]  # [3, 0, 5] → [0, 3, 5]
    q2 = sp.combine(p_g, [p[:, i] for p, i in zip(p_specs, perm)], sp.membership_matrix(sets, 6), top_n=2)
    torch.testing.assert_close(q, q2, rtol=0, atol=1e-13)
    act = sp.active_specialists(torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05]]), [[0], [1, 2], [3]], top_n=2)
    assert act.tolist() == [[False, True, True]]
    with pytest.raises(ValueError, match="specialist 1"):
        sp.combine(p_g, [p_specs[0], p_specs[1][:, :2]], sets)


def test_solver_precision_options_and_non_convergence_warning():
    sets = [[0, 1, 2], [2, 3, 4]]
    p_g, p_specs = _case(20, 7, sets, seed=11)
    q64 = sp.combine(p_g, p_specs, sets, top_n=2)
    q32, info = sp.combine(p_g, p_specs, sets, top_n=2, dtype=torch.float32, return_info=True)
    assert q32.dtype == torch.float64 and info["converged"] and info["max_grad"] <= 1e-6
    torch.testing.assert_close(q32, q64, rtol=0, atol=1e-5)
    with pytest.warns(RuntimeWarning, match="stopped after 1 EM steps"):
        _, info = sp.combine(p_g, p_specs, sets, top_n=2, max_iter=1, return_info=True)
    assert not info["converged"]


# ---------------------------------------------------------------------------------------------- metrics


def test_accuracy_and_conditional_accuracy_by_hand():
    # classes 0..3; specialists cover {0, 1} and {1}; U = {0, 1}
    probs = torch.tensor([[0.6, 0.1, 0.0, 0.3],   # y=0: right, also restricted
                          [0.2, 0.3, 0.0, 0.5],   # y=1: wrong (3), right restricted to U (1 > 0)
                          [0.5, 0.4, 0.1, 0.0],   # y=1: wrong either way
                          [0.1, 0.1, 0.8, 0.0],   # y=2: right, not covered
                          [0.1, 0.2, 0.3, 0.4]])  # y=3: right, not covered
    y = torch.tensor([0, 1, 1, 2, 3])
    sets = [[0, 1], [1]]
    assert sp.accuracy(probs, y) == pytest.approx(3 / 5)
    assert sp.conditional_accuracy(probs, y, sets) == pytest.approx(2 / 3)
    assert sp.covered_classes(sets, 4).tolist() == [0, 1]
    assert sp.coverage_counts(y, sets, 4).tolist() == [1, 2, 2, 0, 0]
    assert math.isnan(sp.conditional_accuracy(probs[3:], y[3:], sets))


def test_gain_by_coverage_rows_by_hand():
    sets = [[0, 1], [1, 2], [1], [2]]  # coverage: class 0 → 1, class 1 → 3, class 2 → 2, class 3 → 0
    y = torch.tensor([3, 3, 0, 0, 0, 1, 1, 2, 2, 2])
    eye = torch.eye(4)
    base = eye[[3, 0, 0, 1, 1, 1, 0, 2, 0, 0]]   # right: 0, 2, 5, 7
    new = eye[[3, 3, 0, 0, 0, 1, 1, 2, 2, 0]]    # right: 0, 1, 2, 3, 4, 5, 6, 7, 8
    rows = sp.gain_by_coverage(base, new, y, sets)
    got = [(r["covering"], r["examples"], r["base_correct"], r["new_correct"], r["delta_correct"]) for r in rows]
    assert got == [(0, 2, 1, 2, 1), (1, 3, 1, 3, 2), (2, 3, 1, 2, 1), (3, 2, 1, 2, 1)]
    assert [r["relative_change"] for r in rows] == [1.0, 2.0, 1.0, 1.0]
    assert rows[1]["base_accuracy"] == pytest.approx(1 / 3) and rows[1]["new_accuracy"] == 1.0
    pooled = sp.gain_by_coverage(base, new, y, sets, max_count=2)
    assert [(r["label"], r["examples"], r["delta_correct"]) for r in pooled] == [
        ("0", 2, 1), ("1", 3, 2), ("2 or more", 5, 2)]
    assert sum(r["delta_correct"] for r in rows) == int((new.argmax(1) == y).sum() - (base.argmax(1) == y).sum())
    none_right = sp.gain_by_coverage(eye[[1, 1]], eye[[0, 1]], torch.tensor([0, 0]), sets)
    assert math.isnan(none_right[1]["relative_change"]) and none_right[1]["delta_correct"] == 1


def test_solver_benchmark_runs_and_its_figures_are_consistent(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "specialists_solver.py"
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(script), "--examples", "60", "--ref-examples", "4", "--rounds", "1",
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    res = rec["results"]
    assert set(res) == {"C242", "C10"} and rec["settings"]["threads"] == 1 and rec["machine"]["cpu_count"]
    for name, x in res.items():
        assert x["batched_examples_per_s"] == pytest.approx(60 / x["batched_s"], rel=1e-12), name
        assert x["speedup"] == pytest.approx(x["batched_examples_per_s"] / x["scipy_examples_per_s"], rel=1e-12)
        assert x["objective_max_abs_diff"] <= 1e-5 and x["batched_max_grad"] <= 1e-11
    assert rec["solver_speedup"] == min(x["speedup"] for x in res.values())
    assert f"solver_speedup {rec['solver_speedup']:.0f}" in r.stdout


# ---------------------------------------------------------------------------------------------- the experiment's rules


def test_special_sets_by_overlap_ratio():
    dist = np.array([[1.0, 1.1, 3.0], [1.0, 2.0, 1.19], [2.0, 1.0, 5.0], [9.0, 9.0, 1.0]])
    cl = sp.Clustering([[0, 1], [2], [3]], dist.argmin(1), np.eye(4), np.zeros((3, 4)), dist, np.arange(4))
    assert sp.special_sets(cl) == [[0, 1], [2], [3]]
    # class 0 joins cluster 1 (1.1 ≤ 1.2), class 1 joins cluster 2 (1.19 ≤ 1.2), class 2 stays alone (2.0 > 1.2)
    assert sp.special_sets(cl, 0.2) == [[0, 1], [0, 2], [1, 3]]
    assert sp.special_sets(cl, 100.0) == []  # a set holding every class has no dustbin: dropped
    with pytest.raises(ValueError, match="overlap_ratio"):
        sp.special_sets(cl, -0.1)


def test_clusters_by_temperature_takes_the_smallest_t_without_an_oversized_cluster():
    blocks = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    logits = torch.log(torch.as_tensor(_block_probs(blocks, 12, 2000, seed=1)))
    t, cl, tried = sp.clusters_by_temperature(logits, 3, (1.0, 2.0, 5.0), max_share=1.0)
    assert t == 1.0 and tried == {"1": [4, 4, 4]} and sorted(cl.clusters) == blocks  # 4 ≤ 1.0 · 12 / 3
    # no T passes (4 > 0.5 · 12 / 3): every T is tried and the last one is used
    t, cl, tried = sp.clusters_by_temperature(logits, 3, (1.0, 2.0, 5.0), max_share=0.5)
    assert t == 5.0 and list(tried) == ["1", "2", "5"] and all(sum(v) == 12 for v in tried.values())
    with pytest.raises(ValueError, match="temperatures"):
        sp.clusters_by_temperature(logits, 3, ())


def test_specialist_probs_shift_the_dustbin_logit():
    z_g, z_m = torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64), torch.tensor([[0.5, -1.0, 0.2]], dtype=torch.float64)
    p_g, (p_m,) = sp.specialist_probs(z_g, [z_m], [math.log(3.0)])
    e = np.exp([0.5, -1.0, 0.2])
    e[2] *= 3.0  # the dustbin's odds against every special class ×3
    assert p_g.dtype == p_m.dtype == torch.float64
    np.testing.assert_allclose(p_m[0].numpy(), e / e.sum(), rtol=1e-12)
    np.testing.assert_allclose(p_g[0].numpy(), np.exp([1.0, 2.0, 0.0]) / np.exp([1.0, 2.0, 0.0]).sum(), rtol=1e-12)
    _, (raw,) = sp.specialist_probs(z_g, [z_m])
    np.testing.assert_allclose(raw[0].numpy(), np.exp([0.5, -1.0, 0.2]) / np.exp([0.5, -1.0, 0.2]).sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="2 dustbin shifts for 1 specialists"):
        sp.specialist_probs(z_g, [z_m], [1.0, 2.0])


def test_combination_metrics_by_hand():
    sets = [[0, 1], [2]]
    p_g = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.1, 0.2], [0.1, 0.1, 0.6, 0.2], [0.1, 0.2, 0.4, 0.3]])
    q = torch.tensor([[0.6, 0.2, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.3, 0.5], [0.1, 0.6, 0.1, 0.2]])
    y = torch.tensor([0, 0, 2, 1])
    m = sp.combination_metrics(p_g, q, y, sets)
    assert (m["generalist_acc"], m["specialists_acc"], m["rel_gain"]) == (0.5, 0.75, 0.5)
    # restricted to U = {0, 1, 2}: the generalist gets examples 0 and 2, the combination all four
    assert (m["generalist_cond_acc"], m["specialists_cond_acc"]) == (0.5, 1.0)
    assert (m["n_test"], m["fixed"], m["broken"], m["changed"]) == (4, 2, 1, 3)
    # active (top-1 class 0, 1, 2, 2): set 0, set 0, set 1, set 1; the true class in an active set: examples 0, 1, 2
    assert (m["share_with_active"], m["mean_active"], m["share_true_class_in_active"]) == (1.0, 1.0, 0.75)
    assert m["mean_coverage"] == 1.0
    assert [(r["covering"], r["examples"], r["delta_correct"]) for r in m["table4"]] == [(0, 0, 0), (1, 4, 1)]


def test_pooled_gain_by_coverage_sums_runs_then_divides():
    def row(c, n, b, w):
        return {"covering": c, "label": str(c), "examples": n, "base_correct": b, "new_correct": w}

    pooled = sp.pooled_gain_by_coverage([[row(0, 2, 1, 1), row(1, 3, 2, 3)], [row(2, 1, 0, 0), row(1, 1, 0, 1)]])
    got = [(r["covering"], r["examples"], r["base_correct"], r["new_correct"], r["delta_correct"]) for r in pooled]
    assert got == [(0, 2, 1, 1, 0), (1, 4, 2, 4, 2), (2, 1, 0, 0, 0)]
    assert pooled[0]["relative_change"] == 0.0 and pooled[1]["relative_change"] == 1.0  # 2 / 2, not a mean of runs
    assert math.isnan(pooled[2]["relative_change"])


class _Lookup(torch.nn.Module):
    """Fixed logits by example id (``x[:, 0]``)."""

    def __init__(self, logits: list[list[float]]):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float64))

    def forward(self, x):
        return self.logits[x[:, 0].long()]


@pytest.mark.parametrize("val_label,rule", [(2, "prior"), (0, "paper")])
def test_evaluate_combination_chooses_the_dustbin_rule_on_validation(val_label, rule):
    """Classes 0–2, one specialist on S = {0, 1}; a quarter of the training labels special: shifts log 2 (paper),
    log 3 (prior). Example 0: generalist [0.48, 0.05, 0.47] (top-1 class 0: the specialist is active), specialist
    odds 2.5 : 0.1 : 1 before the shift. One active specialist: q_0 = (0.48 + p_0)/2, q_2 = (0.47 + p_dust)/2, so
    class 0 wins with a shift of log 2 (p_0 − p_dust = 0.5/4.6) and class 2 with log 3 (−0.5/5.6). Example 1:
    the generalist is sure of class 2 (no specialist active)."""
    gen = _Lookup([np.log([0.48, 0.05, 0.47]).tolist(), np.log([0.1, 0.1, 0.8]).tolist()])
    spec = _Lookup([np.log([2.5, 0.1, 1.0]).tolist()] * 2)
    ids = torch.tensor([[0], [1]])
    splits = Splits(TensorData(ids[[1, 1, 1, 0]], torch.tensor([0, 2, 2, 2])),
                    TensorData(ids[:1], torch.tensor([val_label])), TensorData(ids, torch.tensor([2, 2])), 3, "toy")
    out, q_train = sp.evaluate_combination(gen, [spec], [[0, 1]], splits)
    assert out["special_fractions"] == [0.25] and out["rule"] == rule
    assert out["shifts_by_rule"] == {"paper": [pytest.approx(math.log(2))], "prior": [pytest.approx(math.log(3))]}
    assert out["val_acc_by_rule"] == {"paper": float(val_label == 0), "prior": float(val_label == 2)}
    assert out["generalist_val_acc"] == float(val_label == 0)
    # test: the chosen rule's combination fixes example 0 (true class 2) only with the prior shift
    assert out["generalist_acc"] == 0.5 and out["specialists_acc"] == (1.0 if rule == "prior" else 0.5)
    assert q_train.shape == (4, 3) and torch.allclose(q_train.sum(1), torch.ones(4, dtype=torch.float64))
    # training ids 1, 1, 1, 0 labelled 0, 2, 2, 2: id 1 is class 2; id 0 is class 2 with the prior shift only
    assert out["train_acc_combination"] == (0.75 if rule == "prior" else 0.5)


def test_combination_teacher_answers_augmented_batches_live_without_a_table():
    """With a table, a training batch gets the stored q of its clean images (by index); without one, q of the
    inputs as given (consistent teaching), computed fresh and not memoised; evaluation (no index) memoises."""
    torch.manual_seed(0)
    gen = nn.Linear(4, 6)
    specs = [nn.Linear(4, 3), nn.Linear(4, 3)]  # classes {0, 1} / {2, 3} + dustbin
    sets = [[0, 1], [2, 3]]
    x = torch.randn(5, 4)
    x_aug = x + 0.5
    live = sp.SpecialistCombination(gen, specs, sets)
    q_aug = sp.combine(*sp.specialist_probs(gen(x_aug), [s(x_aug) for s in specs]), sets)
    assert torch.allclose(live.member_logits(x_aug, torch.arange(5))[:, 0].exp().double(), q_aug, atol=1e-5)
    assert live._memo == {}  # a training batch is not kept
    table = torch.log(torch.full((5, 6), 1 / 6))
    stored = sp.SpecialistCombination(gen, specs, sets, table=table)
    assert torch.equal(stored.member_logits(x_aug, torch.arange(5))[:, 0], table)
    assert torch.allclose(stored.member_logits(x_aug)[:, 0].exp().double(), q_aug, atol=1e-5)
    assert len(stored._memo) == 1
