"""Subclass teacher, subclass student and the baselines through the training engine (tiny runs)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import darkknowledge as dk
from darkknowledge.config import validate
from darkknowledge.data import Splits, TensorData, load_dataset
from darkknowledge.methods import create_method
from darkknowledge.training import train


@pytest.fixture(scope="module")
def digits_2x5() -> Splits:
    s = load_dataset("digits", val_size=200)

    def coarse(d: TensorData) -> TensorData:
        return TensorData(d.x, d.y // 5, d.index)

    return dataclasses.replace(s, train=coarse(s.train), val=coarse(s.val), test=coarse(s.test), num_classes=2)


def _cfg(out, **kw):
    base = {"name": "sub", "seed": 0, "epochs": 3, "batch_size": 64, "threads": 1,
            "data": {"dataset": "digits", "val_size": 200}, "optim": {"name": "adam", "lr": 1e-3},
            "out_dir": str(out)}
    base.update(kw)
    return validate(base)


def test_subclass_net_groups_logits():
    net = dk.create_model("subclass", backbone="mlp", in_features=64, hidden=[16], num_classes=2, subclasses=5)
    x = torch.randn(7, 1, 8, 8)
    z = net.subclass_logits(x)
    assert z.shape == (7, 10)
    assert torch.allclose(net(x).softmax(1), z.softmax(1).view(7, 2, 5).sum(-1), atol=1e-6)


def test_beta_zero_is_plain_class_loss(digits_2x5):
    net = dk.create_model("subclass", backbone="mlp", in_features=64, hidden=[16], num_classes=2, subclasses=5)
    x, y = digits_2x5.train.x[:32], digits_2x5.train.y[:32]
    logits, losses = create_method("subclass_teacher", net, beta=0.0)(x, y)
    assert set(losses) == {"ce"}
    assert torch.equal(sum(losses.values()), torch.nn.functional.cross_entropy(net(x), y))
    _, with_aux = create_method("subclass_teacher", net, beta=1.0)(x, y)
    assert set(with_aux) == {"ce", "aux"}


def test_teacher_and_all_students_train(tmp_path, digits_2x5):
    teacher_args = {"backbone": "mlp", "in_features": 64, "hidden": [64], "subclasses": 5}
    rec = train(_cfg(tmp_path / "teacher", model={"name": "subclass", "args": teacher_args},
                     method="subclass_teacher", method_args={"beta": 1.0}), splits=digits_2x5, progress=False)
    assert set(rec["epochs"][0]["train_loss"]) == {"ce", "aux"}
    tfile = str(tmp_path / "teacher" / "best.safetensors")
    teacher = dk.load_model(tfile)
    assert isinstance(teacher, dk.SubclassNet)

    students = {
        "subclass": dict(model={"name": "subclass", "args": {"backbone": "mlp", "in_features": 64, "hidden": [32],
                                                              "subclasses": 5}},
                         method="subclass_kd", method_args={"temperature": 4.0, "alpha": 0.5}),
        "conventional": dict(model={"name": "mlp", "args": {"in_features": 64, "hidden": [32]}},
                             distill={"teachers": [tfile], "temperature": 4.0, "w_soft": 0.5, "w_hard": 0.5}),
        "penultimate": dict(model={"name": "mlp", "args": {"in_features": 64, "hidden": [32]}},
                            method="penultimate", method_args={"weight": 1.0}),
    }
    for name, kw in students.items():
        kw.setdefault("distill", {"teachers": [tfile]})
        rec = train(_cfg(tmp_path / name, **kw), splits=digits_2x5, progress=False)
        assert 0.4 < rec["final"]["test"]["accuracy"] <= 1.0, name
        assert 0 <= rec["final"]["test"]["agreement"] <= 1, name
    # the subclass student's teacher cache holds subclass logits (10 columns), the conventional one class logits
    from safetensors.torch import load_file

    assert load_file(tmp_path / "subclass" / "teacher_cache.safetensors")["member_logits"].shape[-1] == 10
    assert load_file(tmp_path / "conventional" / "teacher_cache.safetensors")["member_logits"].shape[-1] == 2
    assert load_file(tmp_path / "penultimate" / "teacher_cache.safetensors")["member_logits"].shape[-1] == 64
