"""A user's own data from a YAML config alone: IDX (gzipped or not), NPZ, NPY, an image folder and CSV,
written here from an MNIST subset without checksums, trained through the CLI."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import darkknowledge as dk
from darkknowledge.data.common import ChecksumError
from darkknowledge.data.files import DatasetFormatError, load_files

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


@pytest.fixture
def subset(shared_data):
    s = dk.data.load_dataset("mnist", shared_data, val_size=0)
    x = (s.train.x[:600].reshape(600, 28, 28) * 255).round().to(torch.uint8).numpy()
    xt = (s.test.x[:200].reshape(200, 28, 28) * 255).round().to(torch.uint8).numpy()
    return x, s.train.y[:600].numpy(), xt, s.test.y[:200].numpy()


def _idx(path: Path, a: np.ndarray, gz: bool) -> None:
    data = struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _write(fmt: str, d: Path, subset) -> dict:
    x, y, xt, yt = subset
    if fmt in ("idx", "idx-gz"):
        gz = fmt == "idx-gz"
        files = {}
        for k, a in (("train_images", x), ("train_labels", y), ("test_images", xt), ("test_labels", yt)):
            files[k] = str(d / (k + (".gz" if gz else "")))
            _idx(Path(files[k]), a, gz)
        return {"format": "idx", "files": files}
    if fmt == "npz":
        np.savez(d / "train.npz", x=x, y=y)
        np.savez(d / "test.npz", x=xt, y=yt)
        return {"format": "npz", "files": {"train": str(d / "train.npz"), "test": str(d / "test.npz")}}
    if fmt == "npy":
        files = {}
        for k, a in (("train_x", x), ("train_y", y), ("test_x", xt), ("test_y", yt)):
            np.save(d / f"{k}.npy", a)
            files[k] = str(d / f"{k}.npy")
        return {"format": "npy", "files": files}
    if fmt == "images":
        from PIL import Image

        names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
        for split, xs, ys in (("train", x, y), ("test", xt, yt)):
            for i, (img, lab) in enumerate(zip(xs, ys)):
                (d / split / names[lab]).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).resize((20, 20)).save(d / split / names[lab] / f"{i}.png")
        return {"format": "images", "files": {"train": str(d / "train"), "test": str(d / "test")},
                "image_size": 28}
    if fmt == "csv":
        pd = pytest.importorskip("pandas")
        for split, xs, ys in (("train", x, y), ("test", xt, yt)):
            df = pd.DataFrame(xs.reshape(len(xs), -1)[:, ::4] / 255.0)
            df.columns = [f"p{i}" for i in range(df.shape[1])]
            df["digit"] = [f"d{v}" for v in ys]
            df.to_csv(d / f"{split}.csv", index=False)
        return {"format": "csv", "files": {"train": str(d / "train.csv"), "test": str(d / "test.csv")},
                "label_column": "digit"}
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["idx", "idx-gz", "npz", "npy", "images", "csv"])
def test_train_from_a_yaml_config_alone(fmt, subset, tmp_path):
    data = _write(fmt, tmp_path, subset)
    in_features = 196 if fmt == "csv" else 784
    cfg = {"name": f"mine-{fmt}", "epochs": 3, "batch_size": 50, "threads": 1,
           "model": {"name": "mlp", "args": {"in_features": in_features, "hidden": [64]}},
           "data": {"dataset": f"my-{fmt}", "val_size": 100, **data},
           "optim": {"name": "adam", "lr": 2e-3, "schedule": "constant"}, "out_dir": str(tmp_path / "run")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "darkknowledge", "train", "--config", str(tmp_path / "c.yaml"),
                        "--no-progress"], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["dataset"]["name"] == f"my-{fmt}"
    assert (rec["dataset"]["train"], rec["dataset"]["val"], rec["dataset"]["test"]) == (500, 100, 200)
    assert rec["final"]["test"]["accuracy"] > 0.4  # 10 classes: chance (or scrambled labels) is 0.1
    if fmt == "images":
        assert rec["dataset"]["class_names"][:3] == ["eight", "five", "four"]  # sorted folder names
    if fmt == "csv":
        assert rec["dataset"]["class_names"] == [f"d{i}" for i in range(10)]


def test_checksums_are_checked_only_when_given(subset, tmp_path):
    data = _write("npz", tmp_path, subset)
    raw, names = load_files("npz", data["files"])
    assert raw["train"][0].shape == (600, 1, 28, 28) and names is None  # the channel axis of built-in mnist
    assert float(raw["train"][0].max()) <= 1.0  # uint8 scaled
    good = dk.data.common.sha256_file(data["files"]["train"])
    load_files("npz", data["files"], {"train": good})
    with pytest.raises(ChecksumError, match="data.sha256.train"):
        load_files("npz", data["files"], {"train": "0" * 64})


@pytest.mark.parametrize("files, match", [
    ({"train": "a.npz"}, "missing: test"),
    ({"train": "a.npz", "test": "b.npz", "val": "c.npz"}, "unknown: val"),
])
def test_bad_file_sets_are_clear_errors(files, match):
    with pytest.raises(DatasetFormatError, match=match):
        load_files("npz", files)


def test_files_without_a_format_are_a_config_error():
    with pytest.raises(dk.ConfigError, match="data.format"):
        dk.config.validate({"data": {"files": {"train": "x"}}})


def test_the_readme_yaml_example_trains(subset, tmp_path):
    """The README's own-data example, verbatim but for the file paths (written here from an MNIST subset)."""
    import re

    readme = (REPO / "README.md").read_text()
    block = re.search(r"```yaml\n(# my_digits\.yaml.*?)```", readme, flags=re.S).group(1)
    cfg = yaml.safe_load(block)
    data = _write("idx-gz", tmp_path, subset)
    assert set(cfg["data"]["files"]) == set(data["files"])
    cfg["data"]["files"] = data["files"]
    cfg["data"]["val_size"] = 100
    cfg["epochs"] = 2
    cfg["out_dir"] = str(tmp_path / "run")
    (tmp_path / "my_digits.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "darkknowledge", "train", "--config", str(tmp_path / "my_digits.yaml"),
                        "--no-progress"], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["dataset"]["name"] == "my-digits"


