"""Batch augmentation in the engine (``data.augment``) and consistent teaching (Beyer et al. 2022): the live
teacher labels exactly the augmented batch the student sees (mixup included); the augmented batch is a function of
(run seed, global step), so a resume is exact; stored teacher outputs with augmentation, and a mixing augmentation
for a method that cannot take mixed labels, are refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import darkknowledge as dk
from darkknowledge.config import same_config, validate
from darkknowledge.data.augment import MixedTargets
from darkknowledge.engine import train
from darkknowledge.losses import hard_loss

AUG = [{"name": "shift", "max": 2}, {"name": "mixup", "alpha": 0.4}]


def _cfg(out: Path, teacher: bool = True, **kw) -> dict:
    cfg = {"name": "aug", "seed": 2, "epochs": 2, "batch_size": 37, "threads": 1,
           "model": {"name": "mlp", "args": {"in_features": 64, "hidden": [16]}},
           "data": {"dataset": "synthetic", "val_size": 1000, "fraction": 0.02, "augment": AUG,
                    "augment_shape": [1, 8, 8]},
           "optim": {"name": "sgd", "lr": 0.05}, "out_dir": str(out)}
    if teacher:
        cfg["distill"] = {"teachers": ["(in-memory teacher)"]}
        cfg["method_args"] = {"temperature": 3.0, "w_hard": 0.5}
    cfg.update(kw)
    return cfg


class Spy(nn.Module):
    """An MLP that records the inputs of every forward it makes in training mode (``always``: in any mode)."""

    def __init__(self, always: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = dk.create_model("mlp", in_features=64, hidden=[16], num_classes=10)
        self.num_classes, self.always, self.seen = 10, always, []

    def forward(self, x):
        if self.training or self.always:
            self.seen.append(x.detach().clone())
        return self.net(x)


def test_the_teacher_sees_exactly_the_students_augmented_batch(tmp_path):
    student, teacher = Spy(seed=0), Spy(always=True, seed=1)
    cfg = validate(_cfg(tmp_path / "run"))
    train(cfg, progress=False, student=student, teacher=teacher)
    n_train = round(0.02 * 19000)  # the synthetic training split (20,000 - 1,000 validation) x fraction
    steps = 2 * -(-n_train // 37)
    # the teacher's forwards: the input check and its evaluation-set logits first, then one per training batch
    batches = teacher.seen[-steps:]
    assert len(student.seen) == steps and len(teacher.seen) > steps
    for s, t in zip(student.seen, batches):
        assert torch.equal(s, t)  # the very batch, after shift and mixup
    # and that batch is augmented: not the rows the epoch's order picks
    from darkknowledge.engine import epoch_order, prepare_data

    x = prepare_data(cfg.data).train.x
    raw = x[epoch_order(len(x), cfg.seed, 0)[:37]]
    assert student.seen[0].shape == raw.shape and not torch.equal(student.seen[0], raw)


def test_an_augmented_run_resumes_exactly(tmp_path):
    class Stop(dk.Callback):
        def on_epoch_end(self, run, row):
            raise KeyboardInterrupt

    full = train(validate(_cfg(tmp_path / "full", teacher=False)), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(validate(_cfg(tmp_path / "cut", teacher=False)), progress=False, callbacks=[Stop()])
    resumed = train(validate(_cfg(tmp_path / "cut", teacher=False)), resume=True, progress=False)
    assert (tmp_path / "full" / "best.safetensors").read_bytes() == (tmp_path / "cut" / "best.safetensors").read_bytes()
    assert [e["val"] for e in resumed["epochs"]] == [e["val"] for e in full["epochs"]]


def test_stored_teacher_outputs_with_augmentation_are_refused(tmp_path):
    cached = dk.CachedTeacher(torch.randn(380, 10))
    with pytest.raises(ValueError, match="consistent teaching needs the teacher run on each augmented batch"):
        train(validate(_cfg(tmp_path / "run")), progress=False, student=Spy(), teacher=cached)
    assert not (tmp_path / "run").exists()


def test_a_mixing_augmentation_needs_a_method_that_takes_mixed_labels(tmp_path):
    cfg = validate(_cfg(tmp_path / "run", method="dkd", method_args={}))
    with pytest.raises(ValueError, match="does not take the labels of a mixed batch"):
        train(cfg, progress=False, student=Spy(), teacher=Spy(seed=1))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_hard_loss_of_mixed_labels_is_the_mixup_cross_entropy():
    """Zhang et al. (2018): −[λ·log q(y_a) + (1 − λ)·log q(y_b)], batch mean — against log-softmax by hand."""
    torch.manual_seed(0)
    z = torch.randn(6, 5, dtype=torch.float64)
    ya, yb = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([4, 3, 2, 1, 0, 0])
    lam = torch.tensor([1.0, 0.0, 0.3, 0.5, 0.9, 0.25], dtype=torch.float64)
    logq = z - torch.logsumexp(z, 1, keepdim=True)
    want = -(lam * logq[range(6), ya] + (1 - lam) * logq[range(6), yb]).mean()
    got = hard_loss(z, MixedTargets(ya, yb, lam, torch.arange(6)))
    assert torch.allclose(got, want, atol=1e-12, rtol=0)
    assert torch.allclose(hard_loss(z, ya), F.cross_entropy(z, ya), atol=1e-12, rtol=0)  # plain labels unchanged


def test_function_matching_trains_on_the_soft_term_alone(tmp_path):
    """The function-matching form (Beyer et al. 2022): KL at T, no hard term, on mixed views."""
    cfg = validate(_cfg(tmp_path / "fm", method_args={"temperature": 1.0, "w_hard": 0.0, "kind": "kl"}))
    rec = train(cfg, progress=False, student=Spy(), teacher=Spy(seed=1))
    assert all(e["train_loss"]["hard"] == 0.0 and e["train_loss"]["soft"] > 0 for e in rec["epochs"])


def test_augment_shift_of_older_configs_is_the_shift_augmentation():
    old = validate({"data": {"augment_shift": 2}})
    new = validate({"data": {"augment": [{"name": "shift", "max": 2}]}})
    assert old.data.augment == new.data.augment == [{"name": "shift", "max": 2}]
    assert same_config({"data": {"augment_shift": 2}}, new) and not same_config({"data": {"augment_shift": 1}}, new)
    with pytest.raises(dk.ConfigError, match="augment_shift must be >= 0"):
        validate({"data": {"augment_shift": -1}})
    with pytest.raises(dk.ConfigError, match="unknown augmentation 'flip'"):
        validate({"data": {"augment": [{"name": "flip"}]}})


def test_the_readme_augmentation_examples_are_valid_configs():
    import re

    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Augmentation.*?```yaml\n(.*?)```", readme, flags=re.S).group(1)
    chunks = re.split(r"\n(?=data:)", block.strip())
    assert len(chunks) == 3
    for chunk in chunks:
        cfg = validate(yaml.safe_load(chunk))
        assert cfg.data.augment and all("name" in a for a in cfg.data.augment)


def test_dk_distill_with_augment_teaches_consistently_and_records_it(tmp_path):
    """The Python route: ``dk.distill(..., augment=[...])`` runs the live teacher on each augmented batch (no cache)
    and the run record names the augmentation."""
    import json

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(300, 64, generator=g), torch.randint(0, 10, (300,), generator=g)
    student, teacher = Spy(seed=0), Spy(always=True, seed=1)
    dk.distill(student, teacher, x, y, epochs=1, batch_size=50, augment=[{"name": "shift", "max": 2}],
               augment_shape=[1, 8, 8], out_dir=str(tmp_path / "run"), progress=False)
    steps = -(-270 // 50)  # 10% held out for validation
    assert len(student.seen) == steps
    for s, t in zip(student.seen, teacher.seen[-steps:]):
        assert torch.equal(s, t)
    assert not any(torch.equal(s, x[: len(s)]) for s in student.seen)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["config"]["data"]["augment"] == [{"name": "shift", "max": 2}]
    assert rec["config"]["distill"]["cache"] is False
