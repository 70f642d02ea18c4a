"""Distillation losses tested as mathematics (Hinton, Vinyals & Dean 2015, spec §2).

Notation as in the spec: student logits ``z``, teacher logits ``v``, temperature ``T``, ``N`` classes,
batch ``B``, ``q = softmax(z/T)``, ``p = softmax(v/T)``. Gradients are checked in float64 against the
closed forms, so tolerances are near machine precision unless the formula itself is an approximation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import darkknowledge as dk
from darkknowledge.methods import Distiller

torch.set_num_threads(1)

B, N = 6, 10
TEMPS = [0.5, 1.0, 2.0, 4.0, 20.0, 100.0]


def _logits(seed: int, b: int = B, n: int = N, scale: float = 3.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, n, generator=g, dtype=dtype)


def _grad(fn, z: torch.Tensor) -> torch.Tensor:
    """d fn(z) / dz by autograd."""
    z = z.detach().clone().requires_grad_(True)
    fn(z).backward()
    return z.grad


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-1, keepdim=True)


# --------------------------------------------------------------------------- Eq. 1: soft targets


@pytest.mark.parametrize("t", [0.1, 1.0, 3.0, 20.0])
def test_soft_targets_is_tempered_softmax(t):
    """Eq. 1: q_i = exp(z_i/T) / sum_j exp(z_j/T), computed explicitly in float64."""
    z = _logits(0)
    e = torch.exp(z / t - (z / t).max(dim=1, keepdim=True).values)
    expected = e / e.sum(dim=1, keepdim=True)
    q = dk.soft_targets(z, t)
    torch.testing.assert_close(q, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(B, dtype=torch.float64))


def test_soft_targets_higher_temperature_is_softer():
    """Eq. 1: raising T raises the entropy of softmax(z/T) (towards log N); T = 1 is the plain softmax."""
    z = _logits(1)
    torch.testing.assert_close(dk.soft_targets(z, 1.0), F.softmax(z, dim=1))
    ent = [float(-(q * q.log()).sum(1).mean()) for q in (dk.soft_targets(z, t) for t in (1, 2, 5, 20, 1000))]
    assert all(a < b for a, b in zip(ent, ent[1:]))
    assert ent[-1] == pytest.approx(math.log(N), abs=1e-4)


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf"), float("-inf")])
def test_bad_temperature_raises(t):
    """Eq. 1 needs a finite T > 0: T <= 0, NaN and inf raise ValueError everywhere T is taken."""
    z = _logits(2)
    with pytest.raises(ValueError, match="temperature"):
        dk.soft_targets(z, t)
    with pytest.raises(ValueError, match="temperature"):
        dk.distillation_loss(z, z, t)
    with pytest.raises(ValueError, match="temperature"):
        dk.DistillationObjective(temperature=t)


# --------------------------------------------------------------------------- Eq. 2: the gradient


@pytest.mark.parametrize("t", TEMPS)
def test_gradient_t2_scaled_equals_t_times_q_minus_p(t):
    """§2.3/Eq. 2: L = T^2 mean_b CE(p_b, q_b) has dL/dz = T (q - p) / B exactly (autograd vs formula)."""
    z, v = _logits(3), _logits(4)
    g = _grad(lambda zz: dk.distillation_loss(zz, v, t), z)
    q, p = F.softmax(z / t, dim=1), F.softmax(v / t, dim=1)
    torch.testing.assert_close(g, t * (q - p) / B, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("t", TEMPS)
def test_gradient_unscaled_is_eq2(t):
    """Eq. 2: without the T^2 factor, dC/dz_i = (q_i - p_i) / T per case, i.e. (q - p) / (T B) for the batch mean."""
    z, v = _logits(5), _logits(6)
    g = _grad(lambda zz: dk.distillation_loss(zz, v, t, scale_t2=False), z)
    q, p = F.softmax(z / t, dim=1), F.softmax(v / t, dim=1)
    torch.testing.assert_close(g, (q - p) / (t * B), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("t", [1.0, 3.0, 20.0])
def test_eq2_finite_differences(t):
    """Eq. 2 by central finite differences (no autograd): (C(z + h e_bi) - C(z - h e_bi)) / 2h = (q - p)_bi / (T B)."""
    z, v = _logits(7, b=3, n=5), _logits(8, b=3, n=5)
    h = 1e-6
    fd = torch.zeros_like(z)
    with torch.no_grad():
        for b in range(z.shape[0]):
            for i in range(z.shape[1]):
                e = torch.zeros_like(z)
                e[b, i] = h
                fd[b, i] = (dk.distillation_loss(z + e, v, t, scale_t2=False)
                            - dk.distillation_loss(z - e, v, t, scale_t2=False)) / (2 * h)
    q, p = F.softmax(z / t, dim=1), F.softmax(v / t, dim=1)
    torch.testing.assert_close(fd, (q - p) / (t * z.shape[0]), rtol=1e-6, atol=1e-9)


def test_t2_scaling_keeps_gradient_scale_across_temperatures():
    """§2.3: soft-target gradients scale as 1/T^2, so multiplying by T^2 keeps their size roughly constant.

    On random logits the norm of the T^2-scaled gradient stays within 0.5-2x of its value at T = 10 for
    T in [2, 50], while the unscaled gradient falls like 1/T^2 (norm ratio 50 -> 10 close to 1/25).
    """
    z, v = _logits(9), _logits(10)

    def norm(t, scaled=True):
        return float(_grad(lambda zz: dk.distillation_loss(zz, v, t, scale_t2=scaled), z).norm())

    ref = norm(10.0)
    for t in (2.0, 3.0, 5.0, 10.0, 20.0, 35.0, 50.0):
        assert 0.5 <= norm(t) / ref <= 2.0, t
        assert norm(t, scaled=False) == pytest.approx(norm(t) / t**2, rel=1e-12)
    ratio = norm(50.0, scaled=False) / norm(10.0, scaled=False)
    assert ratio == pytest.approx(1 / 25, rel=0.1)
    # log-log slope of the unscaled gradient norm at high T is -2
    slope = math.log(norm(200.0, scaled=False) / norm(100.0, scaled=False)) / math.log(2.0)
    assert slope == pytest.approx(-2.0, abs=0.02)


# --------------------------------------------------------------------------- Eq. 4: the high-temperature limit

HIGH_TS = [1, 2, 5, 10, 20, 50, 100, 1000]


def test_high_temperature_limit_is_logit_matching():
    """Eq. 4: with per-case zero-meaned z and v, T^2 dC/dz -> (z - v)/N per case. Our loss already carries
    T^2 and a batch mean, so its gradient -> (z - v)/(N B); the relative error falls monotonically with T
    (and like 1/T: it is O(1/T) by the e^x ~ 1 + x expansion of Eq. 3).
    """
    z, v = _centre(_logits(11)), _centre(_logits(12))
    limit = (z - v) / (N * B)
    errs = []
    for t in HIGH_TS:
        g = _grad(lambda zz, t=t: dk.distillation_loss(zz, v, float(t)), z)
        errs.append(float((g - limit).norm() / limit.norm()))
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 5e-3
    assert errs[-1] * 1000 == pytest.approx(errs[-2] * 100, rel=0.05)  # O(1/T)


def test_high_temperature_gradient_matches_logit_matching_gradient_over_n():
    """Eq. 4: at high T the distillation gradient equals grad of logit_matching_loss(z, v, center=True) / N.

    Softmax ignores a per-case shift, so this holds for un-centred logits too provided the logit-matching
    loss centres them; the un-centred logit-matching gradient is different.
    """
    z, v = _logits(13) + 5.0, _logits(14) - 2.0  # not zero-mean
    g_lm = _grad(lambda zz: dk.logit_matching_loss(zz, v, center=True), z)
    g_lm_raw = _grad(lambda zz: dk.logit_matching_loss(zz, v, center=False), z)
    prev = math.inf
    for t in HIGH_TS:
        g = _grad(lambda zz, t=t: dk.distillation_loss(zz, v, float(t)), z)
        err = float((g - g_lm / N).norm() / (g_lm / N).norm())
        assert err < prev
        prev = err
    assert prev < 5e-3
    g_hi = _grad(lambda zz: dk.distillation_loss(zz, v, 1000.0), z)
    assert float((g_hi - g_lm_raw / N).norm() / (g_lm_raw / N).norm()) > 0.1


def test_eq3_first_order_approximation():
    """Eq. 3: for T large w.r.t. the logits, dC/dz_i ~ (1/T)((1 + z_i/T)/(N + sum z/T) - (1 + v_i/T)/(N + sum v/T)),
    with an error of second order, so much smaller than the size of the gradient itself."""
    z, v = _logits(15, scale=1.0) + 0.3, _logits(16, scale=1.0) - 0.2
    t = 50.0
    g = _grad(lambda zz: dk.distillation_loss(zz, v, t, scale_t2=False), z) * B  # per-case dC/dz
    eq3 = ((1 + z / t) / (N + z.sum(1, keepdim=True) / t) - (1 + v / t) / (N + v.sum(1, keepdim=True) / t)) / t
    assert float((g - eq3).norm() / g.norm()) < 0.05


# --------------------------------------------------------------------------- reductions


@pytest.mark.parametrize("kind", ["ce", "kl"])
def test_reduction_is_batch_mean(kind):
    """§2.3: the soft loss is a mean over the batch of per-case sums over classes."""
    z, v, t = _logits(17), _logits(18), 3.0
    whole = dk.distillation_loss(z, v, t, kind=kind)
    per = torch.stack([dk.distillation_loss(z[b:b + 1], v[b:b + 1], t, kind=kind) for b in range(B)])
    torch.testing.assert_close(whole, per.mean(), rtol=1e-12, atol=0)
    # and it is exactly T^2 sum_i -p_i log q_i (ce) or T^2 sum_i p_i log(p_i/q_i) (kl), batch-averaged
    p, log_q = F.softmax(v / t, 1), F.log_softmax(z / t, 1)
    ce = -(p * log_q).sum(1)
    expected = ce if kind == "ce" else ce + (p * p.log()).sum(1)
    torch.testing.assert_close(whole, t**2 * expected.mean(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", ["ce", "kl"])
def test_padding_classes_does_not_divide_loss(kind):
    """§2.3 pitfall: no mean over classes. Doubling N by padding both sides with very negative logits
    (zero probability at T) leaves the loss unchanged, where a class mean would halve it."""
    z, v, t = _logits(19), _logits(20), 2.0
    pad = torch.full((B, N), -1e4, dtype=torch.float64)
    base = dk.distillation_loss(z, v, t, kind=kind)
    padded = dk.distillation_loss(torch.cat([z, pad], 1), torch.cat([v, pad], 1), t, kind=kind)
    torch.testing.assert_close(padded, base, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides:UserWarning")
def test_elementwise_mean_kl_div_is_wrong_by_factor_c():
    """§2.3 pitfall: F.kl_div(..., reduction="mean") averages over B*C elements, so it is the correct
    (batch-mean) KL divided by the number of classes C; reduction="batchmean" is the correct one."""
    z, v, t = _logits(21), _logits(22), 4.0
    ours = dk.distillation_loss(z, v, t, kind="kl")
    log_q, p = F.log_softmax(z / t, 1), F.softmax(v / t, 1)
    wrong = t**2 * F.kl_div(log_q, p, reduction="mean")
    right = t**2 * F.kl_div(log_q, p, reduction="batchmean")
    torch.testing.assert_close(ours, right, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours, N * wrong, rtol=1e-12, atol=0)
    assert float(ours) > 2 * float(wrong)


@pytest.mark.parametrize("t", [1.0, 4.0, 20.0])
def test_kl_and_ce_same_gradient_values_differ_by_entropy(t):
    """§2.3: KL(p||q) = CE(p, q) - H(p); H(p) does not depend on z, so the gradients are identical and the
    values differ exactly by T^2 mean_b H(p_b)."""
    z, v = _logits(23), _logits(24)
    g_ce = _grad(lambda zz: dk.distillation_loss(zz, v, t, kind="ce"), z)
    g_kl = _grad(lambda zz: dk.distillation_loss(zz, v, t, kind="kl"), z)
    torch.testing.assert_close(g_kl, g_ce, rtol=1e-12, atol=1e-15)
    p = F.softmax(v / t, 1)
    h = -(p * p.log()).sum(1).mean()
    diff = dk.distillation_loss(z, v, t, kind="ce") - dk.distillation_loss(z, v, t, kind="kl")
    torch.testing.assert_close(diff, t**2 * h, rtol=1e-10, atol=1e-12)
    # the same through teacher_probs (the KL then takes log p from the probabilities)
    kl_probs = dk.distillation_loss(z, teacher_probs=p, temperature=t, kind="kl")
    torch.testing.assert_close(kl_probs, dk.distillation_loss(z, v, t, kind="kl"), rtol=1e-10, atol=1e-12)


def test_kl_is_zero_when_student_equals_teacher():
    """KL(p||q) = 0 iff q = p: identical logits give zero KL loss and zero gradient; CE gives T^2 H(p)."""
    z, t = _logits(25), 3.0
    torch.testing.assert_close(dk.distillation_loss(z, z, t, kind="kl"), torch.tensor(0.0, dtype=z.dtype),
                               atol=1e-12, rtol=0)
    g = _grad(lambda zz: dk.distillation_loss(zz, z, t), z)
    torch.testing.assert_close(g, torch.zeros_like(z), atol=1e-15, rtol=0)


def test_teacher_probs_path_equals_teacher_logits_path():
    """Passing p = softmax(v/T) directly as teacher_probs gives the same loss and gradient as passing v."""
    z, v, t = _logits(26), _logits(27), 5.0
    p = dk.soft_targets(v, t)
    a = dk.distillation_loss(z, v, t)
    b = dk.distillation_loss(z, teacher_probs=p, temperature=t)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    torch.testing.assert_close(_grad(lambda zz: dk.distillation_loss(zz, v, t), z),
                               _grad(lambda zz: dk.distillation_loss(zz, teacher_probs=p, temperature=t), z))


def test_teacher_given_twice_or_never_raises():
    """Exactly one of teacher_logits / teacher_probs."""
    z = _logits(28)
    with pytest.raises(ValueError, match="exactly one"):
        dk.distillation_loss(z, z, 2.0, teacher_probs=F.softmax(z, 1))
    with pytest.raises(ValueError, match="exactly one"):
        dk.distillation_loss(z, None, 2.0)
    with pytest.raises(ValueError, match="kind"):
        dk.distillation_loss(z, z, 2.0, kind="mse")


def test_teacher_probs_must_be_probabilities():
    """Logits passed by mistake as teacher_probs are rejected (rows of p must be >= 0 and sum to 1)."""
    z, v = _logits(29), _logits(30)
    with pytest.raises(ValueError, match="teacher_probs"):
        dk.distillation_loss(z, teacher_probs=v, temperature=2.0)
    with pytest.raises(ValueError, match="teacher_probs"):
        dk.distillation_loss(z, teacher_probs=F.softmax(v, 1) * 2, temperature=2.0)


# --------------------------------------------------------------------------- the teacher gets no gradient


def test_teacher_logits_get_no_gradient():
    """§2.3: p = softmax(v/T) is a fixed target; v gets no gradient (ce, kl, logit matching)."""
    for fn in (lambda z, v: dk.distillation_loss(z, v, 3.0),
               lambda z, v: dk.distillation_loss(z, v, 3.0, kind="kl"),
               lambda z, v: dk.logit_matching_loss(z, v, center=True),
               lambda z, v: dk.DistillationObjective(3.0, 1.0, 0.0)(z, None, teacher_logits=v)[0]):
        z = _logits(31).requires_grad_(True)
        v = _logits(32).requires_grad_(True)
        fn(z, v).backward()
        assert v.grad is None
        assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_teacher_probs_get_no_gradient():
    """The teacher_probs path is detached too."""
    z = _logits(33).requires_grad_(True)
    p = F.softmax(_logits(34), 1).requires_grad_(True)
    for kind in ("ce", "kl"):
        dk.distillation_loss(z, teacher_probs=p, temperature=2.0, kind=kind).backward()
        assert p.grad is None


def _mlp(seed: int, hidden=(8,), dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return dk.create_model("mlp", in_features=12, hidden=list(hidden), num_classes=4, dropout=dropout)


@pytest.mark.parametrize("kind", ["ce", "kl", "logits"])
@pytest.mark.parametrize("ensemble", [False, True])
def test_distiller_step_leaves_teacher_untouched(kind, ensemble):
    """A real nn.Module teacher wrapped by as_teacher is frozen (requires_grad False), gets no .grad and
    keeps its weights through a Distiller training step, while the student's weights move."""
    teacher_modules = [_mlp(1, dropout=0.3), _mlp(2)] if ensemble else [_mlp(1, dropout=0.3)]
    teacher = dk.as_teacher(teacher_modules if ensemble else teacher_modules[0])
    assert isinstance(teacher, dk.Ensemble if ensemble else dk.ModelTeacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert all(not p.requires_grad for p in teacher.parameters())
    student = _mlp(3)
    s_before = {k: v.clone() for k, v in student.state_dict().items()}
    distiller = Distiller(student, teacher, dk.DistillationObjective(4.0, 1.0, 0.1, kind=kind))
    distiller.train()
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 12, generator=g), torch.randint(0, 4, (5,), generator=g)
    for _ in range(2):
        _, losses = distiller(x, y)
        assert set(losses) == {"soft", "hard"}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert not teacher.training and all(not m.training for m in teacher.modules())
    for p in teacher.parameters():
        assert p.grad is None and not p.requires_grad
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, s_before[k]) for k, v in student.state_dict().items())


