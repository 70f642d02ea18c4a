"""Subclass distillation (Müller, Kornblith & Hinton 2020), tested as mathematics (spec §2–§7)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import darkknowledge.subclass.losses as sc
from darkknowledge.subclass import (
    PenultimateDistillation,
    SubclassHead,
    chance_levels,
    chance_subclass_recovery,
    conventional_class_distillation_loss,
    evaluate_subclasses,
    subclass_auxiliary_loss,
    subclass_distillation_loss,
    subclass_nmi,
    subclass_purity,
    subclass_recovery,
    subclass_teacher_loss,
    subclass_to_class_logits,
    subclass_usage,
)

torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- grouping


@pytest.mark.parametrize("n,s", [(1, 3), (2, 5), (3, 1), (4, 4)])
def test_grouping_equals_block_sum_of_subclass_probabilities(n: int, s: int) -> None:
    z = torch.randn(7, n * s, generator=_gen(n * 10 + s), dtype=torch.float64) * 3
    cl = subclass_to_class_logits(z, n)
    assert cl.shape == (7, n)
    block_sums = F.softmax(z, dim=1).reshape(7, n, s).sum(dim=2)
    torch.testing.assert_close(F.softmax(cl, dim=1), block_sums, rtol=0, atol=1e-12)
    # and the class logit itself is the log of the summed exponentials of its block
    torch.testing.assert_close(cl[:, 0], torch.log(torch.exp(z[:, :s]).sum(dim=1)))


def test_grouping_is_stable_for_huge_logits() -> None:
    z = torch.tensor([[1000.0, 1000.0, -1000.0, 0.0]])
    cl = subclass_to_class_logits(z, 2)
    assert torch.isfinite(cl).all()
    torch.testing.assert_close(cl, torch.tensor([[1000.0 + math.log(2.0), 0.0]]))


def test_grouping_bad_inputs() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        subclass_to_class_logits(torch.zeros(2, 7), 2)
    with pytest.raises(ValueError, match="shape"):
        subclass_to_class_logits(torch.zeros(10), 2)
    with pytest.raises(ValueError, match="shape"):
        subclass_to_class_logits(torch.zeros(2, 5, 2), 2)
    with pytest.raises(ValueError, match="num_classes"):
        subclass_to_class_logits(torch.zeros(2, 4), 0)


def test_subclass_head() -> None:
    head = SubclassHead(16, num_classes=2, subclasses=5)
    assert (head.num_classes, head.subclasses, head.out_features) == (2, 5, 10)
    assert isinstance(head, torch.nn.Linear)
    x = torch.randn(3, 16, generator=_gen(0))
    z = head(x)
    assert z.shape == (3, 10)
    torch.testing.assert_close(head.class_logits(z), subclass_to_class_logits(z, 2))
    with pytest.raises(ValueError):
        SubclassHead(16, 0, 5)


# ---------------------------------------------------------------------------------------------- aux loss


def _aux_reference(z: np.ndarray, t: float, eps: float = 1e-9) -> float:
    """Independent float64 NumPy transcription of spec §3 (explicit Pearson correlations)."""
    m, k = z.shape
    mu = z.mean(axis=1, keepdims=True)
    sd = np.sqrt(((z - mu) ** 2).sum(axis=1, keepdims=True) / k + eps)
    u = (z - mu) / sd
    rho = (u @ u.T) / k  # Pearson correlation matrix (up to eps)
    s = rho / t
    row_max = s.max(axis=1, keepdims=True)
    lse = row_max[:, 0] + np.log(np.exp(s - row_max).sum(axis=1))
    return float(lse.mean() - 1.0 / t - math.log(m))


@pytest.mark.parametrize("m,k", [(2, 2), (5, 6), (16, 10), (33, 12), (8, 100)])
@pytest.mark.parametrize("t", [0.1, 0.5, 1.0, 2.0])
def test_aux_loss_matches_numpy_reference(m: int, k: int, t: float) -> None:
    rng = np.random.default_rng(m * 1000 + k)
    z = rng.normal(size=(m, k)) * rng.uniform(0.1, 5, size=(m, 1)) + rng.normal(size=(m, 1)) * 3
    got = subclass_auxiliary_loss(torch.from_numpy(z), temperature=t).item()
    assert got == pytest.approx(_aux_reference(z, t), rel=1e-10, abs=1e-10)
    # float32 agrees to float32 precision
    got32 = subclass_auxiliary_loss(torch.from_numpy(z).float(), temperature=t).item()
    assert got32 == pytest.approx(_aux_reference(z, t), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("t", [0.5, 1.0, 3.0])
def test_aux_loss_identical_rows_is_zero(t: float) -> None:
    row = torch.randn(1, 10, generator=_gen(1), dtype=torch.float64)
    z = row.repeat(6, 1)
    assert subclass_auxiliary_loss(z, temperature=t).item() == pytest.approx(0.0, abs=1e-7)
    # and invariant to per-example affine maps: correlation ignores scale and shift
    z2 = z * torch.arange(1, 7, dtype=torch.float64)[:, None] + torch.arange(6, dtype=torch.float64)[:, None]
    assert subclass_auxiliary_loss(z2, temperature=t).item() == pytest.approx(0.0, abs=1e-7)


def _orthonormal_zero_mean(k: int, cols: int, seed: int) -> np.ndarray:
    """[k, cols] orthonormal columns, each orthogonal to the ones vector (zero mean)."""
    assert k >= cols + 1
    a = np.random.default_rng(seed).normal(size=(k, cols))
    a -= a.mean(axis=0)
    q, _ = np.linalg.qr(a)
    return q


def _orthogonal_batch(m: int, k: int, seed: int) -> torch.Tensor:
    """m rows with pairwise Pearson correlation 0 (zero-mean orthonormal vectors, then affine maps)."""
    q = _orthonormal_zero_mean(k, m, seed)
    rng = np.random.default_rng(seed + 1)
    rows = q.T * rng.uniform(0.5, 4, size=(m, 1)) + rng.normal(size=(m, 1))
    return torch.from_numpy(rows)


def _correlation(z: torch.Tensor) -> torch.Tensor:
    return torch.corrcoef(z)


def _ortho_value(m: int, t: float) -> float:
    return math.log(math.exp(1 / t) + m - 1) - 1 / t - math.log(m)


def _simplex_value(m: int, t: float) -> float:
    return math.log(math.exp(1 / t) + (m - 1) * math.exp(-1 / ((m - 1) * t))) - 1 / t - math.log(m)


@pytest.mark.parametrize("m,k", [(4, 10), (8, 10), (16, 32)])
@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_aux_loss_orthogonal_patterns_give_spec_value(m: int, k: int, t: float) -> None:
    z = _orthogonal_batch(m, k, seed=m + k)
    rho = _correlation(z)
    torch.testing.assert_close(rho, torch.eye(m, dtype=torch.float64), rtol=0, atol=1e-10)
    loss = subclass_auxiliary_loss(z, temperature=t).item()
    assert loss == pytest.approx(_ortho_value(m, t), abs=1e-7)
    assert loss < 0
    # identical rows (ρ = 1) and correlated batches (shared component) give more
    assert subclass_auxiliary_loss(z[:1].repeat(m, 1), temperature=t).item() > loss
    for seed in range(3):
        g = _gen(seed)
        corr = torch.randn(1, k, generator=g, dtype=torch.float64) + 0.5 * torch.randn(
            m, k, generator=g, dtype=torch.float64)
        assert subclass_auxiliary_loss(corr, temperature=t).item() > loss


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_aux_loss_orthogonal_is_minimal_among_nonnegative_correlations(t: float) -> None:
    """L_aux increases with every off-diagonal ρ_ij, so among batches with ρ_ij ≥ 0 the orthogonal
    batch is the minimum: add a shared direction w ⟂ all rows with weights c_i ≥ 0 (ρ_ij ∝ c_i c_j)."""
    m, k = 6, 12
    q = _orthonormal_zero_mean(k, m + 1, seed=4)
    rows, w = q[:, :m].T, q[:, m]
    base = subclass_auxiliary_loss(torch.from_numpy(rows), temperature=t).item()
    rng = np.random.default_rng(5)
    prev = base
    c = rng.uniform(0, 1, size=(m, 1))
    for scale in (0.1, 0.5, 1.0, 3.0):
        z = torch.from_numpy(rows + scale * c * w[None, :])
        off = _correlation(z)[~torch.eye(m, dtype=torch.bool)]
        assert (off >= 0).all()
        val = subclass_auxiliary_loss(z, temperature=t).item()
        assert val > prev  # monotone in the shared component
        prev = val


@pytest.mark.parametrize("m,k", [(4, 10), (8, 10), (16, 32), (32, 10)])
def test_aux_loss_random_batches_respect_simplex_lower_bound(m: int, k: int) -> None:
    """(derived) By Jensen and Σ_ij ρ_ij ≥ 0, L_aux ≥ the regular-simplex value (ρ_ij = −1/(m−1))."""
    for seed in range(5):
        z = torch.randn(m, k, generator=_gen(seed), dtype=torch.float64)
        for t in (0.5, 1.0, 2.0):
            assert subclass_auxiliary_loss(z, temperature=t).item() >= _simplex_value(m, t) - 1e-12


def test_aux_loss_regular_simplex_is_below_orthogonal() -> None:
    """Negative correlations lower the loss further: the global minimum is the regular simplex
    (ρ_ij = −1/(m−1)), not the orthogonal batch (derived)."""
    m, k, t = 5, 10, 1.0
    q = _orthogonal_batch(m, k, seed=3)
    q = (q - q.mean(1, keepdim=True)) / q.std(1, correction=0, keepdim=True)
    simplex = q - q.mean(0, keepdim=True)  # centred orthonormal vectors = regular simplex
    rho = _correlation(simplex)
    off = rho[~torch.eye(m, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / (m - 1)))
    loss = subclass_auxiliary_loss(simplex, temperature=t).item()
    assert loss == pytest.approx(_simplex_value(m, t), abs=1e-7)
    assert loss < _ortho_value(m, t)


def test_aux_loss_gradient_finite_for_constant_logits() -> None:
    z = (torch.arange(6, dtype=torch.float32)[:, None] * torch.ones(6, 10)).requires_grad_(True)
    loss = subclass_auxiliary_loss(z, temperature=1.0)
    # every z-scored row is 0, so S = 0 and L = log m − 1/T − log m = −1/T
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    # a single constant row inside an otherwise random batch
    z2 = torch.randn(4, 10, generator=_gen(2))
    z2[1] = 3.0
    z2.requires_grad_(True)
    subclass_auxiliary_loss(z2).backward()
    assert torch.isfinite(z2.grad).all()


def test_aux_loss_bad_inputs() -> None:
    z = torch.randn(4, 10, generator=_gen(0))
    with pytest.raises(ValueError, match="temperature"):
        subclass_auxiliary_loss(z, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        subclass_auxiliary_loss(z, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        subclass_auxiliary_loss(z, temperature=float("nan"))
    with pytest.raises(ValueError, match="at least 2 examples"):
        subclass_auxiliary_loss(z[:1])
    with pytest.raises(ValueError, match="at least 2 subclass logits"):
        subclass_auxiliary_loss(z[:, :1])
    bad = z.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        subclass_auxiliary_loss(bad)
    bad[2, 3] = float("inf")
    with pytest.raises(FloatingPointError):
        subclass_auxiliary_loss(bad)
    with pytest.raises(ValueError, match="shape"):
        subclass_auxiliary_loss(z.reshape(-1))


# ---------------------------------------------------------------------------------------------- teacher loss


def test_teacher_loss_beta_zero_is_exactly_plain_ce(monkeypatch: pytest.MonkeyPatch) -> None:
    z = torch.randn(8, 10, generator=_gen(3))
    y = torch.randint(0, 2, (8,), generator=_gen(4))
    plain = F.cross_entropy(subclass_to_class_logits(z, 2), y)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the auxiliary loss must not be computed when beta == 0")

    monkeypatch.setattr(sc, "subclass_auxiliary_loss", boom)
    total, parts = subclass_teacher_loss(z, y, num_classes=2, beta=0.0)
    assert torch.equal(total, plain)
    assert set(parts) == {"ce"} and torch.equal(parts["ce"], plain)
    # batch of one is fine without the aux term
    total1, _ = subclass_teacher_loss(z[:1], y[:1], num_classes=2, beta=0)
    assert torch.equal(total1, F.cross_entropy(subclass_to_class_logits(z[:1], 2), y[:1]))


def test_teacher_loss_with_aux() -> None:
    z = torch.randn(8, 10, generator=_gen(5), dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (8,), generator=_gen(6))
    total, parts = subclass_teacher_loss(z, y, num_classes=2, beta=0.7, aux_temperature=0.5)
    ce = F.cross_entropy(subclass_to_class_logits(z, 2), y)
    aux = subclass_auxiliary_loss(z, temperature=0.5)
    torch.testing.assert_close(total, ce + 0.7 * aux)
    torch.testing.assert_close(parts["ce"], ce.detach())
    torch.testing.assert_close(parts["aux"], aux.detach())
    assert not parts["ce"].requires_grad and total.requires_grad
    total.backward()
    assert torch.isfinite(z.grad).all()


def test_teacher_loss_bad_inputs() -> None:
    z = torch.randn(4, 10)
    with pytest.raises(ValueError, match="labels must have shape"):
        subclass_teacher_loss(z, torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        subclass_teacher_loss(z, torch.tensor([0, 1, 2, 0]), 2)
    with pytest.raises(TypeError, match="integer"):
        subclass_teacher_loss(z, torch.zeros(4), 2)
    with pytest.raises(ValueError, match="beta"):
        subclass_teacher_loss(z, torch.zeros(4, dtype=torch.long), 2, beta=-1.0)
    with pytest.raises(ValueError, match="not divisible"):
        subclass_teacher_loss(z, torch.zeros(4, dtype=torch.long), 3)


# ------------------------------------------------------------------------------------------- student losses


@pytest.mark.parametrize("t", [1.0, 4.0])
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_subclass_distillation_gradient(t: float, alpha: float) -> None:
    b, n, s = 6, 2, 5
    zs = torch.randn(b, n * s, generator=_gen(7), dtype=torch.float64, requires_grad=True)
    zt = torch.randn(b, n * s, generator=_gen(8), dtype=torch.float64, requires_grad=True) * 2
    zt.retain_grad()
    y = torch.randint(0, n, (b,), generator=_gen(9))
    total, parts = subclass_distillation_loss(zs, zt, y, n, temperature=t, alpha=alpha)
    total.backward()
    q = F.softmax(zs.detach() / t, dim=1)
    p = F.softmax(zt.detach() / t, dim=1)
    expected = alpha * t * (q - p) / b
    if alpha < 1:
        zs2 = zs.detach().clone().requires_grad_(True)
        F.cross_entropy(subclass_to_class_logits(zs2, n), y).backward()
        expected = expected + (1 - alpha) * zs2.grad
    torch.testing.assert_close(zs.grad, expected, rtol=1e-10, atol=1e-12)
    assert zt.grad is None  # the teacher receives no gradient
    # the value: T² · mean_b soft CE, plus the hard term
    soft = (t * t) * (-(p * F.log_softmax(zs.detach() / t, dim=1)).sum(1).mean())
    torch.testing.assert_close(parts["soft"], soft)
    hard = F.cross_entropy(subclass_to_class_logits(zs.detach(), n), y)
    torch.testing.assert_close(parts["hard"], hard)
    torch.testing.assert_close(total.detach(), alpha * soft + (1 - alpha) * hard)


def test_subclass_distillation_without_labels_and_errors() -> None:
    zs = torch.randn(4, 10)
    zt = torch.randn(4, 10)
    total, parts = subclass_distillation_loss(zs, zt, None, 2, temperature=2.0, alpha=1.0)
    assert set(parts) == {"soft"} and torch.equal(total, parts["soft"])
    with pytest.raises(ValueError, match="alpha == 1"):
        subclass_distillation_loss(zs, zt, None, 2, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        subclass_distillation_loss(zs, zt, None, 2, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        subclass_distillation_loss(zs, zt, None, 2, temperature=0, alpha=1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        subclass_distillation_loss(zs, zt[:, :8], None, 2, alpha=1.0)
    with pytest.raises(ValueError, match="not divisible"):
        subclass_distillation_loss(zs, zt, None, 3, alpha=1.0)


def test_conventional_class_distillation() -> None:
    b, n, s, t, alpha = 5, 2, 5, 4.0, 0.5
    student = torch.randn(b, n, generator=_gen(10), dtype=torch.float64, requires_grad=True)
    teacher = (torch.randn(b, n * s, generator=_gen(11), dtype=torch.float64) * 3).requires_grad_(True)
    y = torch.randint(0, n, (b,), generator=_gen(12))
    total, parts = conventional_class_distillation_loss(student, teacher, y, n, temperature=t, alpha=alpha)
    total.backward()
    assert teacher.grad is None
    p = F.softmax(subclass_to_class_logits(teacher.detach(), n) / t, dim=1)
    q = F.softmax(student.detach() / t, dim=1)
    s2 = student.detach().clone().requires_grad_(True)
    F.cross_entropy(s2, y).backward()
    torch.testing.assert_close(student.grad, alpha * t * (q - p) / b + (1 - alpha) * s2.grad)
    soft = t * t * -(p * torch.log(q)).sum(1).mean()
    torch.testing.assert_close(parts["soft"], soft)
    # (derived) tempering the class logits is not the block sum of tempered subclass probabilities
    block = F.softmax(teacher.detach() / t, dim=1).reshape(b, n, s).sum(2)
    assert not torch.allclose(p, block)
    with pytest.raises(ValueError, match="shape"):
        conventional_class_distillation_loss(torch.randn(b, 3), teacher, y, n)


def test_penultimate_distillation() -> None:
    torch.manual_seed(0)
    mod = PenultimateDistillation(student_dim=6, teacher_dim=4)
    hs = torch.randn(5, 6, generator=_gen(13), requires_grad=True)
    ht = torch.randn(5, 4, generator=_gen(14), requires_grad=True)
    loss = mod(hs, ht)
    expected = 0.5 * ((hs @ mod.proj.weight.T + mod.proj.bias - ht) ** 2).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    logits = torch.randn(5, 2, generator=_gen(15), requires_grad=True)
    y = torch.tensor([0, 1, 1, 0, 1])
    total, parts = mod.loss(hs, ht, logits, y, weight=0.3)
    torch.testing.assert_close(total, F.cross_entropy(logits, y) + 0.3 * expected)
    total.backward()
    assert ht.grad is None
    assert hs.grad is not None and mod.proj.weight.grad is not None and logits.grad is not None
    assert set(parts) == {"ce", "feat"}
    with pytest.raises(ValueError, match="width"):
        mod(torch.randn(5, 5), ht)
    with pytest.raises(ValueError, match="batch sizes differ"):
        mod(hs[:3], ht)
    # a perfect linear fit gives zero loss
    mod2 = PenultimateDistillation(3, 3, bias=False)
    with torch.no_grad():
        mod2.proj.weight.copy_(torch.eye(3))
    h = torch.randn(4, 3)
    assert mod2(h, h).item() == 0.0


# ---------------------------------------------------------------------------------------------- metrics


def _brute_force_recovery(pred: np.ndarray, true: np.ndarray, allowed=None) -> float:
    """Best one-to-one matching by exhaustive search over all injections (no scipy)."""
    p_ids = sorted(set(pred.tolist()))
    t_ids = sorted(set(true.tolist()))
    counts = {(a, b): 0 for a in p_ids for b in t_ids}
    for a, b in zip(pred.tolist(), true.tolist()):
        counts[(a, b)] += 1
    big = max(len(p_ids), len(t_ids))
    rows = p_ids + [None] * (big - len(p_ids))
    cols = t_ids + [None] * (big - len(t_ids))
    best = 0
    for perm in itertools.permutations(range(big)):
        tot = 0
        for i, j in enumerate(perm):
            a, b = rows[i], cols[j]
            if a is None or b is None or (allowed is not None and not allowed(a, b)):
                continue
            tot += counts[(a, b)]
        best = max(best, tot)
    return best / len(pred)


def test_recovery_perfect_relabelled_prediction() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 10, size=200)
    perm = rng.permutation(10)
    assert subclass_recovery(perm[true], true) == 1.0
    # logits input: argmax is taken
    logits = np.eye(10)[perm[true]] * 5.0
    assert subclass_recovery(torch.from_numpy(logits), torch.from_numpy(true)) == 1.0
    assert subclass_purity(perm[true], true) == 1.0


@pytest.mark.parametrize("seed", range(12))
def test_recovery_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 6))
    f = int(rng.integers(1, 6))
    n = int(rng.integers(5, 40))
    true = rng.integers(0, f, size=n)
    pred = np.where(rng.random(n) < 0.5, true % k, rng.integers(0, k, size=n)) + int(rng.integers(0, 3))
    assert subclass_recovery(pred, true) == pytest.approx(_brute_force_recovery(pred, true))


@pytest.mark.parametrize("seed", range(6))
def test_within_class_recovery_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n_cls, s = 2, 2
    coarse_of_fine = np.array([0, 0, 0, 1, 1])  # 3 fine labels in class 0, 2 in class 1
    true = rng.integers(0, 5, size=30)
    pred = rng.integers(0, n_cls * s, size=30)
    got = subclass_recovery(pred, true, within_class=True, num_classes=n_cls, subclasses=s,
                            coarse_of_fine=coarse_of_fine)
    ref = _brute_force_recovery(pred, true, allowed=lambda a, b: a // s == coarse_of_fine[b])
    assert got == pytest.approx(ref)
    assert got <= subclass_recovery(pred, true) + 1e-12
    # the same with an explicit subclass -> class map
    got2 = subclass_recovery(pred, true, np.array([0, 0, 1, 1]), within_class=True,
                             coarse_of_fine=coarse_of_fine)
    assert got2 == got


def test_within_class_can_be_below_global() -> None:
    # subclass 0 (class 0) always predicts fine label 1 (class 1): fine globally, wrong within class
    true = np.array([1, 1, 1, 0, 0])
    pred = np.array([0, 0, 0, 2, 2])
    assert subclass_recovery(pred, true) == 1.0
    within = subclass_recovery(pred, true, within_class=True, subclasses=2, coarse_of_fine=np.array([0, 1]))
    assert within == pytest.approx(0.0)


def test_recovery_rectangular_counts_unmatched_as_errors() -> None:
    # 4 fine labels but only 2 predicted subclasses: at most 2 fine labels can be matched
    true = np.array([0, 1, 2, 3] * 5)
    pred = np.array([0, 1, 0, 1] * 5)
    assert subclass_recovery(pred, true) == pytest.approx(0.5)
    # more predicted subclasses than fine labels
    pred2 = np.arange(20)
    assert subclass_recovery(pred2, true) == pytest.approx(4 / 20)


def test_recovery_bad_inputs() -> None:
    with pytest.raises(ValueError, match="examples"):
        subclass_recovery(np.zeros(3, dtype=int), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="empty"):
        subclass_recovery(np.zeros(0, dtype=int), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="non-negative"):
        subclass_recovery(np.array([-1, 0]), np.array([0, 0]))
    with pytest.raises(TypeError, match="integer"):
        subclass_recovery(np.array([0.5, 1.0]), np.array([0, 0]))
    with pytest.raises(ValueError, match="coarse_of_fine"):
        subclass_recovery(np.array([0, 1]), np.array([0, 1]), within_class=True, subclasses=1)
    with pytest.raises(ValueError, match="coarse_of_pred or subclasses"):
        subclass_recovery(np.array([0, 1]), np.array([0, 1]), within_class=True, coarse_of_fine=[0, 1])
    with pytest.raises(ValueError, match="only used with within_class"):
        subclass_recovery(np.array([0, 1]), np.array([0, 1]), coarse_of_pred=[0, 1])
    with pytest.raises(ValueError, match=">= num_classes"):
        subclass_recovery(np.array([0, 10]), np.array([0, 1]), num_classes=2, subclasses=5)


def test_nmi_is_permutation_invariant() -> None:
    rng = np.random.default_rng(1)
    true = rng.integers(0, 6, size=300)
    pred = np.where(rng.random(300) < 0.7, true, rng.integers(0, 6, size=300))
    base = subclass_nmi(pred, true)
    assert 0 < base < 1
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(6)
        assert subclass_nmi(perm[pred], true) == pytest.approx(base, abs=1e-12)
        assert subclass_nmi(pred, perm[true]) == pytest.approx(base, abs=1e-12)
    assert subclass_nmi(np.random.default_rng(5).permutation(6)[true], true) == pytest.approx(1.0)


def test_usage() -> None:
    # 2 classes × 3 subclasses; class 0 uses subclass 0 only, class 1 uses its three uniformly
    pred = np.array([0] * 50 + [3] * 10 + [4] * 10 + [5] * 10 + [1] * 1)
    u = subclass_usage(pred, num_classes=2, subclasses=3, threshold=0.05)
    assert u["counts"].tolist() == [50, 1, 0, 10, 10, 10]
    assert u["num_used"] == 4
    assert u["num_used_per_class"].tolist() == [1, 3]
    assert u["normalized_entropy_per_class"][1] == pytest.approx(1.0)
    p0 = np.array([50, 1]) / 51
    assert u["entropy_per_class"][0] == pytest.approx(-(p0 * np.log(p0)).sum())
    assert u["fractions"].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= num_classes"):
        subclass_usage(np.array([6]), 2, 3)
    # a class with no predictions has entropy 0
    assert subclass_usage(np.array([0, 1]), 2, 3)["entropy_per_class"][1] == 0.0


def test_chance_recovery() -> None:
    true = np.repeat(np.arange(10), 100)
    rng = np.random.default_rng(0)
    rng.shuffle(true)
    assert chance_subclass_recovery(true, method="majority") == pytest.approx(0.1)
    coarse = np.arange(10) // 5
    assert chance_subclass_recovery(true, method="majority", coarse_of_fine=coarse) == pytest.approx(0.2)
    r = chance_subclass_recovery(true, draws=3, seed=1)
    assert 0.1 <= r < 0.16  # matching fits the noise a little
    rc = chance_subclass_recovery(true, 10, coarse_of_fine=coarse, draws=3, seed=1)
    assert 0.2 <= rc < 0.26
    assert chance_subclass_recovery(true, draws=3, seed=1) == r  # seeded
    with pytest.raises(ValueError, match="method"):
        chance_subclass_recovery(true, method="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_subclasses"):
        chance_subclass_recovery(true, coarse_of_fine=coarse)


def test_evaluate_subclasses_on_hand_made_logits() -> None:
    """n = 2 classes × s = 2 subclasses, fine labels 0–3 (class = fine // 2); every number counted by hand."""
    # predicted subclass (argmax) per example and the fine label; subclass 3 is never predicted
    pred = [0, 0, 1, 2, 2, 2, 1, 0]
    fine = [0, 0, 1, 2, 3, 3, 0, 2]
    z = torch.full((8, 4), -5.0)
    z[torch.arange(8), torch.tensor(pred)] = 3.0
    z[6, 2] = 2.9  # example 6: class 0 by logsumexp(−5, 3) ≈ 3.0003 > logsumexp(2.9, −5) ≈ 2.9003
    y = torch.tensor([f // 2 for f in fine])
    y[7] = 1 - y[7]  # example 7 (subclass 0 → class 0) is labelled class 0: right; every other label is fine // 2
    y[3] = 0  # example 3 (subclass 2 → class 1) labelled class 0: the one wrong class prediction
    ev = evaluate_subclasses(z, y, torch.tensor(fine), subclasses=2)
    assert ev["accuracy"] == pytest.approx(7 / 8)
    assert ev["contingency"] == [[2, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 0]]
    assert ev["counts"] == [3, 2, 3, 0] and ev["num_used"] == 3
    # best one-to-one matching, by brute force over all 4! assignments: 0→0, 1→1, 2→3 (+ 3→2): 2 + 1 + 2 = 5
    c = np.asarray(ev["contingency"])
    best = max(sum(c[i, p[i]] for i in range(4)) for p in itertools.permutations(range(4)))
    assert best == 5 and ev["recovery"] == pytest.approx(5 / 8)
    # within class: subclasses 0, 1 may only match fine 0, 1 and subclasses 2, 3 fine 2, 3: 2 + 1 + 2 = 5 too
    assert ev["recovery_within"] == pytest.approx(5 / 8)
    # usage entropy: class 0 block (3, 2) → H(0.6, 0.4)/log 2; class 1 block (3, 0) → 0
    h = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4)) / math.log(2)
    assert ev["usage_entropy"] == pytest.approx(h / 2)
    assert ev["nmi"] == pytest.approx(subclass_nmi(pred, fine))


def test_evaluate_subclasses_class_prediction_groups_logits() -> None:
    """The class is the argmax of the logsumexp-grouped logits, not the block of the top subclass."""
    z = torch.tensor([[2.0, -9.0, 1.5, 1.5]])  # top subclass 0 (class 0), but log(2e^1.5) ≈ 2.19 > 2.0
    ev = evaluate_subclasses(z, torch.tensor([1]), torch.tensor([2]), subclasses=2)
    assert ev["accuracy"] == 1.0 and ev["counts"] == [1, 0, 0, 0]


def test_chance_levels() -> None:
    fine = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])  # classes: 0, 1 → 0; 2, 3 → 1
    ch = chance_levels(fine, subclasses=2)
    assert ch["majority"] == pytest.approx((3 + 4) / 10)  # the majority fine label within each class
    assert ch["class_aware"] == pytest.approx(chance_subclass_recovery(fine, 4, coarse_of_fine=[0, 0, 1, 1]))
    assert ch["blind"] == pytest.approx(chance_subclass_recovery(fine, 4))
