"""Inference with a generalist and specialists: Hinton, Vinyals & Dean (2015) §5.2, Eq. 5.

For one example let ``p^g`` be the generalist's distribution over all ``C`` classes and, for each
specialist ``m`` with special set ``S^m``, ``p^m`` its distribution over ``S^m`` plus one dustbin. The
paper (n = 1) takes the generalist's ``n`` most probable classes ``k``, the *active set*
``A_k = {m : S^m ∩ k ≠ ∅}``, and the full distribution

    q = softmax(z) minimising   F(z) = KL(p^g ‖ q) + Σ_{m ∈ A_k} KL(p^m ‖ q^(m))          (Eq. 5)

where the collapsed ``q^(m)`` has ``q^(m)_c = q_c`` for ``c ∈ S^m`` and the dustbin entry
``q^(m)_dust = Σ_{c ∉ S^m} q_c`` (a sum of *probabilities*, not of logits). With ``a = p^g +
Σ_{m∈A} p^m`` scattered onto the classes (the specialists' special entries), ``b_m = p^m_dust`` and
``D_m = Σ_{c ∉ S^m} q_c``::

    F = const − Σ_c a_c log q_c − Σ_{m∈A} b_m log D_m
    ∂F/∂z_c = W q_c − a_c − q_c Σ_{m∈A, c ∉ S^m} b_m / D_m,       W = Σ_c a_c + Σ_m b_m  (= 1 + |A|)

(the spec's §3.3 gradient ``q_c − p^g_c + Σ_m q_c (1 − p^m_{g(c)} / q^(m)_{g(c)})`` summed out).

**Solver.** ``F`` is convex in ``q`` on the simplex (negative logs of linear functions of ``q``), and the
stationarity condition ``∂F/∂z = 0`` is the fixed point of the EM map for a multinomial observed partly
only as "one of the classes outside ``S^m``" (grouped data)::

    q ← (a + q ⊙ Σ_{m∈A} b_m 1[c ∉ S^m] / D_m) / W,          and  ∂F/∂z = W (q − EM(q))

EM decreases ``F`` monotonically; we accelerate it with SQUAREM (Varadhan & Roland 2008, scheme S3,
with a fallback to the plain EM step whenever the extrapolation leaves the simplex or does not decrease
``F``), start from ``z0 = log p^g`` (``q0 = p^g``, floored at 1e-12 relative so every class can gain mass)
and stop when every example's ``max_c |∂F/∂z_c| ≤ tol``. The whole batch is solved at once in float64:
the active specialists of each example are gathered into a padded ``[B, K, C]`` mask (``K`` = most
active specialists of any example), so one step costs two batched mat-vecs of ``B·K·C``.
:func:`combine_reference` solves the same problem per example with :func:`scipy.optimize.minimize` in
numpy, sharing no code with the batched solver; the tests compare them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["membership_matrix", "active_specialists", "specialist_probs", "combine", "combine_objective",
           "combine_reference"]

Memberships = Tensor | Sequence[Sequence[int]]


# --------------------------------------------------------------------------------------------- helpers


def membership_matrix(classes: Memberships, num_classes: int) -> Tensor:
    """``[M, C]`` boolean matrix, row ``m`` true on the special classes ``S^m`` of specialist ``m``."""
    if isinstance(classes, Tensor):
        mb = classes.to(torch.bool)
        if mb.ndim != 2 or mb.shape[1] != num_classes:
            raise ValueError(f"memberships must be [M, {num_classes}], got {tuple(mb.shape)}")
        return mb
    mb = torch.zeros(len(classes), num_classes, dtype=torch.bool)
    for m, cl in enumerate(classes):
        idx = torch.as_tensor(list(cl), dtype=torch.long)
        if idx.numel() == 0 or len(set(idx.tolist())) != idx.numel():
            raise ValueError(f"specialist {m}: its classes must be a non-empty list without repeats")
        if int(idx.min()) < 0 or int(idx.max()) >= num_classes:
            raise ValueError(f"specialist {m}: class ids must lie in 0..{num_classes - 1}")
        mb[m, idx] = True
    return mb


def _class_lists(memberships: Memberships, num_classes: int) -> list[Tensor]:
    """Each specialist's class ids in the order of its outputs (ascending for a membership matrix)."""
    if isinstance(memberships, Tensor):
        return [row.nonzero().flatten() for row in membership_matrix(memberships, num_classes)]
    membership_matrix(memberships, num_classes)  # validates
    return [torch.as_tensor(list(cl), dtype=torch.long) for cl in memberships]