# --------------------------------------------------------------------------- the combined objective


def test_objective_is_weighted_sum():
    """§2.3: L = w_soft * T^2 CE(p, q_T) + w_hard * CE(y, softmax(z)), both from the same logits."""
    z, v, t = _logits(35), _logits(36), 4.0
    y = torch.tensor([0, 1, 2, 3, 9, 5])
    obj = dk.DistillationObjective(temperature=t, w_soft=0.7, w_hard=0.3)
    total, terms = obj(z, y, teacher_logits=v)
    torch.testing.assert_close(terms["soft"], dk.distillation_loss(z, v, t))
    torch.testing.assert_close(terms["hard"], F.cross_entropy(z, y))
    torch.testing.assert_close(total, 0.7 * terms["soft"] + 0.3 * terms["hard"], rtol=1e-12, atol=0)
    # gradient is the weighted sum of the two gradients: w_soft T(q-p)/B + w_hard (softmax(z) - onehot)/B
    g = _grad(lambda zz: obj(zz, y, teacher_logits=v)[0], z)
    expected = 0.7 * t * (F.softmax(z / t, 1) - F.softmax(v / t, 1)) / B \
        + 0.3 * (F.softmax(z, 1) - F.one_hot(y, N).double()) / B
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-14)


def test_objective_without_hard_term_still_trains_student():
    """w_hard = 0: the soft term alone gives the student a nonzero gradient; no labels are needed."""
    z, v = _logits(37), _logits(38)
    obj = dk.DistillationObjective(temperature=4.0, w_soft=1.0, w_hard=0.0)
    zz = z.clone().requires_grad_(True)
    total, terms = obj(zz, None, teacher_logits=v)
    assert set(terms) == {"soft"}
    total.backward()
    assert float(zz.grad.abs().max()) > 1e-4
    with pytest.raises(ValueError, match="labels"):
        dk.DistillationObjective(4.0, 1.0, 0.5)(z, None, teacher_logits=v)


