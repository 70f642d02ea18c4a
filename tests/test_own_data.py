"""Issue 25's Done-when: your own data, all the way. IDX, image-folder and Hugging Face ``datasets`` copies of
a small MNIST subset; a ``small_cnn`` teacher → ``mlp`` student with augmentation through the CLI; both scored
by ``evaluate --config``; and the same through ``dk.distill`` with a DataLoader whose batch size and
shuffling are checked in ``run.json``."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

import darkknowledge as dk
from darkknowledge.cli import main

N_TRAIN, N_TEST = 400, 100


@pytest.fixture
def subset(shared_data) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = dk.data.load_dataset("mnist", shared_data, val_size=0, download=False)
    as8 = lambda x: (x.reshape(len(x), 28, 28) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    return as8(s.train.x[:N_TRAIN]), s.train.y[:N_TRAIN].numpy(), as8(s.test.x[:N_TEST]), s.test.y[:N_TEST].numpy()


def _idx(path: Path, a: np.ndarray) -> str:
    path.write_bytes(gzip.compress(struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
                                   + a.astype(np.uint8).tobytes()))
    return str(path)


def write_copy(fmt: str, d: Path, subset) -> dict:
    """The data section of a config naming a ``fmt`` copy of the subset written under ``d``."""
    x, y, xt, yt = subset
    d.mkdir(parents=True, exist_ok=True)
    if fmt == "idx":
        return {"format": "idx", "files": {
            "train_images": _idx(d / "train-images.gz", x), "train_labels": _idx(d / "train-labels.gz", y),
            "test_images": _idx(d / "test-images.gz", xt), "test_labels": _idx(d / "test-labels.gz", yt)}}
    if fmt == "images":
        from PIL import Image

        for split, xs, ys in (("train", x, y), ("test", xt, yt)):
            for i, (img, lab) in enumerate(zip(xs, ys)):
                (d / split / f"digit{lab}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(d / split / f"digit{lab}" / f"{i}.png")
        return {"format": "images", "files": {"train": str(d / "train"), "test": str(d / "test")}}
    if fmt == "hf":
        datasets = pytest.importorskip("datasets")
        from PIL import Image

        feats = datasets.Features({"image": datasets.Image(),
                                   "label": datasets.ClassLabel(names=[f"digit{i}" for i in range(10)])})
        dd = datasets.DatasetDict({split: datasets.Dataset.from_dict(
            {"image": [Image.fromarray(a) for a in xs], "label": ys.tolist()}, features=feats)
            for split, xs, ys in (("train", x, y), ("test", xt, yt))})
        dd.save_to_disk(str(d / "hf"))
        return {"format": "hf", "files": {"path": str(d / "hf")}}
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["idx", "images", "hf"])
def test_a_cnn_teacher_and_mlp_student_on_your_files_through_the_cli(fmt, subset, tmp_path, capsys):
    data = {"dataset": f"my-{fmt}", "val_size": 100, **write_copy(fmt, tmp_path / "data", subset),
            "augment": [{"name": "shift", "max": 2}]}
    common = {"epochs": 1, "batch_size": 50, "threads": 1, "data": data,
              "optim": {"name": "adam", "lr": 2e-3, "schedule": "constant"}}
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(
        {**common, "name": "teacher", "model": {"name": "small_cnn", "args": {}}}))
    (tmp_path / "student.yaml").write_text(yaml.safe_dump(
        {**common, "name": "student", "model": {"name": "mlp", "args": {"hidden": [64]}}}))
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert main(["train", "--config", str(tmp_path / "teacher.yaml"), "--out", str(teacher), "--no-progress"]) == 0
    assert main(["distill", "--config", str(tmp_path / "student.yaml"), "--teacher", str(teacher / "best.safetensors"),
                 "--out", str(student), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "teacher (best.safetensors)" in out and "| student" in out  # the teacher's row beside the student's
    rec = json.loads((student / "run.json").read_text())
    assert rec["dataset"]["input_shape"] == [1, 28, 28]  # the built-in mnist layout: a channel axis
    assert rec["config"]["data"]["augment"][0]["name"] == "shift"
    if fmt != "idx":
        assert rec["dataset"]["class_names"] == [f"digit{i}" for i in range(10)]
    # evaluate --config: both models on the data the config names, with calibration and agreement
    assert main(["evaluate", str(teacher / "best.safetensors"), str(student / "best.safetensors"), "--config",
                 str(tmp_path / "student.yaml"), "--teacher", str(teacher / "best.safetensors"),
                 "--json", str(tmp_path / "m.json")]) == 0
    table = capsys.readouterr().out
    assert f"my-{fmt} test split ({N_TEST} examples)" in table and "| ece" in table and "| agreement" in table
    got = json.loads((tmp_path / "m.json").read_text())
    assert got[str(student / "best.safetensors")]["accuracy"] == rec["final"]["test"]["accuracy"]
    assert got[str(teacher / "best.safetensors")]["agreement"] == 1.0
    # the same data through --data keys instead of a config file
    keys = [f"{k}={v}" for k, v in data["files"].items()]
    assert main(["evaluate", str(student / "best.safetensors"), "--data", f"format={data['format']}",
                 "val_size=100", *(f"files.{k}" for k in keys), "--json", str(tmp_path / "m2.json")]) == 0
    again = json.loads((tmp_path / "m2.json").read_text())[str(student / "best.safetensors")]
    assert again == {k: v for k, v in got[str(student / "best.safetensors")].items() if k in again}
    assert f"{data['format']} files test split" in capsys.readouterr().out


def test_the_same_through_dk_distill_with_a_dataloader(subset, tmp_path):
    x, y, xt, yt = subset
    to_x = lambda a: torch.from_numpy(a).float().unsqueeze(1) / 255  # noqa: E731
    train = TensorDataset(to_x(x), torch.from_numpy(y).long())
    teacher = dk.distill(dk.create_model("small_cnn", num_classes=10), None,
                         DataLoader(train, batch_size=50, shuffle=True), epochs=1, progress=False)
    loader = DataLoader(train, batch_size=40, shuffle=True)
    student = dk.create_model("mlp", hidden=[64], num_classes=10)
    dk.distill(student, teacher, loader, test=(TensorDataset(to_x(xt), torch.from_numpy(yt).long())), epochs=2,
               progress=False, out_dir=str(tmp_path / "run"))
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert rec["config"]["batch_size"] == 40 and rec["data_loader"]["batch_size"] == 40
    assert rec["data_loader"]["shuffle"] is True and rec["data_loader"]["sampler"] == "RandomSampler"
    assert rec["config"]["model"] == {"name": "mlp", "args": {"hidden": [64], "num_classes": 10}}  # the real model
    assert rec["dataset"]["input_shape"] == [1, 28, 28]
    assert (rec["dataset"]["train"], rec["dataset"]["val"], rec["dataset"]["test"]) == (360, 40, N_TEST)


def test_a_datasets_parquet_export_reads_like_its_folder(subset, tmp_path):
    """``ds.to_parquet`` keeps the images as encoded bytes and the ClassLabel names in the schema: the
    ``parquet`` format gives the tensors and names of the ``hf`` folder it came from."""
    datasets = pytest.importorskip("datasets")
    from darkknowledge.data.files import load_files

    data = write_copy("hf", tmp_path, subset)
    dd = datasets.load_from_disk(data["files"]["path"])
    for split in ("train", "test"):
        dd[split].to_parquet(str(tmp_path / f"{split}.parquet"))
    a, names_a = load_files("hf", data["files"])
    b, names_b = load_files("parquet", {s: str(tmp_path / f"{s}.parquet") for s in ("train", "test")})
    assert names_a == names_b == [f"digit{i}" for i in range(10)]
    for split in ("train", "test"):
        assert torch.equal(a[split][0], b[split][0]) and torch.equal(a[split][1], b[split][1])
    x, y, _, _ = subset
    assert torch.equal(a["train"][0], torch.from_numpy(x).float().unsqueeze(1) / 255)  # the pixel rule, NCHW