def active_specialists(p_g: Tensor, memberships: Memberships, top_n: int = 1) -> Tensor:
    """``[B, M]`` boolean: specialist ``m`` is active for example ``b`` when ``S^m`` holds one of the
    generalist's ``top_n`` most probable classes (the paper's ``A_k``, n = 1)."""
    mb = membership_matrix(memberships, p_g.shape[1]).to(p_g.device)
    if not 1 <= top_n <= p_g.shape[1]:
        raise ValueError(f"top_n must be in 1..{p_g.shape[1]}, got {top_n}")
    top = p_g.topk(top_n, dim=1).indices  # [B, n]
    return mb[:, top].any(dim=2).T.contiguous()


def specialist_probs(z_g: Tensor, z_specs: Sequence[Tensor], shifts: Sequence[float] | None = None
                     ) -> tuple[Tensor, list[Tensor]]:
    """The inputs of :func:`combine` from logits: ``p^g = softmax(z_g)`` and ``p^m = softmax(z_m + shift_m e_dust)``
    in float64, ``shifts[m]`` added to specialist ``m``'s dustbin (last) logit — the dustbin bias correction of
    :func:`~.data.dustbin_shift` applied to outputs (default: none)."""
    from .data import shift_dustbin_logits

    if shifts is not None and len(shifts) != len(z_specs):
        raise ValueError(f"{len(shifts)} dustbin shifts for {len(z_specs)} specialists")
    p_g = torch.softmax(z_g.double(), 1)
    zs = [z.double() for z in z_specs]
    if shifts is not None:
        zs = [shift_dustbin_logits(z, sh) for z, sh in zip(zs, shifts)]
    return p_g, [torch.softmax(z, 1) for z in zs]


def _check(p_g: Tensor, p_specs: Sequence[Tensor], lists: list[Tensor]) -> None:
    if p_g.ndim != 2:
        raise ValueError(f"p_g must be [B, C], got {tuple(p_g.shape)}")
    if len(p_specs) != len(lists):
        raise ValueError(f"{len(p_specs)} specialist outputs but {len(lists)} memberships")
    for m, (p, cl) in enumerate(zip(p_specs, lists)):
        if tuple(p.shape) != (p_g.shape[0], cl.numel() + 1):
            raise ValueError(f"specialist {m}: expected probabilities [{p_g.shape[0]}, {cl.numel() + 1}] "
                             f"(its {cl.numel()} classes + dustbin), got {tuple(p.shape)}")


class _Problem:
    """Eq. 5 for a batch in compact form: ``a`` [B, C], and per example its ``K`` active specialists'
    dustbin masks ``R`` [B, K, C] (1 on classes outside ``S^m``) and dustbin weights ``b`` [B, K] (0 for
    padding); ``const`` [B] is ``Σ p log p`` of every active distribution."""

    def __init__(self, p_g: Tensor, p_specs: Sequence[Tensor], lists: list[Tensor], active: Tensor,
                 dtype: torch.dtype):
        dev = p_g.device
        B, C = p_g.shape
        self.p_g = p_g.to(dtype)
        act = active.to(device=dev, dtype=torch.bool)
        a = self.p_g.clone()
        const = torch.xlogy(self.p_g, self.p_g).sum(1)
        dust = torch.zeros(B, len(lists), dtype=dtype, device=dev)
        for m, (p, cl) in enumerate(zip(p_specs, lists)):
            p = p.to(device=dev, dtype=dtype)
            w = act[:, m].to(dtype)
            a.index_add_(1, cl.to(dev), p[:, :-1] * w[:, None])
            const = const + w * torch.xlogy(p, p).sum(1)
            dust[:, m] = p[:, -1]
        k = int(act.sum(1).max()) if act.numel() else 0
        order = torch.argsort(act.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]  # active first
        valid = act.gather(1, order)
        outside = _outside(lists, C, dev)
        self.R = torch.where(valid[:, :, None], outside[order], True).to(dtype)  # padding: whole simplex
        self.b = dust.gather(1, order) * valid.to(dtype)
        self.a, self.const, self.k = a, const, k
        self.W = a.sum(1, keepdim=True) + self.b.sum(1, keepdim=True)
        self.tiny = torch.finfo(dtype).tiny

    def take(self, rows: Tensor) -> _Problem:
        """The problem restricted to some examples (a boolean or index selector)."""
        sub = object.__new__(_Problem)
        for name in ("p_g", "a", "const", "R", "b", "W"):
            setattr(sub, name, getattr(self, name)[rows])
        sub.k, sub.tiny = self.k, self.tiny
        return sub

    def dustbins(self, q: Tensor) -> Tensor:
        """``D`` [B, K]: the mass ``q`` puts outside each active specialist's classes."""
        return torch.bmm(self.R, q.unsqueeze(2)).squeeze(2)

    def em(self, q: Tensor) -> Tensor:
        r = self.b / self.dustbins(q).clamp_min(self.tiny)
        return (self.a + q * torch.bmm(r.unsqueeze(1), self.R).squeeze(1)) / self.W

    def value(self, q: Tensor) -> Tensor:
        """``F`` [B] (Eq. 5) at ``q``; ``0 · log 0 = 0``."""
        d = self.dustbins(q)
        return (self.const - torch.xlogy(self.a, q).sum(1)
                - torch.where(self.b > 0, self.b * torch.log(d.clamp_min(self.tiny)), 0.0).sum(1))


