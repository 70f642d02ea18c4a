"""The training methods the engine runs, pinned term by term against independent float64 formulas.

Every registered library method is built through ``create_method`` and its returned dict of **weighted**
loss terms is compared with a reference written here in plain torch (``log_softmax``, sums; no
darkknowledge loss function), for several temperatures and weights including 0 and 1; one gradient per
method is checked against its closed form (or, for DKD and the auxiliary loss, autograd of the
reference). The training loss is ``sum(terms.values())``, which is what the tests differentiate.

The teachers here are :class:`ExactTeacher` (float64 throughout): the library's teachers serve float32,
which would limit the comparison to ~1e-7.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import darkknowledge as dk
import darkknowledge.methods as methods
from darkknowledge.config import validate
from darkknowledge.data import load_dataset
from darkknowledge.methods import Method, create_method, get_method, list_methods, register_method
from darkknowledge.teachers import Teacher, freeze

torch.set_num_threads(1)

B, N, S, D_IN = 7, 4, 3, 12
TEMPS = [1.0, 2.5, 20.0]
TOL = {"rtol": 1e-10, "atol": 1e-12}

# every method the library registers must have a pinning test in this file (the name -> test function)
PINNED = {
    "labels": "test_labels_terms",
    "kd": "test_kd_terms",
    "subclass_teacher": "test_subclass_teacher_terms",
    "subclass_kd": "test_subclass_kd_terms",
    "penultimate": "test_penultimate_terms",
    "dkd": "test_dkd_terms",
}


# --------------------------------------------------------------------------- helpers


class ExactTeacher(Teacher):
    """A frozen float64 teacher: ``output`` names the model method served (``None``: ``model(x)``)."""

    def __init__(self, model: nn.Module, output: str | None = None):
        super().__init__()
        self.model, self.output = freeze(model), output

    @torch.no_grad()
    def member_logits(self, x, idx=None):
        return (self.model(x) if self.output is None else getattr(self.model, self.output)(x)).unsqueeze(1)

    def soft_targets(self, x, temperature, idx=None):
        return F.softmax(self.member_logits(x) / temperature, dim=-1).mean(dim=1)

    def logits(self, x, idx=None):
        return self.member_logits(x)[:, 0]


class Logits(nn.Module):
    """A student whose input is its class logits, so ``x.grad`` is the gradient w.r.t. the logits."""

    def forward(self, x):
        return x


class SubLogits(nn.Module):
    """A subclass student whose input is its ``n·s`` subclass logits."""

    num_classes = N

    def subclass_logits(self, x):
        return x


class Features(nn.Module):
    """A student whose input is its penultimate features, with a linear head."""

    def __init__(self, dim: int):
        super().__init__()
        self.feature_dim = dim
        self.head = nn.Linear(dim, N).double()

    def forward_features(self, x):
        return x

    def forward(self, x):
        return self.head(x)


class TeacherFeatures(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.feature_dim = d_out
        self.lin = nn.Linear(d_in, d_out).double()

    def forward_features(self, x):
        return torch.tanh(self.lin(x))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(seed: int, b: int = B, d: int = D_IN, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(b, d, generator=_gen(seed), dtype=torch.float64)


def _y(seed: int, b: int = B, n: int = N) -> torch.Tensor:
    y = torch.randint(0, n, (b,), generator=_gen(seed))
    y[:n] = torch.arange(n)[: min(n, b)]  # every class present
    return y


def _mlp(seed: int, out: int = N, hidden=(9,)) -> nn.Module:
    torch.manual_seed(seed)
    return dk.create_model("mlp", in_features=D_IN, hidden=list(hidden), num_classes=out).double()


def _subnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return dk.create_model("subclass", backbone="mlp", in_features=D_IN, hidden=[9], num_classes=N,
                           subclasses=S).double()


def _onehot(y: torch.Tensor, n: int = N) -> torch.Tensor:
    return F.one_hot(y, n).double()


def _ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -(F.log_softmax(z, dim=1) * _onehot(y, z.shape[1])).sum(1).mean()


def _kl(v: torch.Tensor, z: torch.Tensor, t: float) -> torch.Tensor:
    """mean_b KL(softmax(v/T) ‖ softmax(z/T))."""
    lp, lq = F.log_softmax(v / t, dim=1), F.log_softmax(z / t, dim=1)
    return (lp.exp() * (lp - lq)).sum(1).mean()


def _grouped(z_sub: torch.Tensor) -> torch.Tensor:
    """Class logits: the log of the summed exponentials of each class's block of S subclass logits."""
    return torch.log(torch.exp(z_sub).reshape(z_sub.shape[0], N, S).sum(2))


