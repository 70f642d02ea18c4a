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


@pytest.mark.parametrize("student, teacher_is, x_of, y_of, match", [
    ("mlp", "module", None, None, r"student must be a torch.nn.Module instance, got str 'mlp' — build it with dk.create"),
    (TinyCNN, "module", None, None, r"got the class TinyCNN — pass TinyCNN\(...\)"),
    (None, "path", None, None, r"teacher must be a torch.nn.Module.*got str .*dk.load_model"),
    (None, "module", lambda x: [1, 2, 3], None, r"x: expected a tensor or numpy array"),
    (None, "module", None, lambda y: "labels", r"labels must be a tensor of integer class ids, got str"),
    (None, "module", None, lambda y: ["a"] * len(y), r"got strings — map the names to ids"),
    (None, "module", None, lambda y: y.to(torch.uint8), r"got torch.uint8 .*mask.* y.long\(\)"),
    (None, "module", None, lambda y: y.float(), r"got torch.float32"),
])
def test_wrong_types_are_type_errors_that_say_what_was_expected(teacher, student, teacher_is, x_of, y_of, match):
    x, y = _data()
    t = teacher if teacher_is == "module" else "teacher.safetensors"
    with pytest.raises(TypeError, match=match):
        dk.distill(TinyCNN() if student is None else student, t, x_of(x) if x_of else x, y_of(y) if y_of else y,
                   epochs=1, progress=False)


def test_train_refuses_a_dict_for_config_and_splits():
    with pytest.raises(TypeError, match="cfg must be a darkknowledge.TrainConfig, got dict"):
        dk.train({"epochs": 1})
    with pytest.raises(TypeError, match="splits must be a darkknowledge.data.Splits"):
        dk.train(dk.TrainConfig(), splits={"train": None})
    x, y = _data(n=40)
    part = dk.data.TensorData(x, y.to(torch.uint8))
    with pytest.raises(TypeError, match=r"splits.train.y: labels must be integer class ids .*uint8"):
        dk.train(dk.TrainConfig(), splits=dk.data.Splits(part, part, part, 3, "mine"))


class _Noisy(torch.utils.data.Dataset):
    """A dataset with a random per-item transform (a fresh draw each time an item is read); counts its reads."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i] + 0.01 * torch.randn_like(self.x[i]), self.y[i]


def test_a_dataloader_is_used_as_given_and_recorded(teacher, tmp_path):
    """Batch size, shuffling and the dataset's transforms apply every epoch (the loader is iterated afresh
    each epoch), the schedule and weight decay are the ones asked for, and run.json says so."""
    import json

    from darkknowledge.data.convert import LoaderData

    x, y = _data(n=300, seed=6)
    data = _Noisy(x, y)
    loader = DataLoader(data, batch_size=64, shuffle=True, drop_last=True)
    out = tmp_path / "run"
    dk.distill(TinyCNN(), teacher, loader, val=torch.utils.data.TensorDataset(x[:60], y[:60]), epochs=2,
               schedule="cosine", weight_decay=1e-3, progress=False, out_dir=str(out))
    assert data.reads == 2 * 256  # one pass per epoch (the first is also the checks' and shapes'); drop_last: 4 × 64
    rec = json.loads((out / "run.json").read_text())
    assert rec["config"]["batch_size"] == 64
    assert rec["config"]["optim"]["schedule"] == "cosine" and rec["config"]["optim"]["weight_decay"] == 1e-3
    assert rec["data_loader"]["batch_size"] == 64 and rec["data_loader"]["shuffle"] is True
    assert rec["data_loader"]["drop_last"] is True and rec["data_loader"]["dataset"] == "_Noisy"
    assert rec["dataset"]["train"] == 256
    assert rec["config"]["distill"]["cache"] is False  # the teacher runs live on each epoch's batches
    assert rec["config"]["model"]["name"].endswith(":TinyCNN")
    # each epoch is a fresh pass (another order, other transform draws); an epoch read again is identical
    ld = LoaderData.of(loader, seed=0)
    (e1, _), _ = ld.epoch_data(0, 1)
    assert torch.equal(ld.epoch_data(0, 1)[0][0], e1) and not torch.equal(ld.epoch_data(0, 2)[0][0], e1)


def test_a_dataloader_batch_size_conflict_and_split_validation(teacher, tmp_path):
    import json

    x, y = _data(n=200, seed=7)
    loader = DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=False)
    with pytest.raises(ValueError, match="batch_size=16 but the DataLoader's batch size is 32"):
        dk.distill(TinyCNN(), teacher, loader, batch_size=16, epochs=1, progress=False)
    dk.distill(TinyCNN(), teacher, loader, epochs=1, progress=False, out_dir=str(tmp_path / "r"))
    rec = json.loads((tmp_path / "r" / "run.json").read_text())
    assert (rec["dataset"]["train"], rec["dataset"]["val"]) == (180, 20)  # a seeded 10% held out
    assert rec["data_loader"]["shuffle"] is False and "validation" in rec["data_loader"]


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_three_part_items_and_wrong_output_counts_are_refused(teacher):
    x, y = _data(n=100)
    flagged = _Items([(x[i], 0, y[i]) for i in range(100)])
    with pytest.raises(ValueError, match=r"\(input, label\) pairs, got 3 part"):
        dk.distill(TinyCNN(), teacher, flagged, epochs=1, progress=False)
    with pytest.raises(ValueError, match="the teacher has 3 outputs but the student has 5"):
        dk.distill(TinyCNN(num_classes=5), teacher, x, y, epochs=1, progress=False)


def test_a_script_model_warns_at_save_time(tmp_path, caplog):
    """A class defined in ``__main__`` is saved as ``__main__:Cls``: a warning with the fix, once."""
    x, y = _data(n=100)
    Local = type("Local", (TinyCNN,), {"__module__": "__main__"})
    with caplog.at_level("WARNING"):
        dk.distill(Local(), None, x, y, epochs=1, progress=False, out_dir=str(tmp_path / "r"))
    hits = [r.getMessage() for r in caplog.records if "defined in the script" in r.getMessage()]
    assert len(hits) == 1 and "move the class into a module" in hits[0]
    with pytest.raises(dk.models.ModelFileError, match="defined in the script"):
        dk.models.load_model(tmp_path / "r" / "best.safetensors")
