"""Data files (IDX reader, locating, checksums, downloads), MNIST loading, shift augmentation and models.

Everything runs on tiny files written by the tests into ``tmp_path``; the real MNIST under
``/work/shared/data`` is loaded only if it exists. ``DARKKNOWLEDGE_DATA`` and the default cache
folder are redirected for every test so nothing outside ``tmp_path`` is read or written.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import darkknowledge.data.common as common
import darkknowledge.data.mnist as mnist
from darkknowledge.data import (
    ENV_VAR,
    ChecksumError,
    DatasetNotFoundError,
    IDXFormatError,
    RemoteFile,
    candidate_dirs,
    load_mnist,
    locate_files,
    read_idx,
)
from darkknowledge.models import (
    ModelFileError,
    apply_max_norm,
    create_model,
    list_models,
    load_model,
    read_model_meta,
    save_model,
)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_data_dirs(tmp_path, monkeypatch):
    """No test sees the real environment variable or ~/.cache/darkknowledge."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(common, "DEFAULT_CACHE", tmp_path / "default_cache")


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def _write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


IMAGES = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4) * 10
LABELS = np.array([7, 0, 9], dtype=np.uint8)


# --------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    """IDX: big-endian magic 0x0000 0x08 ndim, ndim uint32 sizes, then uint8 data — plain and gzipped."""
    suffix = ".gz" if gz else ""
    imgs = read_idx(_write(tmp_path / f"img-idx3-ubyte{suffix}", _idx_bytes(IMAGES), gz))
    labels = read_idx(_write(tmp_path / f"lab-idx1-ubyte{suffix}", _idx_bytes(LABELS), gz))
    assert imgs.dtype == np.uint8 and imgs.shape == (3, 2, 4)
    np.testing.assert_array_equal(imgs, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)
    empty = read_idx(_write(tmp_path / f"empty{suffix}", _idx_bytes(np.zeros((0, 28, 28))), gz))
    assert empty.shape == (0, 28, 28)