def _aux(z: torch.Tensor, t: float, eps: float = 1e-9) -> torch.Tensor:
    """§3 through the Pearson correlation matrix: mean_i log Σ_j exp(ρ_ij / T) − 1/T − log m, with the
    library's ``eps`` in the z-scoring (ρ_ij · σ_i σ_j / sqrt((σ_i² + eps)(σ_j² + eps)))."""
    var = z.var(dim=1, correction=0)
    shrink = torch.sqrt(torch.outer(var, var) / torch.outer(var + eps, var + eps))
    rho = torch.corrcoef(z) * shrink
    return torch.logsumexp(rho / t, dim=1).mean() - 1.0 / t - math.log(z.shape[0])


def _check(terms: dict, ref: dict, **tol) -> None:
    assert set(terms) == set(ref)
    for k in ref:
        torch.testing.assert_close(terms[k], torch.as_tensor(ref[k], dtype=torch.float64), **(tol or TOL), msg=k)
    torch.testing.assert_close(sum(terms.values()), sum(torch.as_tensor(v) for v in ref.values()), **(tol or TOL))


def _grad_of_total(method: Method, x: torch.Tensor, y: torch.Tensor, **kw) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    _, terms = method(x, y, **kw)
    sum(terms.values()).backward()
    return x.grad


# --------------------------------------------------------------------------- the registry and the contract


def test_every_library_method_is_pinned():
    library = {n for n in list_methods() if get_method(n).__module__.startswith("darkknowledge.")}
    assert library == set(PINNED), f"methods without a pinning test: {sorted(library - set(PINNED))}"
    for name, test in PINNED.items():
        assert callable(globals().get(test)), f"{name}: {test} missing"
        cls = get_method(name)
        assert cls.name == name and getattr(methods, cls.__name__) is cls  # importable by name
        assert issubclass(cls, Method)


def test_create_method_errors_name_the_method():
    with pytest.raises(ValueError, match="'kd'.*teacher"):
        create_method("kd", Logits())
    with pytest.raises(ValueError, match="'kd'.*bad arguments"):
        create_method("kd", Logits(), ExactTeacher(_mlp(1)), tempreature=2.0)
    with pytest.raises(ValueError, match="'subclass_kd'.*alpha"):
        create_method("subclass_kd", SubLogits(), ExactTeacher(_subnet(1), "subclass_logits"), alpha=1.5)
    with pytest.raises(ValueError, match="'dkd'.*temperature"):
        create_method("dkd", Logits(), ExactTeacher(_mlp(1)), temperature=0.0)
    with pytest.raises(ValueError, match="'penultimate'.*weight"):
        create_method("penultimate", Features(5), ExactTeacher(TeacherFeatures(5, 3), "forward_features"),
                      weight=float("nan"))
    with pytest.raises(ValueError, match="'subclass_teacher'.*beta"):
        create_method("subclass_teacher", SubLogits(), beta=-1.0)
    with pytest.raises(KeyError, match="unknown method"):
        create_method("no-such-method", Logits())


def test_plain_modules_are_wrapped_to_serve_what_the_method_needs():
    kd = create_method("kd", _mlp(1), _mlp(2))
    assert isinstance(kd.teacher, dk.ModelTeacher) and kd.teacher.output is None
    ens = dk.Distiller(_mlp(1), [_mlp(2), _mlp(3)])
    assert isinstance(ens, methods.KD) and isinstance(ens.teacher, dk.Ensemble)
    assert isinstance(dk.Distiller(_mlp(1)), methods.LabelsOnly)
    sub = create_method("subclass_kd", _subnet(1), _subnet(2))
    assert sub.teacher.output == "subclass_logits"
    x = _x(0)
    torch.testing.assert_close(sub.teacher.member_logits(x)[:, 0], _subnet(2).subclass_logits(x))
    pen = create_method("penultimate", _mlp(1), _mlp(2, hidden=(6,)))
    assert pen.teacher.output == "forward_features" and pen.map.teacher_dim == 6
    assert set(pen.extra_state()) == {"map.proj.weight", "map.proj.bias"}
    assert all(not p.requires_grad for p in pen.teacher.parameters())


