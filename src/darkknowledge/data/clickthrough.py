"""A **SYNTHETIC** clickthrough generator with hidden user/ad segments (spec §11.4).

This is *not* Criteo data and results on it are not comparable with any paper's numbers. It exists
to test the claim that subclass distillation helps when the subclasses are unknown: clicks are
driven by hidden segments that a teacher may rediscover as subclasses.

**Hidden segments.** Each row has a user segment ``u ∈ {0..U−1}`` and an ad segment
``a ∈ {0..A−1}`` (default U = 8, A = 6: 48 hidden cells ``cell = u·A + a``), drawn independently
with frequencies from ``Dirichlet(concentration · 1)``.

**Features** — the Criteo schema of :mod:`darkknowledge.data.criteo` (13 counts, 26 hashed
categoricals), so the same featuriser applies:

* ``I1–I6`` depend on ``u``, ``I7–I10`` on ``a``, ``I11–I13`` are noise: ``x = floor(exp(y))``
  with ``y ~ N(μ_segment,field, σ²)`` (log-normal counts with segment-specific means);
* ``C1–C10`` depend on ``u``, ``C11–C18`` on ``a``, ``C19–C26`` are noise: a token's Zipf rank
  ``r`` is drawn with ``P(r) ∝ (r+1)^−zipf_exponent`` over the field's vocabulary (100–10,000,
  log-uniform per field) and mapped to a token through a segment-specific permutation; with
  probability ``ρ = background_prob`` (always, for noise fields) the shared background permutation
  is used instead, so segments are only partly identifiable. Tokens are written as distinct
  random 32-bit hash ids, like Criteo's;
* every field is missing (``NaN`` / ``-1``) with its own probability, uniform in [5%, 20%].

**Label.** ``click ~ Bernoulli(sigmoid(b + W[u, a] + f(x)))`` with ``W[u, a] ~ N(0, 1.5²)`` and
``f(x) = Σ_k c_k · standardised log1p(x_k)`` a small direct effect of three counts (default
I1, I7, I11, using their values before masking). The bias ``b`` is solved by bisection so that the
world's mean CTR (over a fixed calibration sample) equals ``target_ctr``. **Default target 4%**
("a realistic click rate of a few percent"); note that spec §11.4 instead suggests about 20%, the
rate of the real Criteo sample (205/1,000) — set ``target_ctr=0.2`` for that.

**Determinism.** A :class:`ClickthroughWorld` (all parameters above, including ``b``) is a pure
function of ``(config, world_seed)``; its rows are a pure function of ``(world, seed)``. Train,
validation and test sets are different seeds of one world (:func:`clickthrough_splits`).
Everything is vectorised NumPy (1M rows take a few seconds).

The hidden segments come back separately, in :class:`ClickthroughSegments`, **for evaluation only**
(e.g. NMI between a teacher's subclasses and the cells); models must never see them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch

from .criteo import NUM_CAT, NUM_INT, CriteoData, ctr_inputs
from .registry import register_dataset

__all__ = [
    "ClickthroughConfig",
    "ClickthroughSegments",
    "ClickthroughWorld",
    "generate_clickthrough",
    "clickthrough_splits",
    "ctr_inputs",
    "USER_INT_FIELDS",
    "AD_INT_FIELDS",
    "NOISE_INT_FIELDS",
    "USER_CAT_FIELDS",
    "AD_CAT_FIELDS",
    "NOISE_CAT_FIELDS",
]

USER_INT_FIELDS = tuple(range(0, 6))  # I1–I6
AD_INT_FIELDS = tuple(range(6, 10))  # I7–I10
NOISE_INT_FIELDS = tuple(range(10, 13))  # I11–I13
USER_CAT_FIELDS = tuple(range(0, 10))  # C1–C10
AD_CAT_FIELDS = tuple(range(10, 18))  # C11–C18
NOISE_CAT_FIELDS = tuple(range(18, 26))  # C19–C26


@dataclass(frozen=True)
class ClickthroughConfig:
    """Parameters of the synthetic world (defaults follow spec §11.4, except ``target_ctr``)."""

    num_user_segments: int = 8
    num_ad_segments: int = 6
    segment_concentration: float = 2.0  # Dirichlet concentration of segment frequencies
    vocab_min: int = 100
    vocab_max: int = 10_000
    zipf_exponent: float = 1.1
    background_prob: float = 0.3  # ρ: chance a segment-dependent token comes from the shared background
    missing_min: float = 0.05
    missing_max: float = 0.20
    log_mean_min: float = 0.5  # per-field base log-mean of the counts, uniform in [min, max]
    log_mean_max: float = 3.0
    log_mean_spread: float = 1.0  # std of the segment-specific shift of the log-mean
    log_sigma: float = 0.75  # σ of the log-normal counts
    cell_effect_std: float = 1.5  # W[u, a] ~ N(0, std²)
    direct_fields: tuple[int, ...] = (0, 6, 10)  # I1 (user), I7 (ad), I11 (noise)
    direct_coefs: tuple[float, ...] = (0.3, -0.3, 0.4)
    target_ctr: float = 0.04
    calibration_rows: int = 200_000

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"ClickthroughConfig: {msg}")

        if self.num_user_segments < 1 or self.num_ad_segments < 1:
            bad("need at least one user and one ad segment")
        if not self.segment_concentration > 0:
            bad("segment_concentration must be > 0")
        if not 2 <= self.vocab_min <= self.vocab_max:
            bad("need 2 <= vocab_min <= vocab_max")
        if not self.zipf_exponent > 0:
            bad("zipf_exponent must be > 0")
        if not 0 <= self.background_prob <= 1:
            bad("background_prob must be in [0, 1]")
        if not 0 <= self.missing_min <= self.missing_max < 1:
            bad("need 0 <= missing_min <= missing_max < 1")
        if not 0 < self.target_ctr < 1:
            bad("target_ctr must be in (0, 1)")
        if len(self.direct_fields) != len(self.direct_coefs):
            bad("direct_fields and direct_coefs differ in length")
        if any(not 0 <= j < NUM_INT for j in self.direct_fields):
            bad(f"direct_fields must index the {NUM_INT} count fields")
        if self.calibration_rows < 1000:
            bad("calibration_rows must be >= 1000")
        if self.log_sigma < 0 or self.log_mean_spread < 0 or self.cell_effect_std < 0:
            bad("standard deviations must be >= 0")


class ClickthroughSegments(NamedTuple):
    """Hidden ground truth, **for evaluation only**."""

    user: np.ndarray  # int64 [N] in [0, U)
    ad: np.ndarray  # int64 [N] in [0, A)
    cell: np.ndarray  # int64 [N] = user * A + ad
    click_prob: np.ndarray  # float64 [N], the true click probability (oracle)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class ClickthroughWorld:
    """All parameters of one synthetic world, drawn from ``world_seed``; :meth:`sample` draws rows."""

    def __init__(self, config: ClickthroughConfig | None = None, world_seed: int = 0) -> None:
        cfg = config or ClickthroughConfig()
        self.config = cfg
        self.world_seed = int(world_seed)
        rng = np.random.default_rng([self.world_seed, 0x5EED])
        U, A = cfg.num_user_segments, cfg.num_ad_segments
        self.user_freq = rng.dirichlet(np.full(U, cfg.segment_concentration))
        self.ad_freq = rng.dirichlet(np.full(A, cfg.segment_concentration))
        self.cell_effects = rng.normal(0.0, cfg.cell_effect_std, size=(U, A))

        # numeric fields: log-mean table per (segment, field)
        base = rng.uniform(cfg.log_mean_min, cfg.log_mean_max, size=NUM_INT)
        self.log_mean_user = base[list(USER_INT_FIELDS)] + cfg.log_mean_spread * rng.standard_normal(
            (U, len(USER_INT_FIELDS)))
        self.log_mean_ad = base[list(AD_INT_FIELDS)] + cfg.log_mean_spread * rng.standard_normal(
            (A, len(AD_INT_FIELDS)))
        self.log_mean_noise = base[list(NOISE_INT_FIELDS)].copy()

        # categorical fields: vocabulary, Zipf CDF, permutations (segment rows + background row), ids
        lo, hi = math.log(cfg.vocab_min), math.log(cfg.vocab_max)
        self.vocab_sizes = np.rint(np.exp(rng.uniform(lo, hi, size=NUM_CAT))).astype(np.int64)
        self._cdf: list[np.ndarray] = []
        self._perm: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        for j in range(NUM_CAT):
            v = int(self.vocab_sizes[j])
            w = np.arange(1, v + 1, dtype=np.float64) ** -cfg.zipf_exponent
            cdf = np.cumsum(w / w.sum())
            cdf[-1] = 1.0
            groups = U if j in USER_CAT_FIELDS else A if j in AD_CAT_FIELDS else 0
            # one permutation per segment, then the shared background one (last row)
            perm = np.stack([rng.permutation(v) for _ in range(groups + 1)]).astype(np.int32)
            self._cdf.append(cdf)
            self._perm.append(perm)
            self._ids.append(rng.choice(2**32, size=v, replace=False).astype(np.int64))

        self.missing_int = rng.uniform(cfg.missing_min, cfg.missing_max, size=NUM_INT)
        self.missing_cat = rng.uniform(cfg.missing_min, cfg.missing_max, size=NUM_CAT)

        # direct effect standardisation and the bias, from a fixed calibration sample of this world
        u, a, ints = self._draw_counts(rng, cfg.calibration_rows)
        z = np.log1p(ints[:, list(cfg.direct_fields)])
        self.direct_mean = z.mean(axis=0)
        self.direct_std = np.where(z.std(axis=0) > 0, z.std(axis=0), 1.0)
        logits = self.cell_effects[u, a] + self._direct_effect(ints)
        self.bias = self._solve_bias(logits, cfg.target_ctr)

    # ---------------------------------------------------------------------------------------------

    def _draw_counts(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        u = rng.choice(cfg.num_user_segments, size=n, p=self.user_freq)
        a = rng.choice(cfg.num_ad_segments, size=n, p=self.ad_freq)
        mu = np.empty((n, NUM_INT))
        mu[:, list(USER_INT_FIELDS)] = self.log_mean_user[u]
        mu[:, list(AD_INT_FIELDS)] = self.log_mean_ad[a]
        mu[:, list(NOISE_INT_FIELDS)] = self.log_mean_noise[None, :]
        y = mu + cfg.log_sigma * rng.standard_normal((n, NUM_INT))
        ints = np.floor(np.exp(np.minimum(y, 40.0)))
        return u.astype(np.int64), a.astype(np.int64), ints

    def _direct_effect(self, ints: np.ndarray) -> np.ndarray:
        cfg = self.config
        z = (np.log1p(ints[:, list(cfg.direct_fields)]) - self.direct_mean) / self.direct_std
        return z @ np.asarray(cfg.direct_coefs, dtype=np.float64)

    @staticmethod
    def _solve_bias(logits: np.ndarray, target: float, iters: int = 100) -> float:
        """Bisection for ``b`` with ``mean(sigmoid(b + logits)) = target`` (monotone in ``b``)."""
        lo = math.log(target / (1 - target)) - float(logits.max()) - 1.0
        hi = math.log(target / (1 - target)) - float(logits.min()) + 1.0
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            if _sigmoid(mid + logits).mean() < target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    @property
    def num_cells(self) -> int:
        return self.config.num_user_segments * self.config.num_ad_segments

    def cell_ctr(self) -> np.ndarray:
        """``[U, A]`` click probability at the mean direct effect (``f = 0``): ``sigmoid(b + W)``."""
        return _sigmoid(self.bias + self.cell_effects)

    def sample(self, num_rows: int, seed: int = 0) -> tuple[CriteoData, ClickthroughSegments]:
        """Draw ``num_rows`` rows: ``(CriteoData(labels, ints, cats), ClickthroughSegments)``."""
        if num_rows < 0:
            raise ValueError(f"num_rows must be >= 0, got {num_rows}")
        cfg = self.config
        rng = np.random.default_rng([self.world_seed, int(seed), 1])
        n = int(num_rows)
        u, a, ints = self._draw_counts(rng, n)

        cats = np.empty((n, NUM_CAT), dtype=np.int64)
        for j in range(NUM_CAT):
            ranks = np.searchsorted(self._cdf[j], rng.random(n), side="right")
            np.minimum(ranks, self.vocab_sizes[j] - 1, out=ranks)
            background = self._perm[j].shape[0] - 1
            if j in USER_CAT_FIELDS or j in AD_CAT_FIELDS:
                seg = u if j in USER_CAT_FIELDS else a
                row = np.where(rng.random(n) < cfg.background_prob, background, seg)
            else:
                row = np.full(n, background)
            cats[:, j] = self._ids[j][self._perm[j][row, ranks]]

        logit = self.bias + self.cell_effects[u, a] + self._direct_effect(ints)
        p = _sigmoid(logit)
        labels = (rng.random(n) < p).astype(np.float32)

        ints[rng.random((n, NUM_INT)) < self.missing_int[None, :]] = np.nan
        cats[rng.random((n, NUM_CAT)) < self.missing_cat[None, :]] = -1
        segments = ClickthroughSegments(u, a, u * cfg.num_ad_segments + a, p)
        return CriteoData(labels, ints, cats), segments

    def __repr__(self) -> str:
        changed = {f.name: getattr(self.config, f.name) for f in fields(self.config)
                   if getattr(self.config, f.name) != f.default}
        return (f"ClickthroughWorld(world_seed={self.world_seed}, bias={self.bias:.4f}, "
                f"config_changes={changed})")


def generate_clickthrough(
    num_rows: int,
    seed: int = 0,
    *,
    world_seed: int = 0,
    config: ClickthroughConfig | None = None,
) -> tuple[CriteoData, ClickthroughSegments]:
    """``num_rows`` synthetic rows from world ``world_seed``, row stream ``seed`` (see module doc).

    Returns ``(CriteoData, ClickthroughSegments)``; the segments are for evaluation only.
    """
    return ClickthroughWorld(config, world_seed).sample(num_rows, seed)


def clickthrough_splits(
    train: int = 1_000_000,
    val: int = 100_000,
    test: int = 100_000,
    *,
    world_seed: int = 0,
    config: ClickthroughConfig | None = None,
) -> dict[str, tuple[CriteoData, ClickthroughSegments]]:
    """Train/val/test sets from one world (row streams ``seed`` = 1, 2, 3)."""
    world = ClickthroughWorld(config, world_seed)
    return {name: world.sample(n, seed) for seed, (name, n) in enumerate(
        (("train", train), ("val", val), ("test", test)), start=1)}


@register_dataset("synthetic-clickthrough", classes=2)
def load_clickthrough(data_dir=None, download: bool = True, train_rows: int = 300_000, test_rows: int = 100_000,
                      world_seed: int = 0, num_buckets: int = 4096) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The registry's ``synthetic-clickthrough``: world ``world_seed`` with the subclass-clickthrough
    experiment's defaults (row streams 1 = train, 3 = test; no files needed)."""
    world = ClickthroughWorld(ClickthroughConfig(), world_seed)
    out = {}
    for name, n, seed in (("train", train_rows, 1), ("test", test_rows, 3)):
        data, _ = world.sample(n, seed)
        out[name] = (ctr_inputs(data, num_buckets), torch.from_numpy(data.labels).long())
    return out
