"""Batch augmentation (data/augment.py): each built-in against an independent description of what it must do."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy.stats import chisquare

from darkknowledge.data.augment import (
    Augmentation,
    AugmentError,
    MixedTargets,
    augment_seed,
    build_augment,
    list_augmentations,
    parse_augment,
    register_augmentation,
)


def _lit(n: int, size: int = 9) -> torch.Tensor:
    x = torch.zeros(n, 1, size, size)
    x[:, 0, size // 2, size // 2] = 1.0
    return x


def _offsets(out: torch.Tensor) -> list[tuple[int, int]]:
    size = out.shape[-1]
    flat = out.flatten(1).argmax(1)
    return list(zip((flat // size - size // 2).tolist(), (flat % size - size // 2).tolist()))


@pytest.mark.parametrize("s", [1, 2])
def test_shift_moves_a_lit_pixel_by_at_most_s_and_every_offset_appears(s):
    x = _lit(1500)
    out, _ = build_augment([{"name": "shift", "max": s}], (1, 9, 9))(x, None, seed=0)
    assert torch.equal(out.flatten(1).sum(1), torch.ones(1500))  # the pixel is moved, never lost or blurred
    assert set(out.unique().tolist()) == {0.0, 1.0}
    seen = set(_offsets(out))
    assert seen == {(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)}


def test_shift_fills_with_zeros_and_keeps_the_rest_of_the_image():
    x = torch.rand(400, 1, 8, 8) + 1.0  # no zeros anywhere
    out, _ = build_augment([{"name": "shift", "max": 2}], (1, 8, 8))(x, None, seed=1)
    for xi, oi in zip(x[:, 0], out[:, 0]):
        zr = (oi == 0).all(1).nonzero().flatten().tolist()
        zc = (oi == 0).all(0).nonzero().flatten().tolist()
        dy = len(zr) if zr and zr[0] == 0 else -len(zr)  # zero rows on top: moved down
        dx = len(zc) if zc and zc[0] == 0 else -len(zc)
        assert abs(dy) <= 2 and abs(dx) <= 2
        assert int((oi == 0).sum()) == 64 - (8 - abs(dy)) * (8 - abs(dx))  # exactly the uncovered border is zero
        kept = oi[max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)]
        assert torch.equal(kept, xi[max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)])  # moved, not altered


def test_shift_draws_every_offset_in_the_square_uniformly():
    """Hinton et al. (2015) §3's jitter: an integer offset uniform on [-s, s]² (chi-square against uniform)."""
    n, s = 4000, 2
    new, _ = build_augment([{"name": "shift", "max": s}], (1, 9, 9))(_lit(n), None, seed=5)
    cells = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    seen = Counter(_offsets(new))
    assert set(seen) == set(cells)  # the support is exactly [-s, s]²
    assert chisquare([seen[cell] for cell in cells]).pvalue > 1e-3


def test_flat_rows_with_a_declared_image_shape_match_the_image_batch():
    x = torch.rand(16, 1, 28, 28)
    spec = [{"name": "crop", "padding": 3}, {"name": "affine", "degrees": 15}]
    img, _ = build_augment(spec, (1, 28, 28))(x, None, seed=11)
    flat, _ = build_augment(spec, (1, 28, 28))(x.reshape(16, 784), None, seed=11)
    assert flat.shape == (16, 784) and torch.equal(flat.reshape(16, 1, 28, 28), img)
    assert not torch.equal(img, x)


def test_hflip_is_an_exact_mirror_or_identity_per_sample():
    x = torch.rand(200, 3, 5, 7)
    out, _ = build_augment([{"name": "hflip"}], (3, 5, 7))(x, None, seed=2)
    mirrored = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(m != s for m, s in zip(mirrored, same))
    assert 60 < sum(mirrored) < 140  # p = 0.5