def test_the_engine_builds_each_method_from_its_method_args(tmp_path):
    """kd's T, weights and kind reach its objective from method_args — and from an old config's distill section —
    not kd's defaults; another method gets its own method_args; with distill.cache on its teacher serves from the
    run's store, and penultimate distillation from stored features takes their width."""
    from darkknowledge.engine.train import _build_method

    teacher, x = dk.as_teacher(_mlp(2, hidden=(6,))), _x(0)
    kd = {"temperature": 7.0, "w_hard": 0.0, "kind": "kl"}
    for old, new in ((kd, {}), ({}, kd)):
        cfg = validate({"distill": {"teachers": ["t"], "cache": False, **old}, "method_args": new})
        obj = _build_method(cfg, _mlp(1), teacher, x, tmp_path).objective
        assert (obj.temperature, obj.w_soft, obj.w_hard, obj.kind) == (7.0, 1.0, 0.0, "kl")
    cfg = validate({"distill": {"teachers": ["t"]}, "method": "penultimate", "method_args": {"weight": 0.3}})
    pen = _build_method(cfg, _mlp(1), teacher, x, tmp_path / "pen")
    assert pen.weight == 0.3 and pen.teacher.precomputed and not pen.teacher.live and pen.map.teacher_dim == 6
    assert (tmp_path / "pen" / "teacher_store" / "manifest.json").is_file()


def test_register_method_rejects_a_second_class_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_method("kd")(type("OtherKD", (Method,), {}))
    with pytest.raises(TypeError):
        register_method("not_a_method")(object)


# --------------------------------------------------------------------------- labels


def test_labels_terms():
    student, x, y = _mlp(1), _x(1), _y(1)
    z, terms = create_method("labels", student)(x, y)
    zr = student(x)
    torch.testing.assert_close(z, zr, **TOL)
    _check(terms, {"hard": _ce(zr, y)})


def test_labels_gradient():
    z, y = _x(2, d=N, scale=3.0), _y(2)
    g = _grad_of_total(create_method("labels", Logits()), z, y)
    torch.testing.assert_close(g, (F.softmax(z, 1) - _onehot(y)) / B, **TOL)


# --------------------------------------------------------------------------- kd (Hinton et al. 2015, §2)


KD_WEIGHTS = [(1.0, 0.0), (0.0, 1.0), (0.7, 0.3), (1.0, 0.1), (1.0, 1.0)]


@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("w_soft,w_hard", KD_WEIGHTS)
@pytest.mark.parametrize("kind", ["ce", "kl", "logits"])
def test_kd_terms(t, w_soft, w_hard, kind):
    student, teacher, x, y = _mlp(1), _mlp(2), _x(3), _y(3)
    m = create_method("kd", student, ExactTeacher(teacher), temperature=t, w_soft=w_soft, w_hard=w_hard, kind=kind)
    _, terms = m(x, y)
    z, v = student(x), teacher(x)
    if kind == "logits":
        zc, vc = z - z.mean(1, keepdim=True), v - v.mean(1, keepdim=True)
        soft = 0.5 * ((zc - vc) ** 2).sum(1).mean()
    else:  # "ce" is logged as T²·KL: the gradient of T²·CE, and 0 when the student matches the teacher
        soft = t * t * _kl(v, z, t)
    _check(terms, {"soft": w_soft * soft, "hard": w_hard * _ce(z, y)})


def test_kd_soft_term_goes_to_zero_when_the_student_matches():
    """Part 8 of issue 9: the logged soft term is 0 for a student equal to its teacher (not ≈ T²·H(p))."""
    teacher, x, y = _mlp(2), _x(4), _y(4)
    for kind in ("ce", "kl", "logits"):
        _, terms = create_method("kd", _mlp(2), ExactTeacher(teacher), temperature=20.0, kind=kind)(x, y)
        assert abs(terms["soft"].item()) < 1e-12, kind


def test_kd_without_labels_has_no_hard_term():
    _, terms = create_method("kd", _mlp(1), ExactTeacher(_mlp(2)), w_hard=0.0)(_x(5), None)
    assert set(terms) == {"soft"}
    with pytest.raises(ValueError, match="labels"):
        create_method("kd", _mlp(1), ExactTeacher(_mlp(2)), w_hard=0.5)(_x(5), None)