def test_objective_logits_kind_is_logit_matching():
    """kind="logits" is centred logit matching (the T -> infinity limit); T is ignored; it needs logits."""
    z, v = _logits(39), _logits(40)
    for t in (1.0, 20.0):
        total, terms = dk.DistillationObjective(t, 1.0, 0.0, kind="logits")(z, None, teacher_logits=v)
        torch.testing.assert_close(total, dk.logit_matching_loss(z, v, center=True), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="logits"):
        dk.DistillationObjective(2.0, 1.0, 0.0, kind="logits")(z, None, teacher_probs=F.softmax(v, 1))


def test_objective_rejects_bad_settings():
    with pytest.raises(ValueError, match="kind"):
        dk.DistillationObjective(kind="mse")
    with pytest.raises(ValueError, match="weights"):
        dk.DistillationObjective(w_soft=-1.0)


# --------------------------------------------------------------------------- logit matching


def test_logit_matching_value():
    """Caruana et al.: per case ½ sum_i (z_i - v_i)^2, averaged over the batch (center=False)."""
    z = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, -2.0]], dtype=torch.float64)
    # case 0: ½(0 + 4 + 9) = 6.5; case 1: ½(1 + 1 + 4) = 3; mean 4.75
    assert float(dk.logit_matching_loss(z, v, center=False)) == pytest.approx(4.75, abs=1e-12)
    # centred: case 0 z->(-1,0,1), v->(2/3,-1/3,-1/3); case 1 z->0, v->(1,1,-2)
    zc, vc = _centre(z), _centre(v)
    expected = float((0.5 * (zc - vc).pow(2).sum(1)).mean())
    assert float(dk.logit_matching_loss(z, v, center=True)) == pytest.approx(expected, abs=1e-12)
    zr, vr = _logits(41), _logits(42)
    torch.testing.assert_close(dk.logit_matching_loss(zr, vr, center=False), 0.5 * (zr - vr).pow(2).sum(1).mean())


