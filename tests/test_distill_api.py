"""``dk.distill``: any module, from tensors, a Dataset or a DataLoader, through the engine; bad input is a
clear error before anything trains."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import darkknowledge as dk


class TinyCNN(torch.nn.Module):
    """A user's own model, not in the registry."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _data(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    x[torch.arange(n), 0, y * 2, y * 2] += 3.0  # a pixel that tells the class
    return x, y


def _acc(model, x, y):
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def teacher():
    x, y = _data(seed=1)
    return dk.distill(TinyCNN(), None, x, y, epochs=8, lr=3e-3, progress=False)


def test_labels_only_then_distil_from_a_dataloader(teacher, tmp_path):
    x, y = _data(seed=2)
    assert _acc(teacher, x, y) > 0.9
    loader = DataLoader(TensorDataset(x, y), batch_size=50, shuffle=False)
    student = dk.distill(TinyCNN(), teacher, loader, temperature=4.0, epochs=6, lr=3e-3, progress=False,
                         out_dir=str(tmp_path / "run"))
    assert _acc(student, x, y) > 0.85
    import json

    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["config"]["method_args"]["temperature"] == 4.0 and len(rec["epochs"]) == 6
    # the run folder records the student by import path, and the selected weights are the student's
    meta = dk.models.read_model_meta(tmp_path / "run" / "best.safetensors")
    assert meta["darkknowledge_model"]["name"].endswith(":TinyCNN")
    from safetensors.torch import load_file

    best = load_file(tmp_path / "run" / "best.safetensors")
    assert all(torch.equal(best[k], v) for k, v in student.state_dict().items())


def test_dataset_and_tensor_inputs_give_the_same_student(teacher):
    x, y = _data(seed=3)
    torch.manual_seed(0)
    a = dk.distill(TinyCNN(), teacher, x, y, epochs=2, progress=False)
    torch.manual_seed(0)
    b = dk.distill(TinyCNN(), teacher, TensorDataset(x, y), epochs=2, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_unlabelled_transfer_set_uses_soft_targets_only(teacher):
    x, y = _data(seed=4)
    student = dk.distill(TinyCNN(), teacher, x, epochs=4, lr=3e-3, progress=False)
    assert _acc(student, x, y) > 0.8


@pytest.mark.parametrize("kwargs, match", [
    ({"x": torch.zeros(0, 1, 8, 8), "y": torch.zeros(0, dtype=torch.long)}, "empty"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -4}, "batch_size"),
    ({"y": torch.zeros(601, dtype=torch.long)}, "examples but y has"),
    ({"y": torch.full((600,), 7)}, "labels go up to 7"),
    ({"x": [1, 2, 3]}, "expected a tensor, a Dataset or a DataLoader"),
    ({"temperature": 0.0}, "temperature"),
])
def test_bad_arguments_are_clear_errors(teacher, kwargs, match):
    x, y = _data()
    args = {"x": x, "y": y, **kwargs}
    student = TinyCNN()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises((ValueError, dk.ConfigError), match=match):
        dk.distill(student, teacher, args.pop("x"), args.pop("y"), progress=False, **args)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_distiller_takes_a_plain_module(teacher):
    x, y = _data()
    d = dk.Distiller(TinyCNN(), teacher, dk.DistillationObjective(temperature=2.0))
    logits, losses = d(x[:8], y[:8])
    assert logits.shape == (8, 3) and set(losses) == {"soft", "hard"}


class WideCNN(TinyCNN):
    """A user's model whose constructor needs an argument."""

    def __init__(self, width: int, num_classes: int = 3):
        super().__init__(num_classes)
        self.conv = torch.nn.Conv2d(1, width, 3)
        self.fc = torch.nn.Linear(width * 6 * 6, num_classes)


def test_a_given_student_reloads_through_its_init_args(teacher, tmp_path):
    """A module passed in is saved by import path with its ``init_args``; without them ``load_model`` says
    how to fix it in one line instead of a bare TypeError."""
    x, y = _data(seed=5)
    s = WideCNN(5)
    s.init_args = {"width": 5}
    dk.distill(s, teacher, x, y, epochs=1, progress=False, out_dir=str(tmp_path / "with"))
    back = dk.models.load_model(tmp_path / "with" / "best.safetensors")
    assert isinstance(back, WideCNN) and back.conv.out_channels == 5
    dk.distill(WideCNN(5), teacher, x, y, epochs=1, progress=False, out_dir=str(tmp_path / "without"))
    with pytest.raises(dk.models.ModelFileError, match="init_args"):
        dk.models.load_model(tmp_path / "without" / "best.safetensors")
