"""Subclass teacher, subclass student and the baselines through the training engine (tiny runs)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import darkknowledge as dk
from darkknowledge.config import validate
from darkknowledge.data import Splits, TensorData, load_dataset
from darkknowledge.engine import train
from darkknowledge.methods import create_method


@pytest.fixture(scope="module")
def digits_2x5() -> Splits:
    s = load_dataset("digits", val_size=200)

    def coarse(d: TensorData) -> TensorData:
        return TensorData(d.x, d.y // 5, d.index)

    return dataclasses.replace(s, train=coarse(s.train), val=coarse(s.val), test=coarse(s.test), num_classes=2)


def _cfg(out, lr=1e-3, **kw):
    base = {"name": "sub", "seed": 0, "epochs": 3, "batch_size": 64, "threads": 1,
            "data": {"dataset": "digits", "val_size": 200}, "optim": {"name": "adam", "lr": lr},
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
    rec = train(_cfg(tmp_path / "teacher", lr=1e-2, epochs=8, model={"name": "subclass", "args": teacher_args},
                     method="subclass_teacher", method_args={"beta": 1.0}), splits=digits_2x5, progress=False)
    assert all(set(e["train_loss"]) == {"ce", "aux"} for e in rec["epochs"])
    tfile = str(tmp_path / "teacher" / "best.safetensors")
    teacher = dk.load_model(tfile)
    assert isinstance(teacher, dk.SubclassNet)
    x, y = digits_2x5.test.x, digits_2x5.test.y
    majority = float(torch.bincount(y).max()) / len(y)  # the 2-class task's chance level (≈ 0.5)
    assert rec["final"]["test"]["accuracy"] > majority + 0.3

    students = {
        "subclass": dict(model={"name": "subclass", "args": {"backbone": "mlp", "in_features": 64, "hidden": [32],
                                                              "subclasses": 5}},
                         method="subclass_kd", method_args={"temperature": 4.0, "alpha": 0.5}),
        "conventional": dict(model={"name": "mlp", "args": {"in_features": 64, "hidden": [32]}},
                             distill={"teachers": [tfile], "temperature": 4.0, "w_soft": 0.5, "w_hard": 0.5}),
        "penultimate": dict(model={"name": "mlp", "args": {"in_features": 64, "hidden": [32]}},
                            method="penultimate", method_args={"weight": 0.1}),
    }
    keys = {"subclass": {"soft", "hard"}, "conventional": {"soft", "hard"}, "penultimate": {"hard", "feat"}}
    with torch.no_grad():
        teacher_pred = teacher.eval()(x).argmax(1)
    for name, kw in students.items():
        kw.setdefault("distill", {"teachers": [tfile]})
        rec = train(_cfg(tmp_path / name, lr=3e-3, **kw), splits=digits_2x5, progress=False)
        test = rec["final"]["test"]
        # the recorded metrics are those of the saved model, recomputed here from its predictions
        with torch.no_grad():
            pred = dk.load_model(tmp_path / name / "best.safetensors").eval()(x).argmax(1)
        assert test["accuracy"] == pytest.approx(float((pred == y).float().mean()), abs=1e-6), name
        assert test["agreement"] == pytest.approx(float((pred == teacher_pred).float().mean()), abs=1e-6), name
        # it learned: well above the majority-class rate, with a falling training loss made of the method's terms
        assert test["accuracy"] > majority + 0.2, (name, test["accuracy"], majority)
        losses = [e["train_loss"] for e in rec["epochs"]]
        assert all(set(e) == keys[name] for e in losses), name
        assert sum(losses[-1].values()) < sum(losses[0].values()), name
    # the subclass student's teacher store holds subclass logits (10 columns), the conventional one class logits
    for name, width in (("subclass", 10), ("conventional", 2), ("penultimate", 64)):
        assert json.loads((tmp_path / name / "teacher_store" / "manifest.json").read_text())["classes"] == width