def _bad_idx_files(tmp_path: Path) -> dict[str, Path]:
    good = _idx_bytes(IMAGES)
    gz = gzip.compress(good, mtime=0)
    flipped = bytearray(gz)
    flipped[len(flipped) // 2] ^= 0xFF
    bad_dtype = bytearray(good)
    bad_dtype[2] = 0x09  # signed byte: not what we read
    return {
        "truncated": _write(tmp_path / "truncated", good[:-5]),
        "truncated header": _write(tmp_path / "truncated_header", good[:9]),
        "too short": _write(tmp_path / "short", b"\x00\x00"),
        "bad magic": _write(tmp_path / "bad_magic", b"\x12\x34" + good[2:]),
        "bad dtype": _write(tmp_path / "bad_dtype", bytes(bad_dtype)),
        "bad ndim": _write(tmp_path / "bad_ndim", b"\x00\x00\x08\x00" + good[4:]),
        "extra bytes": _write(tmp_path / "extra", good + b"\x00\x01"),
        "header says more": _write(tmp_path / "more", _idx_bytes(IMAGES)[:4] + struct.pack(">III", 4, 2, 4)
                                   + IMAGES.tobytes()),
        "garbage gzip": _write(tmp_path / "garbage.gz", b"this is not gzip at all"),
        "truncated gzip": _write(tmp_path / "trunc.gz", gz[: len(gz) // 2]),
        "corrupt gzip": _write(tmp_path / "flipped.gz", bytes(flipped)),
        "truncated inside gzip": _write(tmp_path / "inner.gz", good[:-3], gz=True),
        "missing": tmp_path / "does_not_exist.gz",
    }


@pytest.mark.parametrize("case", ["truncated", "truncated header", "too short", "bad magic", "bad dtype", "bad ndim",
                                  "extra bytes", "header says more", "garbage gzip", "truncated gzip",
                                  "corrupt gzip", "truncated inside gzip", "missing"])
def test_read_idx_bad_files_raise_with_path(tmp_path, case):
    """Every kind of damage raises IDXFormatError (never a wrong array) and the message names the file."""
    path = _bad_idx_files(tmp_path)[case]
    with pytest.raises(IDXFormatError) as e:
        read_idx(path)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- locate_files


def _toy_files(folder: Path) -> list[RemoteFile]:
    a, b = b"alpha contents\n", b"beta contents\n"
    _write(folder / "a.bin", a)
    _write(folder / "b.bin.gz", b, gz=True)
    return [RemoteFile("a.bin", _sha(a)), RemoteFile("b.bin.gz", _sha(b), gunzip=True)]


@pytest.mark.parametrize("sub", [True, False])
def test_locate_files_in_data_dir(tmp_path, sub):
    """Files are found in data_dir/<dataset> or data_dir itself; sha256 verified (gunzip: of the content)."""
    root = tmp_path / "data"
    folder = root / "toy" if sub else root
    files = _toy_files(folder)
    found = locate_files("toy", files, data_dir=root, download=False)
    assert found == {"a.bin": folder / "a.bin", "b.bin.gz": folder / "b.bin.gz"}


def test_locate_files_env_var(tmp_path, monkeypatch):
    """DARKKNOWLEDGE_DATA (os.pathsep-separated) is searched after data_dir."""
    first, second = tmp_path / "e1", tmp_path / "e2"
    first.mkdir()
    files = _toy_files(second / "toy")
    monkeypatch.setenv(ENV_VAR, f"{first}{__import__('os').pathsep}{second}")
    found = locate_files("toy", files, download=False)
    assert found["a.bin"] == second / "toy" / "a.bin"
    assert candidate_dirs("toy")[:4] == [first / "toy", first, second / "toy", second]
    # an explicit data_dir comes first
    files2 = _toy_files(tmp_path / "explicit")
    found = locate_files("toy", files2, data_dir=tmp_path / "explicit", download=False)
    assert found["a.bin"] == tmp_path / "explicit" / "a.bin"
    assert candidate_dirs("toy", tmp_path / "explicit")[0] == tmp_path / "explicit" / "toy"


def test_missing_dataset_error_names_every_place(tmp_path, monkeypatch):
    """download=False and no files: DatasetNotFoundError naming every directory looked in, the missing file,
    and both ways to provide it (--data-dir, DARKKNOWLEDGE_DATA)."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    files = [RemoteFile("x.idx", None, ("file:///nonexistent/x.idx",))]
    with pytest.raises(DatasetNotFoundError) as e:
        locate_files("toy", files, data_dir=tmp_path / "dd", download=False)
    msg = str(e.value)
    dirs = candidate_dirs("toy", tmp_path / "dd")
    assert len(dirs) == 6
    for d in dirs:
        assert str(d) in msg
    assert "x.idx" in msg and "--data-dir" in msg and ENV_VAR in msg
    assert isinstance(e.value, FileNotFoundError)


def test_wrong_checksum_raises(tmp_path):
    """A local file whose sha256 differs raises ChecksumError naming it (it is never silently replaced)."""
    files = _toy_files(tmp_path / "toy")
    bad = [RemoteFile("a.bin", "0" * 64, ("file:///nowhere",)), files[1]]
    with pytest.raises(ChecksumError) as e:
        locate_files("toy", bad, data_dir=tmp_path, download=True)
    assert str(tmp_path / "toy" / "a.bin") in str(e.value)
    assert (tmp_path / "toy" / "a.bin").read_bytes() == b"alpha contents\n"
    # a gunzip=True file that is not gzip
    _write(tmp_path / "toy2" / "c.gz", b"not gzip")
    with pytest.raises(ChecksumError):
        locate_files("toy2", [RemoteFile("c.gz", "0" * 64, gunzip=True)], data_dir=tmp_path, download=False)
    # verify=False skips the check
    assert locate_files("toy", bad, data_dir=tmp_path, verify=False)["a.bin"] == tmp_path / "toy" / "a.bin"


def test_download_via_file_url(tmp_path):
    """Missing files are fetched from their URLs (file:// here), sha256-verified, into data_dir/<dataset>;
    a dead first mirror falls through to the next."""
    remote = tmp_path / "remote"
    payload = b"\x00\x01downloaded bytes" * 50
    _write(remote / "d.bin", payload)
    rf = RemoteFile("d.bin", _sha(payload), ((remote / "missing.bin").as_uri(), (remote / "d.bin").as_uri()))
    found = locate_files("toy", [rf], data_dir=tmp_path / "data", download=True)
    target = tmp_path / "data" / "toy" / "d.bin"
    assert found == {"d.bin": target}
    assert target.read_bytes() == payload
    assert [p.name for p in target.parent.iterdir()] == ["d.bin"]  # no temp files left
    # found locally the second time (remote removed)
    (remote / "d.bin").unlink()
    assert locate_files("toy", [rf], data_dir=tmp_path / "data", download=True) == {"d.bin": target}


def test_download_gunzip_hash_and_env_target(tmp_path, monkeypatch):
    """With gunzip=True the hash is of the decompressed content (any mirror's gzip matches); without
    data_dir the download goes to the first DARKKNOWLEDGE_DATA folder."""
    content = b"payload" * 100
    _write(tmp_path / "remote" / "f.gz", content, gz=True)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    rf = RemoteFile("f.gz", _sha(content), ((tmp_path / "remote" / "f.gz").as_uri(),), gunzip=True)
    found = locate_files("toy", [rf])
    assert found["f.gz"] == tmp_path / "env" / "toy" / "f.gz"
    assert gzip.decompress(found["f.gz"].read_bytes()) == content


def test_download_with_wrong_hash_leaves_nothing(tmp_path):
    """A download whose sha256 does not match is discarded: DatasetNotFoundError mentions the checksum, and
    neither the file nor a partial file remains."""
    _write(tmp_path / "remote" / "d.bin", b"tampered")
    rf = RemoteFile("d.bin", _sha(b"original"), ((tmp_path / "remote" / "d.bin").as_uri(),))
    with pytest.raises(DatasetNotFoundError) as e:
        locate_files("toy", [rf], data_dir=tmp_path / "data", download=True)
    assert "sha256" in str(e.value)
    target_dir = tmp_path / "data" / "toy"
    assert not (target_dir / "d.bin").exists()
    assert not target_dir.exists() or list(target_dir.iterdir()) == []


# --------------------------------------------------------------------------- MNIST


def _fake_mnist(folder: Path, n_train: int = 5, n_test: int = 3, seed: int = 0) -> dict[str, RemoteFile]:
    """Tiny MNIST-format files; returns RemoteFiles with their (decompressed) hashes, real MNIST names."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    out = {}
    for key, arr in arrays.items():
        name = mnist.MNIST_FILES[key].name
        raw = _idx_bytes(arr)
        _write(folder / name, raw, gz=True)
        out[key] = RemoteFile(name, _sha(raw), (), gunzip=True)
    out["_arrays"] = arrays
    return out


def test_load_mnist_fake_folder(tmp_path, monkeypatch):
    """load_mnist on tiny IDX files (MNIST_FILES patched to their hashes): x float32 [N, 1, 28, 28] = pixels/255,
    y int64, found through data_dir and through DARKKNOWLEDGE_DATA."""
    fake = _fake_mnist(tmp_path / "root" / "mnist")
    arrays = fake.pop("_arrays")
    monkeypatch.setattr(mnist, "MNIST_FILES", fake)
    for kwargs in ({"data_dir": tmp_path / "root"}, {}):
        if not kwargs:
            monkeypatch.setenv(ENV_VAR, str(tmp_path / "root"))
        out = load_mnist(download=False, **kwargs)
        for split, n in (("train", 5), ("test", 3)):
            x, y = out[split]
            assert x.dtype == torch.float32 and x.shape == (n, 1, 28, 28)
            assert y.dtype == torch.int64
            np.testing.assert_allclose(x[:, 0].numpy(), arrays[f"{split}_images"].astype(np.float32) / 255.0)
            np.testing.assert_array_equal(y.numpy(), arrays[f"{split}_labels"])
            assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_load_mnist_checks(tmp_path, monkeypatch):
    """The real hashes reject fake files (ChecksumError); a label > 9 or a count mismatch raises IDXFormatError;
    nothing found raises DatasetNotFoundError."""
    _fake_mnist(tmp_path / "real_hashes" / "mnist")
    with pytest.raises(ChecksumError):
        load_mnist(data_dir=tmp_path / "real_hashes", download=False)
    with pytest.raises(DatasetNotFoundError):
        load_mnist(data_dir=tmp_path / "empty", download=False)

    folder = tmp_path / "bad" / "mnist"
    fake = _fake_mnist(folder)
    fake.pop("_arrays")
    raw = _idx_bytes(np.array([1, 2, 10, 3, 4], dtype=np.uint8))
    _write(folder / fake["train_labels"].name, raw, gz=True)
    fake["train_labels"] = RemoteFile(fake["train_labels"].name, _sha(raw), (), gunzip=True)
    monkeypatch.setattr(mnist, "MNIST_FILES", fake)
    with pytest.raises(IDXFormatError, match="out of range"):
        load_mnist(data_dir=tmp_path / "bad", download=False)
    raw = _idx_bytes(np.array([1, 2, 3], dtype=np.uint8))  # 3 labels for 5 images
    _write(folder / fake["train_labels"].name, raw, gz=True)
    fake["train_labels"] = RemoteFile(fake["train_labels"].name, _sha(raw), (), gunzip=True)
    with pytest.raises(IDXFormatError, match="do not match"):
        load_mnist(data_dir=tmp_path / "bad", download=False)


def test_load_real_mnist(shared_data):
    """The real files (/work/shared/data, skipped if absent) pass the canonical sha256 checks: 60,000 + 10,000
    28x28 digits with the known per-class counts (e.g. 1,010 test threes, spec §4.1)."""
    out = load_mnist(data_dir=shared_data, download=False)
    (xtr, ytr), (xte, yte) = out["train"], out["test"]
    assert xtr.shape == (60000, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert xtr.dtype == torch.float32 and float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0
    assert torch.bincount(yte, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert torch.bincount(ytr, minlength=10).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                                                          5949]


# --------------------------------------------------------------------------- the dataset registry

#: every dataset the registry held when it was two hand-kept dicts, with its class count
BUILT_IN = {"mnist": 10, "digits": 10, "synthetic": 10, "mnist-2x5": 2, "cifar10-jpeg": 10, "cifar10-jpeg-2x5": 2,
            "synthetic-clickthrough": 2, "criteo-sample": 2, "fsdd-frames": 30, "fsdd-frames-speakers": 30,
            "fsdd-frames-3pct": 30, "omniglot": 242}
DATA = Path(__file__).resolve().parents[1] / "src" / "darkknowledge" / "data"


def test_every_built_in_dataset_registers_itself_in_its_own_file():
    """Each name keeps its class count, and is registered by a decorator in the file of its dataset (the
    module holding the loader), found by lazy discovery."""
    from darkknowledge.data import registry

    assert {n: registry.get_dataset(n)[1] for n in BUILT_IN} == BUILT_IN
    assert set(registry.list_datasets()) >= set(BUILT_IN)
    for name in BUILT_IN:
        mod = registry.get_dataset(name)[0].__module__.rsplit(".", 1)[1]
        assert f'@register_dataset("{name}", classes=' in (DATA / f"{mod}.py").read_text(), name
    with pytest.raises(KeyError, match="unknown dataset 'nope'; known: cifar10-jpeg"):
        registry.get_dataset("nope")


def test_loaded_datasets_have_their_registered_classes(tmp_path, monkeypatch):
    """The files-free datasets load with labels 0..classes-1; mnist-2x5 is MNIST's labels // 5."""
    from darkknowledge.data import load_dataset

    for name in ("digits", "synthetic"):
        s = load_dataset(name, val_size=100)
        assert s.num_classes == BUILT_IN[name] and set(s.train.y.tolist()) == set(range(BUILT_IN[name]))
    fake = _fake_mnist(tmp_path / "root" / "mnist", n_train=200)
    arrays = fake.pop("_arrays")
    monkeypatch.setattr(mnist, "MNIST_FILES", fake)
    s = load_dataset("mnist-2x5", tmp_path / "root", val_size=0, download=False)
    assert s.num_classes == 2 and torch.equal(s.test.y, torch.from_numpy(arrays["test_labels"] // 5).long())


def test_register_dataset_decorator_and_call_forms():
    from darkknowledge.data import load_dataset, register_dataset

    @register_dataset("test-three", classes=3)
    def three(data_dir=None, download=True):
        y = torch.arange(30) % 3
        return {"train": (y.float()[:, None], y), "test": (y.float()[:6, None], y[:6])}

    assert load_dataset("test-three", val_size=3).num_classes == 3
    register_dataset("test-three", three, 3)  # the same loader again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("test-three", classes=3)(lambda data_dir=None, download=True: {})
    with pytest.raises(ValueError, match="classes must be an integer >= 2"):
        register_dataset("test-one", classes=1)


def test_import_darkknowledge_loads_no_dataset_file():
    """Dataset files are imported at the first lookup, not by ``import darkknowledge``."""
    import subprocess
    import sys

    code = ("import sys, darkknowledge; print(sorted(m.rsplit('.', 1)[1] for m in sys.modules "
            "if m.startswith('darkknowledge.data.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"cifar", "fsdd", "omniglot", "clickthrough", "synthetic"} & set(eval(out)), out


def test_data_modules_import_one_way():
    """No import cycle among the data modules (criteo.py no longer imports clickthrough.py)."""
    import ast

    graph = {}
    for f in DATA.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
        graph[f.stem] = {d.split(".")[0] for d in deps} - {f.stem}
    graph["__init__"] = set()  # the package's own names (TensorData) are not a dataset module

    def reach(a, seen=()):
        return any(b == seen[0] or (b not in seen and reach(b, seen + (b,))) for b in graph.get(a, ()))

    assert not [m for m in graph if reach(m, (m,))]
    assert "clickthrough" not in graph["criteo"] and "criteo" in graph["clickthrough"]


# --------------------------------------------------------------------------- models


def test_registry():
    """create_model by name; an unknown name raises KeyError listing the registered names; bad kwargs
    (unknown argument or invalid size) raise ValueError."""
    assert {"mlp", "small_cnn"} <= set(list_models())
    m = create_model("mlp", in_features=6, hidden=[5, 4], num_classes=3)
    assert m(torch.zeros(2, 6)).shape == (2, 3)
    with pytest.raises(KeyError) as e:
        create_model("resnet9000")
    assert "mlp" in str(e.value) and "small_cnn" in str(e.value)
    with pytest.raises(ValueError, match="hiden"):
        create_model("mlp", hiden=[3])
    with pytest.raises(ValueError):
        create_model("mlp", hidden=[0])
    cnn = create_model("small_cnn", image_size=12, width=4)
    assert cnn(torch.zeros(2, 1, 12, 12)).shape == (2, 10)
    assert cnn(torch.zeros(2, 144)).shape == (2, 10)  # flat input is reshaped
    with pytest.raises(ValueError, match="image_size"):  # 8x8 digits leave no feature map after two pools
        create_model("small_cnn", image_size=8)


def test_apply_max_norm_bounds_rows():
    """Max-norm: each unit's incoming weight vector (a row of every nn.Linear) gets L2 norm <= c; rows already
    within the bound are unchanged; directions are kept."""
    torch.manual_seed(0)
    m = create_model("mlp", in_features=10, hidden=[8], num_classes=4, max_norm=1.5)
    with torch.no_grad():
        m.head.weight.mul_(20.0)
        m.features[1].weight[0] = 0.01  # norm sqrt(10)*0.01, well within
    before = [lin.weight.clone() for lin in m.modules() if isinstance(lin, nn.Linear)]
    apply_max_norm(m)
    for lin, w0 in zip([lin for lin in m.modules() if isinstance(lin, nn.Linear)], before):
        norms = lin.weight.detach().norm(dim=1)
        assert float(norms.max()) <= 1.5 + 1e-5
        small = w0.norm(dim=1) <= 1.5
        assert torch.equal(lin.weight.detach()[small], w0[small])
        big = ~small
        torch.testing.assert_close(norms[big], torch.full_like(norms[big], 1.5))
        cos = torch.nn.functional.cosine_similarity(lin.weight.detach()[big], w0[big], dim=1)
        torch.testing.assert_close(cos, torch.ones_like(cos))
    # no max_norm: nothing changes
    m2 = create_model("mlp", in_features=10, hidden=[8], num_classes=4)
    with torch.no_grad():
        m2.head.weight.mul_(100.0)
    w = m2.head.weight.clone()
    apply_max_norm(m2)
    assert torch.equal(m2.head.weight, w)


def test_save_load_model_round_trip(tmp_path):
    """save_model/load_model rebuild the same architecture with bit-identical weights and outputs."""
    torch.manual_seed(0)
    args = {"in_features": 7, "hidden": [6, 5], "num_classes": 3, "dropout": 0.2, "max_norm": 2.0}
    m = create_model("mlp", **args)
    path = tmp_path / "m.safetensors"
    save_model(m, path, "mlp", args, extra={"epoch": 3})
    m2 = load_model(path)
    assert type(m2) is type(m) and m2.max_norm == 2.0
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    x = torch.randn(4, 7)
    assert torch.equal(m.eval()(x), m2.eval()(x))
    meta = read_model_meta(path)
    assert meta["darkknowledge_model"] == {"name": "mlp", "args": args} and meta["epoch"] == 3


def test_bad_model_files_raise(tmp_path):
    """Garbage bytes, a missing file, a safetensors file without our metadata, and weights that do not fit
    the recorded architecture all raise ModelFileError."""
    garbage = _write(tmp_path / "garbage.safetensors", b"\x00\x01garbage" * 20)
    with pytest.raises(ModelFileError):
        load_model(garbage)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="metadata"):
        load_model(plain)
    small = create_model("mlp", in_features=4, hidden=[3], num_classes=2)
    mismatch = tmp_path / "mismatch.safetensors"
    save_model(small, mismatch, "mlp", {"in_features": 4, "hidden": [5], "num_classes": 2})
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(mismatch)
    truncated = tmp_path / "truncated.safetensors"
    save_model(small, truncated, "mlp", {"in_features": 4, "hidden": [3], "num_classes": 2})
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(ModelFileError):
        load_model(truncated)