def _outside(lists: list[Tensor], num_classes: int, device) -> Tensor:
    """``[M, C]`` boolean mask of the classes *outside* each specialist's set."""
    out = torch.ones(len(lists), num_classes, dtype=torch.bool, device=device)
    for m, cl in enumerate(lists):
        out[m, cl.to(device)] = False
    return out


# --------------------------------------------------------------------------------------------- Eq. 5


def combine_objective(z: Tensor, p_g: Tensor, p_specs: Sequence[Tensor], memberships: Memberships,
                      active: Tensor) -> Tensor:
    """Eq. 5 per example, ``F(z) = KL(p^g ‖ softmax z) + Σ_{m active} KL(p^m ‖ q^(m))`` → ``[B]``.

    Differentiable in ``z`` [B, C] (computed with log-softmax and masked log-sum-exp, so the dustbin
    ``log Σ_{c∉S^m} q_c`` stays in the autograd graph); ``active`` is the ``[B, M]`` mask of
    :func:`active_specialists`. ``p_specs[m]`` is ``[B, |S^m| + 1]``, its columns in the order of the
    class list ``memberships[m]`` (ascending ids for a membership matrix), the dustbin last.
    """
    lists = _class_lists(memberships, p_g.shape[1])
    _check(p_g, p_specs, lists)
    logq = torch.log_softmax(z, dim=1)
    val = (torch.xlogy(p_g, p_g) - p_g * logq).sum(1)
    lse = torch.logsumexp(z, dim=1)
    act = active.to(dtype=z.dtype, device=z.device)
    for m, (p, cl) in enumerate(zip(p_specs, lists)):
        p = p.to(z.dtype)
        out = torch.ones(z.shape[1], dtype=torch.bool, device=z.device)
        out[cl.to(z.device)] = False
        special = (torch.xlogy(p[:, :-1], p[:, :-1]) - p[:, :-1] * logq[:, cl.to(z.device)]).sum(1)
        if out.any():
            log_d = torch.logsumexp(z[:, out], dim=1) - lse
            dust = torch.xlogy(p[:, -1], p[:, -1]) - p[:, -1] * log_d
        else:  # S^m is every class: the dustbin is empty, its term is 0 · log 0 when p^m_dust = 0
            dust = torch.where(p[:, -1] > 0, torch.inf, 0.0).to(z.dtype)
        val = val + act[:, m] * (special + dust)
    return val