@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("kind", ["ce", "kl", "logits"])
def test_kd_gradient(t, kind):
    """∂/∂z = w_soft·T·(q − p)/B + w_hard·(softmax(z) − onehot)/B; logits: w_soft·(z_c − v_c)/B + ..."""
    w_soft, w_hard = 0.7, 0.3
    teacher = nn.Linear(N, N).double()
    z, y = _x(6, d=N, scale=3.0), _y(6)
    m = create_method("kd", Logits(), ExactTeacher(teacher), temperature=t, w_soft=w_soft, w_hard=w_hard, kind=kind)
    g = _grad_of_total(m, z, y)
    v = teacher(z).detach()
    if kind == "logits":
        soft = (z - z.mean(1, keepdim=True)) - (v - v.mean(1, keepdim=True))
    else:
        soft = t * (F.softmax(z / t, 1) - F.softmax(v / t, 1))
    torch.testing.assert_close(g, (w_soft * soft + w_hard * (F.softmax(z, 1) - _onehot(y))) / B, **TOL)


# --------------------------------------------------------------------------- subclass teacher (Müller et al. §4)


@pytest.mark.parametrize("beta", [0.0, 1.0, 0.7])
@pytest.mark.parametrize("aux_t", [1.0, 0.5, 2.5])
def test_subclass_teacher_terms(beta, aux_t):
    student, x, y = _subnet(1), _x(7), _y(7)
    z, terms = create_method("subclass_teacher", student, beta=beta, aux_temperature=aux_t)(x, y)
    z_sub = student.subclass_logits(x)
    torch.testing.assert_close(z, _grouped(z_sub), **TOL)
    ref = {"ce": _ce(_grouped(z_sub), y)}
    if beta > 0:
        ref["aux"] = beta * _aux(z_sub, aux_t)
    _check(terms, ref)


def test_subclass_teacher_skips_aux_for_a_batch_of_one():
    _, terms = create_method("subclass_teacher", _subnet(1), beta=1.0)(_x(8, b=1), torch.tensor([2]))
    assert set(terms) == {"ce"}


@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_subclass_teacher_gradient(beta):
    """β = 0: the grouped CE's closed form ∂/∂z_j = (s_j − [j ∈ block y]·s_j / P_y)/B; β > 0 adds
    β·∂L_aux, taken by autograd of the correlation-matrix reference."""
    z, y = _x(9, d=N * S, scale=2.0), _y(9)
    g = _grad_of_total(create_method("subclass_teacher", SubLogits(), beta=beta, aux_temperature=0.5), z, y)
    s = F.softmax(z, 1)
    in_block = _onehot(y).repeat_interleave(S, dim=1)
    p_y = (s * in_block).sum(1, keepdim=True)
    expected = (s - in_block * s / p_y) / B
    if beta > 0:
        zz = z.clone().requires_grad_(True)
        (beta * _aux(zz, 0.5)).backward()
        expected = expected + zz.grad
    torch.testing.assert_close(g, expected, **TOL)


# --------------------------------------------------------------------------- subclass student (Müller et al. §5)


@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 0.3])
def test_subclass_kd_terms(t, alpha):
    student, teacher, x, y = _subnet(1), _subnet(2), _x(10), _y(10)
    m = create_method("subclass_kd", student, ExactTeacher(teacher, "subclass_logits"), temperature=t, alpha=alpha)
    z, terms = m(x, y)
    zs, vs = student.subclass_logits(x), teacher.subclass_logits(x)
    torch.testing.assert_close(z, _grouped(zs), **TOL)
    soft_ce = -(F.softmax(vs / t, 1) * F.log_softmax(zs / t, 1)).sum(1).mean()
    _check(terms, {"soft": alpha * t * t * soft_ce, "hard": (1 - alpha) * _ce(_grouped(zs), y)})


