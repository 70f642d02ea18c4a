"""bf16 autocast and channels_last: losses stay fp32 and match their fp32 values; training runs."""

from __future__ import annotations

import json

import pytest
import torch

import darkknowledge as dk
from darkknowledge.config import TrainConfig, same_config, validate
from darkknowledge.data import Splits, TensorData
from darkknowledge.engine import train
from darkknowledge.losses import distillation_loss, hard_loss, logit_matching_loss, soft_targets
from darkknowledge.subclass import subclass_auxiliary_loss, subclass_distillation_loss, subclass_to_class_logits


def _autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("fn", [
    lambda z, v, y: distillation_loss(z, v, temperature=4.0),
    lambda z, v, y: logit_matching_loss(z, v),
    lambda z, v, y: hard_loss(z, y),
    lambda z, v, y: soft_targets(v, 2.0),
    lambda z, v, y: subclass_auxiliary_loss(z),
    lambda z, v, y: subclass_to_class_logits(z, 2),
    lambda z, v, y: subclass_distillation_loss(z, v, y, num_classes=2, temperature=4.0, alpha=0.5)[0],
])
def test_losses_are_fp32_under_autocast(fn):
    g = torch.Generator().manual_seed(0)
    z, v = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
    y = torch.randint(0, 2, (16,), generator=g)
    ref = fn(z, v, y)
    zb, vb = z.bfloat16(), v.bfloat16()
    with _autocast():
        out = fn(zb, vb, y)
    assert out.dtype == torch.float32
    # same value as the fp32 loss of the (bf16-rounded) inputs: nothing inside ran in bf16
    torch.testing.assert_close(out, fn(zb.float(), vb.float(), y), rtol=1e-6, atol=1e-6)
    # and close to the loss of the unrounded inputs (bf16 keeps ~3 significant digits)
    torch.testing.assert_close(out, ref, rtol=5e-2, atol=5e-2)


def test_fp32_decorator_is_transparent_outside_autocast():
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    out = soft_targets(z, 2.0)
    assert out.dtype == torch.float64
    out.sum().backward()
    assert z.grad is not None


def _images(n: int, seed: int) -> TensorData:
    """2 classes of 3×12×12 images: a bright 4×4 patch in the top (0) or bottom (1) half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.3 * torch.randn(n, 3, 12, 12, generator=g)
    for i in range(n):
        r = int(torch.randint(0, 2, (1,), generator=g)) + (6 if y[i] else 0)
        c = int(torch.randint(0, 8, (1,), generator=g))
        x[i, :, r:r + 4, c:c + 4] += 2.0
    return TensorData(x, y)


def test_bf16_channels_last_training_runs(tmp_path):
    splits = Splits(_images(512, 0), _images(128, 1), _images(256, 2), 2, "patches")
    cfg = validate({"name": "bf16", "epochs": 3, "batch_size": 32, "precision": "bf16", "channels_last": True,
                    "model": {"name": "small_cnn", "args": {"in_channels": 3, "image_size": 12, "dropout": 0.0}},
                    "optim": {"name": "adam", "lr": 3e-3}, "out_dir": str(tmp_path / "r")})
    rec = train(cfg, splits=splits, progress=False)
    assert rec["config"]["precision"] == "bf16"
    assert rec["final"]["test"]["accuracy"] > 0.9  # 2 classes: chance is 0.5
    m = dk.load_model(tmp_path / "r" / "best.safetensors")
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_bad_precision_is_a_config_error():
    with pytest.raises(dk.ConfigError, match="precision"):
        validate({"precision": "fp8"})


def test_same_config_ignores_keys_added_later_at_their_defaults():
    cfg = TrainConfig()
    old = cfg.model_dump()
    del old["precision"], old["channels_last"]
    assert same_config(old, cfg)
    assert not same_config({**old, "epochs": 99}, cfg)
    assert not same_config(json.loads(json.dumps({"epochs": "x"})), cfg)
    assert not same_config(None, cfg)