def test_mixup_is_the_convex_combination_for_the_returned_lambda_and_pairing():
    alpha = 0.2
    x, y = torch.rand(4000, 1, 4, 4), torch.randint(0, 10, (4000,))
    out, t = build_augment([{"name": "mixup", "alpha": alpha}], (1, 4, 4))(x, y, seed=3)
    assert isinstance(t, MixedTargets) and t.y_a is y
    assert torch.equal(t.index.sort().values, torch.arange(4000))  # a permutation of the batch
    assert torch.equal(t.y_b, y[t.index])
    lam = t.lam[:, None, None, None]
    assert torch.allclose(out, lam * x + (1 - lam) * x[t.index], atol=1e-6)
    # lambda ~ Beta(alpha, alpha): mean 1/2, variance 1 / (4 (2 alpha + 1)) (kornia's default would be U(0, 1))
    assert abs(t.lam.mean().item() - 0.5) < 0.02
    assert abs(t.lam.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.01


def test_cutmix_lambda_is_the_kept_area_fraction():
    n = 300
    x = torch.arange(1, n + 1, dtype=torch.float32)[:, None, None, None].expand(n, 2, 10, 12).clone()
    y = torch.arange(n) % 7
    out, t = build_augment([{"name": "cutmix", "alpha": 1.0}], (2, 10, 12))(x, y, seed=4)
    assert torch.equal(t.y_b, y[t.index])
    moved = t.index != torch.arange(n)
    assert moved.sum() > n - 10
    own = (out == x).float().mean((1, 2, 3))
    partner = (out == x[t.index]).float().mean((1, 2, 3))
    assert torch.allclose(own[moved], t.lam[moved], atol=1e-6)
    assert torch.allclose(own[moved] + partner[moved], torch.ones(int(moved.sum())), atol=1e-6)
    assert torch.equal(out[~moved], x[~moved])
    assert 0.4 < t.lam.mean().item() < 0.6 and t.lam.min() < 0.2 and t.lam.max() > 0.8  # Beta(1, 1)


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_a_batch_the_gate_p_skips_is_unchanged_with_lambda_one(name):
    x, y = torch.rand(32, 1, 6, 6), torch.arange(32)
    skipped = 0
    for seed in range(8):
        out, t = build_augment([{"name": name, "p": 0.5}], (1, 6, 6))(x, y, seed=seed)
        if torch.equal(out, x):
            skipped += 1
            assert torch.equal(t.lam, torch.ones(32))
        else:
            assert (t.lam < 1).any()
    assert 0 < skipped < 8


def test_mixed_cross_entropy_is_the_lambda_weighted_ce_and_the_soft_target_ce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    t = MixedTargets(torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([1, 1, 4, 0, 2, 3]),
                     torch.tensor([0.1, 0.5, 0.9, 1.0, 0.0, 0.3]), torch.zeros(6, dtype=torch.long))
    logp = logits.log_softmax(1)
    by_hand = -(t.lam * logp[range(6), t.y_a] + (1 - t.lam) * logp[range(6), t.y_b])
    assert torch.allclose(t.cross_entropy(logits, reduction="none"), by_hand, atol=1e-6)
    assert torch.allclose(t.cross_entropy(logits), F.cross_entropy(logits, t.soft(5)), atol=1e-6)
    assert torch.allclose(t.soft(5).sum(1), torch.ones(6), atol=1e-6)
    assert torch.equal(t[2:4].y_b, torch.tensor([4, 0]))


@pytest.mark.parametrize("name,axis,shape", [("time_mask", -2, (26, 40)), ("freq_mask", -1, (26, 40)),
                                             ("time_mask", -1, (1, 40, 26))])
def test_band_masks_zero_exactly_one_band_of_at_most_width(name, axis, shape):
    width, n = 5, 1000
    x = torch.ones(n, math.prod(shape))
    out, _ = build_augment([{"name": name, "width": width, "axis": axis}], shape)(x, None, seed=6)
    v = out.reshape(n, *shape)
    across = v.amax(dim=[d for d in range(1, v.ndim) if d != v.ndim + axis])  # 0 where the whole slice is masked
    assert torch.equal((v == 0).flatten(1).sum(1), (across == 0).sum(1) * (v[0].numel() // shape[axis]))
    widths = []
    for row in (across == 0):
        zero = row.nonzero().flatten()
        if len(zero):
            assert zero[-1] - zero[0] + 1 == len(zero)  # one contiguous band
        widths.append(len(zero))
    assert set(widths) == set(range(width + 1))  # w ~ U{0, ..., width}
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_noise_has_the_requested_std():
    x = torch.rand(64, 3, 16, 16)
    out, _ = build_augment([{"name": "noise", "std": 0.3}], (3, 16, 16))(x, None, seed=7)
    d = out - x
    assert abs(d.std().item() - 0.3) < 0.01 and abs(d.mean().item()) < 0.01


def test_same_seed_same_output_other_seed_other_output_and_the_global_rng_is_untouched():
    spec = [{"name": "crop", "padding": 4}, {"name": "hflip"}, {"name": "noise", "std": 0.1},
            {"name": "cutmix"}, {"name": "freq_mask", "width": 3}]
    pipe = build_augment(spec, (3, 8, 8))
    x, y = torch.rand(32, 3, 8, 8), torch.randint(0, 10, (32,))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, ta = pipe(x, y, seed=augment_seed(0, 17))
    assert torch.equal(torch.get_rng_state(), before)
    b, tb = pipe(x, y, seed=augment_seed(0, 17))
    c, _ = pipe(x, y, seed=augment_seed(0, 18))
    assert torch.equal(a, b) and torch.equal(ta.lam, tb.lam) and torch.equal(ta.index, tb.index)
    assert not torch.equal(a, c)
    assert augment_seed(0, 17) == augment_seed(0, 17) != augment_seed(1, 17)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_output_keeps_the_input_dtype_and_device(dtype):
    x = torch.rand(8, 1, 28, 28).to(dtype)
    out, _ = build_augment([{"name": "shift"}, {"name": "mixup"}], (1, 28, 28))(x, torch.zeros(8).long(), seed=0)
    assert out.dtype == dtype and out.device == x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    spec = [{"name": "shift"}, {"name": "hflip"}, {"name": "cutmix"}]
    x = torch.rand(16, 1, 28, 28)
    a, _ = build_augment(spec, (1, 28, 28))(x, None, seed=9)
    b, _ = build_augment(spec, (1, 28, 28))(x.cuda(), None, seed=9)
    assert b.is_cuda and torch.equal(a, b.cpu())


def test_without_mixing_the_labels_come_back_unchanged_and_an_empty_list_is_the_identity():
    x, y = torch.rand(4, 3, 8, 8), torch.arange(4)
    assert build_augment([{"name": "hflip"}], (3, 8, 8))(x, y, seed=0)[1] is y
    out, t = build_augment([], (3, 8, 8))(x, y, seed=0)
    assert out is x and t is y


@pytest.mark.parametrize("spec,message", [
    ([{"name": "flip"}], "augment[0]: unknown augmentation 'flip'; known: affine, crop, cutmix,"),
    ([{"name": "hflip"}, {"name": "shift", "max": -1}], "augment[1] (shift): max: Input should be greater than or equal"),
    ([{"name": "shift", "pad": 1}], "augment[0] (shift): unknown parameter 'pad'; parameters: max"),
    ([{"name": "affine", "scale": [2, 1]}], "augment[0] (affine): scale must be (min, max) with 0 < min <= max"),
    ([{"name": "mixup"}, {"name": "cutmix"}], "at most one mixing augmentation per list, got mixup, cutmix"),
    ([{"name": "noise"}], "augment[0] (noise): std: Field required; parameters: std, p"),
    ([{"name": "time_mask", "width": 2, "axis": 0}], "augment[0] (time_mask): axis: Input should be -1 or -2"),
    ([{"padding": 4}], "augment[0]: expected a mapping with a 'name'"),
    ("shift", "augment must be a list"),
])
def test_bad_specs_give_one_line_errors(spec, message):
    with pytest.raises(AugmentError) as e:
        parse_augment(spec)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_shapes_give_one_line_errors():
    with pytest.raises(AugmentError, match=r"shift: needs an image shape"):
        build_augment([{"name": "shift"}], (784,))
    with pytest.raises(AugmentError, match=r"does not fit input_shape \(1, 28, 28\)"):
        build_augment([{"name": "shift"}], (1, 28, 28))(torch.rand(4, 780), None, seed=0)


def test_a_new_augmentation_is_one_registered_class():
    @register_augmentation("test_negate")
    class Negate(Augmentation):
        image = False

        def build(self, shape):
            return lambda x: -x

    try:
        assert "test_negate" in list_augmentations()
        x = torch.rand(3, 5)
        out, _ = build_augment([{"name": "test_negate"}], (5,))(x, None, seed=0)
        assert torch.equal(out, -x) and parse_augment([{"name": "test_negate"}])[0].spec() == {"name": "test_negate"}
    finally:
        from darkknowledge.data import augment
        augment._REGISTRY.pop("test_negate")


def test_the_normalised_spec_is_plain_data_that_parses_back_to_the_same_steps():
    spec = [{"name": "affine", "degrees": 5, "scale": [0.9, 1.1]}, {"name": "time_mask", "width": 3}]
    steps = parse_augment(spec)
    plain = yaml.safe_load(yaml.safe_dump([s.spec() for s in steps]))
    assert plain[0] == {"name": "affine", "degrees": 5.0, "translate": 0.0, "scale": [0.9, 1.1], "p": 1.0}
    assert parse_augment(plain) == steps