@pytest.mark.parametrize("t", TEMPS)
def test_subclass_kd_gradient(t):
    """∂/∂z_sub = α·T·(q − p)/B + (1 − α)·(s − [j ∈ block y]·s / P_y)/B."""
    alpha = 0.4
    teacher = nn.Linear(N * S, N * S).double()
    z, y = _x(11, d=N * S, scale=2.0), _y(11)
    m = create_method("subclass_kd", SubLogits(), ExactTeacher(teacher), temperature=t, alpha=alpha)
    g = _grad_of_total(m, z, y)
    v = teacher(z).detach()
    s = F.softmax(z, 1)
    in_block = _onehot(y).repeat_interleave(S, dim=1)
    hard = s - in_block * s / (s * in_block).sum(1, keepdim=True)
    expected = (alpha * t * (F.softmax(z / t, 1) - F.softmax(v / t, 1)) + (1 - alpha) * hard) / B
    torch.testing.assert_close(g, expected, **TOL)


# --------------------------------------------------------------------------- penultimate (Müller et al. §6.3)


@pytest.mark.parametrize("weight", [0.0, 1.0, 0.3, 2.5])
def test_penultimate_terms(weight):
    student, teacher, x, y = _mlp(1), _mlp(2, hidden=(6,)), _x(12), _y(12)
    m = create_method("penultimate", student, ExactTeacher(teacher, "forward_features"), weight=weight).double()
    z, terms = m(x, y)
    h, h_t = student.forward_features(x), teacher.forward_features(x)
    w, c = m.map.proj.weight.double(), m.map.proj.bias.double()
    torch.testing.assert_close(z, student(x), **TOL)
    feat = 0.5 * ((h @ w.T + c - h_t) ** 2).sum(1).mean()
    _check(terms, {"hard": _ce(student(x), y), "feat": weight * feat})


def test_penultimate_gradient():
    """∂/∂W = w·rᵀh/B, ∂/∂c = w·Σ_b r/B with r = W h + c − h_t; ∂/∂h adds w·r W/B to the head's CE term."""
    weight, d_s, d_t = 0.6, 5, 3
    student, teacher = Features(d_s), TeacherFeatures(d_s, d_t)
    m = create_method("penultimate", student, ExactTeacher(teacher, "forward_features"), weight=weight).double()
    h, y = _x(13, d=d_s), _y(13)
    g = _grad_of_total(m, h, y)
    w, c, head = m.map.proj.weight, m.map.proj.bias, student.head.weight
    r = (h @ w.T + c - teacher.forward_features(h)).detach()
    ce_grad = (F.softmax(student(h), 1) - _onehot(y)).detach() @ head.detach() / B
    torch.testing.assert_close(g, weight * r @ w.detach() / B + ce_grad, **TOL)
    torch.testing.assert_close(w.grad, weight * r.T @ h / B, **TOL)
    torch.testing.assert_close(c.grad, weight * r.sum(0) / B, **TOL)


# --------------------------------------------------------------------------- DKD (Zhao et al. 2022)


def _dkd_reference(z, v, y, alpha, beta, t, w_hard, warm):
    """mdistiller's form: binary (target, rest) distributions; non-target via a −1000 mask (exact in float64)."""
    gt = _onehot(y, z.shape[1])
    ps, pt = F.softmax(z / t, 1), F.softmax(v / t, 1)
    bs = torch.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = torch.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * t * t
    pt2 = F.softmax(v / t - 1000.0 * gt, 1)
    ls2 = F.log_softmax(z / t - 1000.0 * gt, 1)
    nckd = (torch.xlogy(pt2, pt2) - pt2 * ls2).sum(1).mean() * t * t
    return {"hard": w_hard * _ce(z, y), "tckd": warm * alpha * tckd, "nckd": warm * beta * nckd}