@torch.no_grad()
def combine(p_g: Tensor, p_specs: Sequence[Tensor], memberships: Memberships, top_n: int = 1,
            active: Tensor | None = None, tol: float = 1e-11, max_iter: int = 2000,
            return_info: bool = False, dtype: torch.dtype | None = None) -> Tensor | tuple[Tensor, dict[str, Any]]:
    """The distribution ``q`` [B, C] of Eq. 5 for every example of a batch (Hinton et al. 2015, §5.2).

    ``p_g`` [B, C]: generalist probabilities; ``p_specs``: one ``[B, |S^m| + 1]`` tensor per specialist
    (its special classes in the order of ``memberships[m]``, then the dustbin), on the same device;
    ``memberships``: the class lists ``S^m`` or an ``[M, C]`` boolean matrix; ``active``: the ``[B, M]``
    active mask (default: :func:`active_specialists` with ``top_n``). Examples without an active
    specialist get ``q = p^g`` exactly. Solved by SQUAREM-accelerated EM (module docstring) in ``dtype``
    (default float64; float32 on MPS, which has no float64, with ``tol`` raised to at least 1e-6) until
    ``max_c |∂F/∂z_c| ≤ tol`` for every example (a warning if ``max_iter`` EM steps do not get there); ``q``
    is returned in ``p_g``'s dtype. With ``return_info``, also ``{"iterations": EM-map evaluations of the
    slowest example, "mean_iterations": per example, "cycles": SQUAREM cycles, "max_grad", "converged",
    "max_active": most active specialists of an example}``.
    """
    lists = _class_lists(memberships, p_g.shape[1])
    _check(p_g, p_specs, lists)
    if active is None:
        active = active_specialists(p_g, [cl.tolist() for cl in lists], top_n)
    active = active.to(device=p_g.device, dtype=torch.bool)
    if tuple(active.shape) != (p_g.shape[0], len(lists)):
        raise ValueError(f"active must be [{p_g.shape[0]}, {len(lists)}], got {tuple(active.shape)}")
    q_out = p_g.clone()
    rows = active.any(1).nonzero().flatten()
    info: dict[str, Any] = {"iterations": 0, "mean_iterations": 0.0, "cycles": 0, "max_grad": 0.0, "converged": True,
                            "max_active": int(active.sum(1).max()) if active.numel() else 0}
    if rows.numel():
        if dtype is None:
            dtype = torch.float32 if p_g.device.type == "mps" else torch.float64
        if dtype != torch.float64:
            tol = max(tol, 1e-6)
        prob = _Problem(p_g[rows], [p[rows] for p in p_specs], lists, active[rows], dtype)
        q, info2 = _squarem(prob, tol, max_iter)
        q_out[rows] = q.to(p_g.dtype)
        info.update(info2)
        if not info["converged"]:
            warnings.warn(f"Eq. 5 solver stopped after {max_iter} EM steps with max |dF/dz| = {info['max_grad']:.2e}"
                          f" > tol = {tol:g}", RuntimeWarning, stacklevel=2)
    return (q_out, info) if return_info else q_out


def _squarem(prob: _Problem, tol: float, max_iter: int) -> tuple[Tensor, dict[str, Any]]:
    """SQUAREM (S3) on the EM map of :class:`_Problem`, per example, with the plain EM step as fallback;
    examples leave the working set as they converge."""
    n, n_c = prob.a.shape
    q = (prob.p_g + 1e-12 / n_c) / (1 + 1e-12)
    q = q / q.sum(1, keepdim=True)
    out, grad_out = torch.empty_like(q), torch.empty(n, dtype=q.dtype, device=q.device)
    evals_out = torch.zeros(n, dtype=torch.long, device=q.device)
    work = torch.arange(n, device=q.device)  # rows of the batch still being solved
    evals = cycles = 0
    while True:
        q1 = prob.em(q)
        evals += 1
        grad = prob.W.squeeze(1) * (q1 - q).abs().amax(1)  # max_c |∂F/∂z_c| at q
        done = grad <= tol
        if evals >= max_iter:
            done = torch.ones_like(done)
        if bool(done.any()):
            rows = work[done]
            out[rows], grad_out[rows], evals_out[rows] = q[done], grad[done], evals
            keep = ~done
            if not bool(keep.any()):
                break
            work, q, q1, prob = work[keep], q[keep], q1[keep], prob.take(keep)
        q2 = prob.em(q1)
        r, v = q1 - q, q2 - 2 * q1 + q
        nv = v.norm(dim=1, keepdim=True)
        alpha = torch.where(nv > 0, -r.norm(dim=1, keepdim=True) / nv.clamp_min(prob.tiny), -1.0).clamp(max=-1.0)
        qx = q - 2 * alpha * r + alpha * alpha * v
        ok = (qx > 0).all(1, keepdim=True) & torch.isfinite(qx).all(1, keepdim=True)
        qx = torch.where(ok, qx, q2)
        qx = prob.em(qx / qx.sum(1, keepdim=True))
        evals += 2
        q = torch.where((prob.value(qx) <= prob.value(q2))[:, None], qx, q2)  # never worse than plain EM
        cycles += 1
    return out, {"iterations": evals, "mean_iterations": float(evals_out.double().mean()), "cycles": cycles,
                 "max_grad": float(grad_out.max()), "converged": bool((grad_out <= tol).all())}


# --------------------------------------------------------------------------------------------- reference


