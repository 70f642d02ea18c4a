"""A user's own data is checked before anything trains (issue 26, item 3): each case a one-line error or
warning naming the file, or the documented layout / scaling / label rule — a table test."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import darkknowledge as dk
from darkknowledge.data.checks import DatasetFormatError
from darkknowledge.data.files import load_files

RNG = np.random.default_rng(0)


def _npz(d: Path, x, y, xt=None, yt=None) -> dict:
    np.savez(d / "train.npz", x=x, y=y)
    np.savez(d / "test.npz", x=x[:6] if xt is None else xt, y=y[:6] if yt is None else yt)
    return {"train": str(d / "train.npz"), "test": str(d / "test.npz")}


def _csv(d: Path, x, y, yt=None) -> dict:
    pd = pytest.importorskip("pandas")
    for split, xs, ys in (("train", x, y), ("test", x[:6], y[:6] if yt is None else yt)):
        df = pd.DataFrame(xs.reshape(len(xs), -1), columns=[f"f{i}" for i in range(int(np.prod(xs.shape[1:])))])
        df["label"] = ys
        df.to_csv(d / f"{split}.csv", index=False)
    return {"train": str(d / "train.csv"), "test": str(d / "test.csv")}


def _images(d: Path, empty: bool) -> dict:
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (d / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(RNG.integers(0, 256, (6, 6), dtype=np.uint8)).save(d / split / c / f"{i}.png")
    if empty:
        (d / "train" / "emu").mkdir()
    return {"train": str(d / "train"), "test": str(d / "test")}


X8 = RNG.integers(0, 256, (20, 4, 4)).astype(np.uint8)
Y = np.arange(20) % 4

# (case, format, writer(dir) -> files, ("error" | "warning" | "ok", message pattern or None))
CASES = [
    ("labels 1..C are mapped, not C+1 classes", "npz", lambda d: _npz(d, X8, Y + 1), ("warning", r"do not start at 0")),
    ("labels with a gap", "npz", lambda d: _npz(d, X8, np.where(Y == 2, 7, Y)), ("warning", r"have gaps \(no \[2")),
    ("a class only in the test file", "npz", lambda d: _npz(d, X8, Y, yt=np.array([0, 1, 2, 3, 9, 0])),
     ("error", r"test.npz: labels \[9\] never occur in the training file .*train.npz")),
    ("fractional labels", "npz", lambda d: _npz(d, X8, Y + 0.5), ("error", r"train.npz: labels must be class ids")),
    ("NaN labels", "npz", lambda d: _npz(d, X8, np.where(Y == 0, np.nan, Y)), ("error", r"train.npz: labels include NaN")),
    ("two labels per example", "npz", lambda d: _npz(d, X8, np.stack([Y, Y], 1)), ("error", r"labels of shape \(20, 2\)")),
    ("one value per example", "npz", lambda d: _npz(d, X8[:, 0, 0], Y), ("error", r"train.npz: inputs of shape \(20,\)")),
    ("train and test shapes differ", "npz", lambda d: _npz(d, X8, Y, xt=X8[:6, :3], yt=Y[:6]),
     ("error", r"test.npz: inputs of shape \(1, 3, 4\) but the training file .*\(1, 4, 4\)")),
    ("0..255 integers in a CSV: the pixel rule", "csv", lambda d: _csv(d, X8.astype(np.int64), Y),
     ("warning", r"train.csv, .*test.csv: integer inputs in 0..255 are taken as 8-bit pixels")),
    ("0..255 floats in a CSV: as they are, warned", "csv", lambda d: _csv(d, X8.astype(np.float32) + 0.5, Y),
     ("warning", r"inputs range over \[0.5, 25\d.5\] and are used as they are")),
    ("NaN inputs", "npz", lambda d: _npz(d, np.where(np.arange(X8.size).reshape(X8.shape) == 50, np.nan, X8), Y),
     ("error", r"train.npz: inputs include NaN or inf \(e.g. at example 3\)")),
    ("a CSV with only its label column", "csv", lambda d: _csv(d, X8[:, :0, :0], Y),
     ("error", r"train.csv: no feature columns beside the label column 'label'")),
    ("an empty class folder", "images", lambda d: _images(d, True), ("error", r"class folders \['emu'\] hold no images")),
    ("integer labels 0..C-1: as they are", "npz", lambda d: _npz(d, X8, Y), ("ok", None)),
]


@pytest.mark.parametrize("case, fmt, write, expect", CASES, ids=[c[0] for c in CASES])
def test_own_data_case(case, fmt, write, expect, tmp_path, caplog):
    files = write(tmp_path)
    kind, pattern = expect
    if kind == "error":
        with pytest.raises(DatasetFormatError, match=pattern) as e:
            load_files(fmt, files)
        assert "\n" not in str(e.value)  # one line
        return
    with caplog.at_level(logging.WARNING, logger="darkknowledge"):
        load_files(fmt, files)
    got = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if kind == "ok":
        assert got == []
    else:
        assert any(__import__("re").search(pattern, m) for m in got), got
        assert all("\n" not in m for m in got)


def test_labels_one_to_ten_become_ten_classes_named_by_their_ids(tmp_path):
    raw, names = load_files("npz", _npz(tmp_path, X8, Y + 1))
    assert names == ["1", "2", "3", "4"] and raw["train"][1].tolist() == Y.tolist()


def test_csv_and_npz_of_the_same_numbers_give_the_same_tensors(tmp_path):
    """The scaling rule looks at values and type, not the file format: uint8 NPZ = integer CSV."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    flat = X8.reshape(20, -1)
    npz, _ = load_files("npz", _npz(tmp_path / "a", flat, Y))
    csv, _ = load_files("csv", _csv(tmp_path / "b", flat.astype(np.int64), Y))
    assert torch.equal(npz["train"][0], csv["train"][0])
    assert torch.equal(npz["train"][0], torch.from_numpy(flat.astype(np.float32)) / 255)  # the rule's formula