@pytest.mark.parametrize("t", TEMPS)
@pytest.mark.parametrize("alpha,beta,w_hard", [(1.0, 8.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.5), (0.5, 2.0, 1.0)])
def test_dkd_terms(t, alpha, beta, w_hard):
    student, teacher, x, y = _mlp(1), _mlp(2), _x(15), _y(15)
    m = create_method("dkd", student, ExactTeacher(teacher), alpha=alpha, beta=beta, temperature=t, w_hard=w_hard,
                      warmup_epochs=0)
    _, terms = m(x, y, epoch=0)
    _check(terms, _dkd_reference(student(x), teacher(x), y, alpha, beta, t, w_hard, 1.0), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("t", TEMPS)
def test_dkd_on_two_classes_is_kd(t):
    """With two classes the binary distribution is the full one and there is a single non-target class:
    TCKD = KL(p‖q) (the KD term) and NCKD = 0."""
    teacher = nn.Linear(2, 2).double()
    z, y = _x(16, d=2, scale=2.0), _y(16, n=2)
    _, terms = create_method("dkd", Logits(), ExactTeacher(teacher), alpha=1.0, beta=8.0, temperature=t,
                             warmup_epochs=0)(z, y)
    assert float(terms["nckd"]) == 0.0
    torch.testing.assert_close(terms["tckd"], t * t * _kl(teacher(z).detach(), z, t), **TOL)


@pytest.mark.parametrize("t", TEMPS)
def test_dkd_gradient(t):
    teacher = nn.Linear(N, N).double()
    z, y = _x(18, d=N, scale=3.0), _y(18)
    m = create_method("dkd", Logits(), ExactTeacher(teacher), alpha=0.5, beta=2.0, temperature=t, warmup_epochs=0)
    g = _grad_of_total(m, z, y)
    zz = z.clone().requires_grad_(True)
    sum(_dkd_reference(zz, teacher(z).detach(), y, 0.5, 2.0, t, 1.0, 1.0).values()).backward()
    torch.testing.assert_close(g, zz.grad, rtol=1e-9, atol=1e-12)


def test_dkd_warmup_follows_the_epoch_keyword():
    """warmup = min((epoch + 1) / warmup_epochs, 1) for the engine's 0-based epoch (mdistiller counts from 1):
    the distillation terms scale linearly over the first ``warmup_epochs`` epochs, the CE term never."""
    student, teacher, x, y = _mlp(1), _mlp(2), _x(19), _y(19)
    m = create_method("dkd", student, ExactTeacher(teacher), warmup_epochs=4)
    full = _dkd_reference(student(x), teacher(x), y, 1.0, 8.0, 4.0, 1.0, 1.0)
    for epoch, factor in [(0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0), (4, 1.0), (50, 1.0)]:
        _, terms = m(x, y, epoch=epoch, step=123)
        _check(terms, {"hard": full["hard"], "tckd": factor * full["tckd"], "nckd": factor * full["nckd"]},
               rtol=1e-9, atol=1e-11)
    _, default = m(x, y)  # epoch defaults to 0
    torch.testing.assert_close(default["tckd"], 0.25 * full["tckd"], rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------- a method from outside the library


@register_method("test_halves")
class Halves(Method):
    """A toy method registered from this test file: the label CE split into two equal halves. With SGD the
    engine must then train exactly as the ``labels`` method does — only if it optimises the sum of the dict."""

    calls: list[tuple[int, int, int]] = []

    def __init__(self, student, teacher=None, share: float = 0.5):
        super().__init__(student, teacher)
        self.share = share

    def forward(self, x, y, idx=None, *, epoch=0, step=0):
        Halves.calls.append((epoch, step, x.shape[0]))
        logits = self.student(x)
        ce = dk.hard_loss(logits, y)
        return logits, {"a": self.share * ce, "b": (1 - self.share) * ce}


def test_toy_method_trains_through_the_engine(tmp_path):
    from safetensors.torch import load_file

    splits = load_dataset("digits", val_size=300)

    def cfg(name, **kw):
        return validate({"name": name, "seed": 0, "epochs": 3, "batch_size": 64, "threads": 1,
                         "data": {"dataset": "digits", "val_size": 300},
                         "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [32], "dropout": 0.1}},
                         "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "out_dir": str(tmp_path / name), **kw})

    Halves.calls.clear()
    toy = dk.train(cfg("toy", method="test_halves", method_args={"share": 0.5}), splits=splits, progress=False)
    ref = dk.train(cfg("labels", method="labels"), splits=splits, progress=False)
    steps = math.ceil(len(splits.train) / 64)
    assert [c[:2] for c in Halves.calls] == [(e, e * steps + s) for e in range(3) for s in range(steps)]
    for e_toy, e_ref in zip(toy["epochs"], ref["epochs"]):
        assert set(e_toy["train_loss"]) == {"a", "b"}
        assert e_toy["train_loss"]["a"] == pytest.approx(e_ref["train_loss"]["hard"] / 2, rel=1e-6)
    a, b = load_file(tmp_path / "toy" / "last.safetensors"), load_file(tmp_path / "labels" / "last.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k  # 0.5·g + 0.5·g == g exactly: the engine steps on the sum
    assert toy["final"]["test"]["accuracy"] > 0.7  # 10 classes: chance is 0.1