@pytest.mark.slow  # end-to-end tier: CLI subprocesses that train
def test_a_model_named_by_import_path_trains_and_reloads_from_the_cli(tmp_path):
    """`model: {name: "mymodels:TinyNet"}`: the CLI builds the user's class, and `evaluate` rebuilds it from
    the saved file (which records the import path and arguments)."""
    (tmp_path / "mymodels.py").write_text(
        "import torch\n\n"
        "class TinyNet(torch.nn.Module):\n"
        "    def __init__(self, num_classes=10, width=16):\n"
        "        super().__init__()\n"
        "        self.num_classes = num_classes\n"
        "        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.ReLU(),\n"
        "                                       torch.nn.Linear(width, num_classes))\n\n"
        "    def forward(self, x):\n"
        "        return self.net(x)\n")
    cfg = {"name": "tiny", "epochs": 3, "batch_size": 64, "model": {"name": "mymodels:TinyNet", "args": {"width": 24}},
           "data": {"dataset": "digits", "val_size": 200}, "out_dir": str(tmp_path / "run")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ENV['PYTHONPATH']}"}
    r = subprocess.run([sys.executable, "-m", "darkknowledge", "train", "--config", "c.yaml", "--no-progress"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    meta = dk.models.read_model_meta(tmp_path / "run" / "best.safetensors")["darkknowledge_model"]
    assert meta == {"name": "mymodels:TinyNet", "args": {"width": 24, "num_classes": 10}}
    r = subprocess.run([sys.executable, "-m", "darkknowledge", "evaluate", "run/best.safetensors", "--dataset", "digits",
                        "--json", "m.json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "m.json").read_text())["run/best.safetensors"]
    assert got["accuracy"] == json.loads((tmp_path / "run" / "run.json").read_text())["final"]["test"]["accuracy"]