def test_layout_channel_axis_for_every_image_array(tmp_path):
    """[N, H, W] → [N, 1, H, W]; channels-last [N, H, W, 3] → [N, 3, H, W]; [N, F] stays."""
    raw, _ = load_files("npz", _npz(tmp_path, X8, Y))
    assert raw["train"][0].shape == (20, 1, 4, 4)
    rgb = RNG.integers(0, 256, (20, 5, 5, 3)).astype(np.uint8)
    raw, _ = load_files("npz", _npz(tmp_path, rgb, Y))
    assert raw["train"][0].shape == (20, 3, 5, 5)
    assert torch.equal(raw["train"][0][3, :, 1, 2], torch.from_numpy(rgb[3, 1, 2].astype(np.float32)) / 255)
    raw, _ = load_files("npz", _npz(tmp_path, X8.reshape(20, 16), Y))
    assert raw["train"][0].shape == (20, 16)


class Twelve(torch.nn.Module):
    """A user's model that ignores ``num_classes`` (12 outputs whatever the data)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc = torch.nn.Linear(16, 12)

    def forward(self, x):
        return self.fc(x)


class Pair(Twelve):
    """A user's model that returns (logits, features)."""

    def forward(self, x):
        return self.fc(x), x


def _cfg(tmp_path: Path, files: dict, **over) -> dk.TrainConfig:
    d = {"epochs": 1, "batch_size": 8, "threads": 1, "out_dir": str(tmp_path / "run"),
         "model": {"name": "mlp", "args": {"in_features": 16, "hidden": [8]}},
         "data": {"dataset": "mine", "format": "npz", "files": files, "val_size": 4}}
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    return dk.config.validate(d)


@pytest.mark.parametrize("over, match", [
    ({"model": {"args": {"in_features": 16, "hidden": [8], "num_classes": 6}}},
     r"model has 6 outputs but the dataset has 4 classes"),
    ({"data": {"augment": [{"name": "shift", "max": 1}]}}, r"shift: needs an image shape"),
    ({"model": {"name": "small_cnn", "args": {}}}, r"the student \(small_cnn\) cannot take 'mine' inputs of shape \(16,\)"),
    ({"model": {"name": "test_own_data_checks:Twelve", "args": {}}},
     r"the student \(test_own_data_checks:Twelve\) returns 12 outputs but 'mine' has 4 classes"),
    ({"model": {"name": "test_own_data_checks:Pair", "args": {}}}, r"returns a tuple, not a tensor of logits"),
])
def test_refused_before_the_run_folder_exists(tmp_path, over, match):
    files = _npz(tmp_path, X8.reshape(20, 16), Y)  # flat features: no image shape
    with pytest.raises(ValueError, match=match):
        dk.train(_cfg(tmp_path, files, **over), progress=False)
    assert not (tmp_path / "run").exists()


def test_idx_images_take_every_registered_image_model_and_augmentation(tmp_path):
    """The issue's first point: IDX images had no channel axis, so small_cnn was refused and a shift crashed
    inside the loop; now the layout is the built-in one and both train; run.json records the shape."""
    import gzip
    import json
    import struct

    def idx(path: Path, a: np.ndarray) -> str:
        path.write_bytes(gzip.compress(struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
                                       + a.astype(np.uint8).tobytes()))
        return str(path)

    x = RNG.integers(0, 256, (40, 28, 28)).astype(np.uint8)
    y = np.arange(40) % 10
    files = {"train_images": idx(tmp_path / "tri.gz", x), "train_labels": idx(tmp_path / "trl.gz", y),
             "test_images": idx(tmp_path / "tei.gz", x[:10]), "test_labels": idx(tmp_path / "tel.gz", y[:10])}
    cfg = dk.config.validate({"epochs": 1, "batch_size": 16, "threads": 1, "out_dir": str(tmp_path / "run"),
                              "model": {"name": "small_cnn", "args": {}},
                              "data": {"dataset": "idx", "format": "idx", "files": files, "val_size": 10,
                                       "augment": [{"name": "shift", "max": 2}]}})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch UserWarning on loading IDX files
        dk.train(cfg, progress=False)
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["dataset"]["input_shape"] == [1, 28, 28]