def test_logit_matching_centring_invariance():
    """§2.4: softmax ignores a per-case shift, squared error does not; centring makes the loss invariant
    to adding any per-case constant to z or v, while center=False changes."""
    z, v = _logits(43), _logits(44)
    c1 = torch.randn(B, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 10
    c2 = torch.randn(B, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 10
    base = dk.logit_matching_loss(z, v, center=True)
    torch.testing.assert_close(dk.logit_matching_loss(z + c1, v, center=True), base, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dk.logit_matching_loss(z, v + c2, center=True), base, rtol=1e-10, atol=1e-10)
    raw = dk.logit_matching_loss(z, v, center=False)
    assert abs(float(dk.logit_matching_loss(z + c1, v, center=False) - raw)) > 1.0
    # the distillation loss itself is shift invariant (softmax)
    torch.testing.assert_close(dk.distillation_loss(z + c1, v + c2, 3.0), dk.distillation_loss(z, v, 3.0))


# --------------------------------------------------------------------------- bad input


def test_class_count_mismatch_raises():
    """Student and teacher with different numbers of classes: ValueError that mentions classes."""
    z, v = _logits(45, n=10), _logits(46, n=9)
    for fn in (lambda: dk.distillation_loss(z, v, 2.0),
               lambda: dk.distillation_loss(z, teacher_probs=F.softmax(v, 1), temperature=2.0),
               lambda: dk.logit_matching_loss(z, v),
               lambda: dk.DistillationObjective()(z, None, teacher_logits=v)):
        with pytest.raises(ValueError, match="classes"):
            fn()
    with pytest.raises(ValueError):
        dk.distillation_loss(z, _logits(47, b=B + 1), 2.0)
    with pytest.raises(ValueError, match="shape"):
        dk.distillation_loss(z[0], z[0], 2.0)  # 1-D logits


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_raise(bad):
    """NaN/inf logits on either side raise FloatingPointError (never a silent NaN loss)."""
    z, v = _logits(48), _logits(49)
    zb = z.clone()
    zb[2, 3] = bad
    with pytest.raises(FloatingPointError, match="student"):
        dk.distillation_loss(zb, v, 2.0)
    with pytest.raises(FloatingPointError, match="teacher"):
        dk.distillation_loss(z, zb, 2.0)
    with pytest.raises(FloatingPointError):
        dk.logit_matching_loss(zb, v)
    with pytest.raises(FloatingPointError):
        dk.hard_loss(zb, torch.zeros(B, dtype=torch.long))


def test_labels_out_of_range_raise():
    """Hard-label CE: labels outside 0..N-1 (or of the wrong shape) raise ValueError."""
    z = _logits(50)
    for y in (torch.full((B,), N), torch.full((B,), -1)):
        with pytest.raises(ValueError, match="out of range"):
            dk.hard_loss(z, y)
        with pytest.raises(ValueError, match="out of range"):
            dk.DistillationObjective()(z, y, teacher_logits=z)
    with pytest.raises(ValueError, match="labels"):
        dk.hard_loss(z, torch.zeros(B + 1, dtype=torch.long))
    torch.testing.assert_close(dk.hard_loss(z, torch.arange(B)), F.cross_entropy(z, torch.arange(B)))


def test_empty_batch_raises():
    """An empty batch would give a NaN mean: it raises ValueError instead."""
    e = torch.zeros(0, N)
    with pytest.raises(ValueError, match="empty"):
        dk.distillation_loss(e, e, 2.0)
    with pytest.raises(ValueError, match="empty"):
        dk.logit_matching_loss(e, e)
    with pytest.raises(ValueError, match="empty"):
        dk.hard_loss(e, torch.zeros(0, dtype=torch.long))


def test_non_tensor_raises_type_error():
    with pytest.raises(TypeError):
        dk.distillation_loss([[1.0, 2.0]], torch.zeros(1, 2), 2.0)