def combine_reference(p_g, p_specs, memberships, top_n: int = 1, active=None, gtol: float = 1e-10,
                      return_info: bool = False):
    """Eq. 5 solved one example at a time with :func:`scipy.optimize.minimize` in numpy: an independent
    check of :func:`combine` (it shares no code with it).

    Minimises ``F(z) = KL(p^g ‖ q) + Σ_{m∈A} KL(p^m ‖ q^(m))`` over the logits ``z`` by exact-Hessian
    trust-region Newton (``method="trust-exact"``), from ``z0 = log p^g``, with the spec §3.3 gradient
    ``∂F/∂z_c = q_c Σp^g − p^g_c + Σ_m q_c (Σp^m − p^m_{g(c)} / q^(m)_{g(c)})`` (``g(c)``: ``c``'s own slot
    in ``S^m``, else the dustbin) and its Jacobian, per model,
    ``H_cd = δ_cd q_c (s − r_{g(c)}) − s q_c q_d + [g(c) = g(d)] q_c q_d r_{g(c)} / q^(m)_{g(c)}`` with
    ``r = p / q^(m)``, ``s = Σ p`` (for the generalist every class is its own slot). Quasi-Newton
    (L-BFGS) on ``z`` needs thousands of steps here: the softmax makes rare classes' directions flat.

    Same arguments as :func:`combine` (arrays or tensors); returns ``q`` as a float64 array ``[B, C]``
    (and, with ``return_info``, the per-example iteration counts and final objective values).
    """
    from scipy.optimize import minimize
    from scipy.special import rel_entr

    pg = np.asarray(torch.as_tensor(p_g).detach().cpu(), dtype=np.float64)
    n, c = pg.shape
    ps = [np.asarray(torch.as_tensor(p).detach().cpu(), dtype=np.float64) for p in p_specs]
    if isinstance(memberships, Tensor) or isinstance(memberships, np.ndarray):
        mat = np.asarray(torch.as_tensor(memberships).cpu(), dtype=bool)
        sets = [np.flatnonzero(row) for row in mat]
    else:
        sets = [np.asarray(list(s), dtype=np.int64) for s in memberships]
    act_given = None if active is None else np.asarray(torch.as_tensor(active).cpu(), dtype=bool)
    slots = []
    for s in sets:
        slot = np.full(c, len(s))  # g(c): the class's own slot, else the dustbin
        slot[s] = np.arange(len(s))
        slots.append((s, slot, slot[:, None] == slot[None, :]))
    q_all = np.empty_like(pg)
    iters, values = np.zeros(n, dtype=np.int64), np.zeros(n)
    for i in range(n):
        if act_given is None:
            top = np.argsort(-pg[i], kind="stable")[:top_n]
            act = [m for m, s in enumerate(sets) if np.isin(s, top).any()]
        else:
            act = list(np.flatnonzero(act_given[i]))
        if not act:
            q_all[i] = pg[i]
            continue
        # every model as (its probabilities, slot of each class, same-slot matrix); the generalist: identity
        models = [(pg[i], np.arange(c), None)] + [(ps[m][i], slots[m][1], slots[m][2]) for m in act]

        def softmax(z):
            e = np.exp(z - z.max())
            return e / e.sum()

        def collapse(q, slot, k):
            return np.bincount(slot, weights=q, minlength=k)  # q^(m): the dustbin sums probabilities

        def fun(z, models=models):
            q = softmax(z)
            val, grad = 0.0, np.zeros(c)
            for p, slot, _ in models:
                qm = collapse(q, slot, len(p))
                val += rel_entr(p, qm).sum()
                ratio = np.divide(p, qm, out=np.zeros_like(p), where=p > 0)
                grad += q * (p.sum() - ratio[slot])
            return val, grad

        def hess(z, models=models):
            q = softmax(z)
            qq = np.outer(q, q)
            h = np.zeros((c, c))
            for p, slot, same in models:
                qm = collapse(q, slot, len(p))
                r = np.divide(p, qm, out=np.zeros_like(p), where=p > 0)
                rq = np.divide(r, qm, out=np.zeros_like(r), where=p > 0)[slot]
                h += np.diag(q * (p.sum() - r[slot])) - p.sum() * qq
                h += (np.diag(q * q * rq) if same is None else qq * same * rq[:, None])
            return h

        z0 = np.log(np.maximum(pg[i], 1e-300))
        res = minimize(fun, z0, jac=True, hess=hess, method="trust-exact", options={"gtol": gtol, "maxiter": 1000})
        q_all[i] = softmax(res.x)
        iters[i], values[i] = res.nit, res.fun
    return (q_all, {"iterations": iters, "values": values}) if return_info else q_all
