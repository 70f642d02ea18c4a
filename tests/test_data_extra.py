"""CIFAR-10 (JPEG and python tarballs), the Criteo-format loader and the synthetic clickthrough data."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import darkknowledge.data.cifar as cifar
import darkknowledge.data.common as common
from darkknowledge.data.clickthrough import (
    AD_CAT_FIELDS,
    NOISE_CAT_FIELDS,
    USER_CAT_FIELDS,
    ClickthroughConfig,
    ClickthroughWorld,
    clickthrough_splits,
    generate_clickthrough,
)
from darkknowledge.data.common import ChecksumError, DatasetNotFoundError, RemoteFile
from darkknowledge.data.criteo import (
    CriteoData,
    CriteoFormatError,
    criteo_features,
    hash_categorical,
    load_criteo_sample,
    read_criteo,
)


def _shared_data() -> Path:
    """The real datasets folder: $DARKKNOWLEDGE_DATA, else ``../shared/data`` beside the repo."""
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data"
    for c in (os.environ.get("DARKKNOWLEDGE_DATA"), beside_repo):
        if c and any((Path(c) / sub).is_dir() for sub in ("criteo-sample", "cifar10-jpeg")):
            return Path(c)
    return beside_repo


SHARED = _shared_data()
REAL_CIFAR = SHARED / "cifar10-jpeg" / "cifar10_jpeg_q75.tar.gz"
REAL_CRITEO_TRAIN = SHARED / "criteo-sample" / "criteo_kaggle_train_head1000.tsv.gz"
REAL_CRITEO_TEST = SHARED / "criteo-sample" / "criteo_kaggle_test_head100_unlabeled.tsv.gz"


@pytest.fixture(autouse=True)
def _isolated_data_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may see the user's real data folders or cache."""
    monkeypatch.delenv(common.ENV_VAR, raising=False)
    monkeypatch.setattr(common, "DEFAULT_CACHE", tmp_path / "default-cache")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ==================================================================================================
# CIFAR-10


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _colour(label: int, k: int) -> tuple[int, int, int]:
    return (20 * label + 10, 40 * k + 20, 200 - 15 * label)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _make_jpeg_tar(path: Path, per_class: dict[str, int], extra: dict[str, bytes] | None = None) -> Path:
    """A tiny CIFAR-JPEG-style tar.gz: ``<split>/<class>/NNNN.jpg`` of solid colours."""
    with tarfile.open(path, "w:gz") as tar:
        d = tarfile.TarInfo("train")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        _add(tar, "README.txt", b"not an image")
        for split, count in per_class.items():
            # reverse class order in the archive to check the loader sorts by label
            for label in (3, 9, 0):
                for k in range(count):
                    _add(tar, f"{split}/{cifar.CIFAR10_CLASSES[label]}/{k:04d}.jpg", _jpeg(_colour(label, k)))
        for name, data in (extra or {}).items():
            _add(tar, name, data)
    return path


def _use_tiny_jpeg(monkeypatch: pytest.MonkeyPatch, tar_path: Path) -> None:
    monkeypatch.setattr(cifar, "JPEG_FILE", RemoteFile(cifar.JPEG_FILE.name, _sha(tar_path), ()))


def test_read_jpeg_tar(tmp_path: Path) -> None:
    tar = _make_jpeg_tar(tmp_path / "t.tar.gz", {"train": 3, "test": 2})
    x, y = cifar.read_cifar10_jpeg_tar(tar, "train")
    assert x.shape == (9, 3, 32, 32) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == [0, 0, 0, 3, 3, 3, 9, 9, 9]
    for i, (label, k) in enumerate([(0, 0), (0, 1), (0, 2), (3, 0), (3, 1), (3, 2), (9, 0), (9, 1), (9, 2)]):
        assert y[i] == label
        got = x[i].reshape(3, -1).mean(axis=1)
        assert np.abs(got - np.array(_colour(label, k))).max() < 4  # JPEG error on a flat colour
    xt, yt = cifar.read_cifar10_jpeg_tar(tar, "test")
    assert xt.shape == (6, 3, 32, 32) and yt.tolist() == [0, 0, 3, 3, 9, 9]
    xl, yl = cifar.read_cifar10_jpeg_tar(tar, "train", limit=2)
    assert xl.shape[0] == 2 and yl.tolist() == [3, 3]  # the first two train members of the archive
    with pytest.raises(ValueError, match="split"):
        cifar.read_cifar10_jpeg_tar(tar, "val")


@pytest.mark.parametrize(
    "extra,match",
    [
        ({"train/unicorn/0000.jpg": _jpeg((1, 2, 3))}, "unknown class folder"),
        ({"train/cat/big.jpg": _jpeg((1, 2, 3), (33, 32))}, "not 32×32×3"),
        ({"train/cat/bad.jpg": b"\xff\xd8garbage"}, "not a decodable image"),
        ({"train/cat/deep/0000.jpg": _jpeg((1, 2, 3))}, "unexpected member"),
    ],
)
def test_read_jpeg_tar_errors(tmp_path: Path, extra: dict[str, bytes], match: str) -> None:
    tar = _make_jpeg_tar(tmp_path / "t.tar.gz", {"train": 1}, extra)
    with pytest.raises(cifar.CifarFormatError, match=match):
        cifar.read_cifar10_jpeg_tar(tar, "train")


def test_read_jpeg_tar_not_a_tar(tmp_path: Path) -> None:
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"this is not a tar")
    with pytest.raises(cifar.CifarFormatError, match="cannot open"):
        cifar.read_cifar10_jpeg_tar(bad)
    good = _make_jpeg_tar(tmp_path / "t.tar.gz", {"train": 4})
    trunc = tmp_path / "trunc.tar.gz"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(cifar.CifarFormatError):
        cifar.read_cifar10_jpeg_tar(trunc)


def test_load_jpeg_with_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "cifar10-jpeg").mkdir(parents=True)
    tar = _make_jpeg_tar(data / "cifar10-jpeg" / cifar.JPEG_FILE.name, {"train": 2, "test": 1})
    _use_tiny_jpeg(monkeypatch, tar)
    cache = tmp_path / "cache"
    x, y = cifar.load_cifar10_jpeg(data, "train", cache_dir=cache, download=False)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.shape == (6, 3, 32, 32)
    assert y.dtype == torch.int64 and y.tolist() == [0, 0, 3, 3, 9, 9]
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and _sha(tar)[:16] in files[0].name and "train" in files[0].name
    assert not list(cache.glob(".*.tmp"))  # the atomic write left no temp file

    # the second load comes from the cache, not from decoding
    def no_decode(*a: object, **k: object) -> None:
        raise AssertionError("should have been served from the cache")

    monkeypatch.setattr(cifar, "read_cifar10_jpeg_tar", no_decode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x2, y2 = cifar.load_cifar10_jpeg(data, "train", cache_dir=cache, download=False)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    monkeypatch.undo()
    _use_tiny_jpeg(monkeypatch, tar)
    monkeypatch.delenv(common.ENV_VAR, raising=False)
    monkeypatch.setattr(common, "DEFAULT_CACHE", tmp_path / "default-cache")

    # a corrupt cache file is detected, rebuilt with a warning, and replaced
    files[0].write_bytes(b"PK\x03\x04 truncated garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        x3, y3 = cifar.load_cifar10_jpeg(data, "train", cache_dir=cache, download=False)
    assert torch.equal(x, x3) and torch.equal(y, y3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cifar.load_cifar10_jpeg(data, "train", cache_dir=cache, download=False)

    # a readable but invalid cache (wrong shape) is detected too
    np.savez(files[0], images=np.zeros((6, 32, 32, 3), np.uint8), labels=y.numpy(),
             source_sha256=np.array(_sha(tar)), version=np.array(cifar.CACHE_VERSION))
    with pytest.warns(UserWarning, match="stale or invalid"):
        x4, _ = cifar.load_cifar10_jpeg(data, "train", cache_dir=cache, download=False)
    assert torch.equal(x, x4)

    # the test split has its own cache file; cache=False writes nothing
    xt, yt = cifar.load_cifar10_jpeg(data, "test", cache_dir=cache, download=False)
    assert xt.shape == (3, 3, 32, 32) and yt.tolist() == [0, 3, 9]
    assert len(list(cache.glob("*.npz"))) == 2
    other = tmp_path / "nocache"
    cifar.load_cifar10_jpeg(data, "test", cache=False, cache_dir=other, download=False)
    assert not other.exists()


def test_load_jpeg_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "cifar10-jpeg").mkdir(parents=True)
    _make_jpeg_tar(data / "cifar10-jpeg" / cifar.JPEG_FILE.name, {"train": 1})  # not the real hash
    with pytest.raises(ChecksumError):
        cifar.load_cifar10_jpeg(data, "train", cache_dir=tmp_path / "c", download=False)


def _make_python_tar(path: Path, per_batch: int = 3) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(0)
    expected: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, size=per_batch).tolist()
            blob = pickle.dumps({b"batch_label": name.encode(), b"data": data, b"labels": labels,
                                 b"filenames": [b"x.png"] * per_batch}, protocol=2)
            _add(tar, f"cifar-10-batches-py/{name}", blob)
            expected["test" if name == "test_batch" else "train"].append((data, labels))
    out = {}
    for split, parts in expected.items():
        out[split] = (np.concatenate([d for d, _ in parts]).reshape(-1, 3, 32, 32),
                      np.concatenate([np.array(lab) for _, lab in parts]))
    return path, out


def test_python_tarball_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "cifar10").mkdir(parents=True)
    tar, expected = _make_python_tar(data / "cifar10" / cifar.PYTHON_FILE.name)
    # with the wrong (= the real) hash the file is never unpickled
    with pytest.raises(ChecksumError, match="refusing to unpickle"):
        with pytest.warns(UserWarning, match="lossless"):
            cifar.load_cifar10_jpeg(data, "train", cache=False, download=False)
    monkeypatch.setattr(cifar, "PYTHON_FILE", RemoteFile(cifar.PYTHON_FILE.name, _sha(tar), ()))
    for split, n in (("train", 15), ("test", 3)):
        with pytest.warns(UserWarning, match="lossless"):
            x, y = cifar.load_cifar10_jpeg(data, split, cache_dir=tmp_path / "cache", download=False)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8
        assert np.array_equal(x.numpy(), expected[split][0])  # original order, CHW layout
        assert np.array_equal(y.numpy(), expected[split][1])


def test_cifar_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="neither"):
        cifar.load_cifar10_jpeg(tmp_path / "empty", "train", download=False, cache=False)


def test_cifar_2x5_labels() -> None:
    fine = torch.arange(10)
    assert cifar.cifar_2x5_labels(fine).tolist() == [0] * 5 + [1] * 5
    assert cifar.cifar_2x5_labels(np.array([4, 5, 9, 0])).tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        cifar.cifar_2x5_labels(torch.tensor([10]))
    with pytest.raises(ValueError):
        cifar.cifar_2x5_labels(np.array([-1]))
    with pytest.raises(TypeError):
        cifar.cifar_2x5_labels(torch.tensor([1.0]))


@pytest.mark.skipif(not REAL_CIFAR.is_file(), reason="real CIFAR-10 JPEG tarball not present")
def test_real_cifar_jpeg_head() -> None:
    assert _sha(REAL_CIFAR) == cifar.JPEG_FILE.sha256
    x, y = cifar.read_cifar10_jpeg_tar(REAL_CIFAR, "train", limit=8)
    assert x.shape == (8, 3, 32, 32) and x.dtype == np.uint8
    assert (y == 0).all()  # the archive starts with train/airplane/
    assert 40 < x.mean() < 220 and x.std() > 10


# ==================================================================================================
# Criteo format


def _row(label: str | None = "0", ints: list[str] | None = None, cats: list[str] | None = None) -> str:
    ints = ints if ints is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    fields = ([label] if label is not None else []) + ints + cats
    return "\t".join(fields)


def _write(path: Path, rows: list[str], gz: bool = False) -> Path:
    text = "".join(r + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(text) if gz else text)
    return path


@pytest.mark.skipif(not REAL_CRITEO_TRAIN.is_file(), reason="real Criteo sample not present")
def test_real_criteo_train_sample() -> None:
    d = load_criteo_sample("train", data_dir=SHARED)
    assert isinstance(d, CriteoData)
    assert d.labels is not None and d.labels.shape == (1000,) and d.labels.dtype == np.float32
    assert int(d.labels.sum()) == 205
    assert d.ints.shape == (1000, 13) and d.ints.dtype == np.float64
    assert d.cats.shape == (1000, 26) and d.cats.dtype == np.int64
    # the well-known first line: 0 1 1 5 0 1382 4 15 2 181 1 2 _ 2 68fd1e64 80e26c9b ...
    assert d.labels[0] == 0
    np.testing.assert_array_equal(d.ints[0, :12], [1, 1, 5, 0, 1382, 4, 15, 2, 181, 1, 2, np.nan])
    assert d.ints[0, 12] == 2
    assert d.cats[0, 0] == 0x68FD1E64 and d.cats[0, 1] == 0x80E26C9B
    assert np.isnan(d.ints).any() and (d.cats == -1).any() and (d.cats < 2**32).all()
    assert np.nanmin(d.ints) < 0  # negative counts are kept as values
    same = read_criteo(REAL_CRITEO_TRAIN)
    np.testing.assert_array_equal(same.cats, d.cats)


@pytest.mark.skipif(not REAL_CRITEO_TEST.is_file(), reason="real Criteo sample not present")
def test_real_criteo_unlabelled_sample() -> None:
    d = read_criteo(REAL_CRITEO_TEST)  # 39 fields: detected as unlabelled
    assert d.labels is None and d.ints.shape == (100, 13) and d.cats.shape == (100, 26)
    d2 = load_criteo_sample("test", data_dir=SHARED)
    assert d2.labels is None and np.array_equal(d2.cats, d.cats)
    with pytest.raises(CriteoFormatError, match="line 1: 39 fields, expected 40"):
        read_criteo(REAL_CRITEO_TEST, has_label=True)


@pytest.mark.parametrize("gz", [False, True])
def test_read_small_file(tmp_path: Path, gz: bool) -> None:
    ints = ["", "-1", "3", "0", "12", "", "7", "8", "9", "10", "11", "-2", "13"]
    cats = ["", "FFFFFFFF"] + [f"{i:08x}" for i in range(2, 26)]
    cats[25] = ""
    p = _write(tmp_path / ("a.tsv.gz" if gz else "a.txt"), [_row("1", ints, cats), "", _row("0")], gz=gz)
    d = read_criteo(p)
    assert d.labels.tolist() == [1.0, 0.0]
    assert np.isnan(d.ints[0, 0]) and d.ints[0, 1] == -1 and d.ints[0, 11] == -2 and np.isnan(d.ints[0, 5])
    assert d.cats[0, 0] == -1 and d.cats[0, 1] == 0xFFFFFFFF and d.cats[0, 25] == -1 and d.cats[0, 2] == 2
    assert d.ints[1].tolist() == list(range(13))
    assert read_criteo(p, max_rows=1).ints.shape == (1, 13)
    assert d.subset(np.array([1])).labels.tolist() == [0.0]


def test_read_unlabelled_and_padding(tmp_path: Path) -> None:
    p = _write(tmp_path / "u.tsv", [_row(None), _row(None)])
    d = read_criteo(p)
    assert d.labels is None and d.ints.shape == (2, 13)
    short = _row("1").split("\t")[:30]  # trailing fields trimmed
    p2 = _write(tmp_path / "s.tsv", [_row("0"), "\t".join(short)])
    with pytest.raises(CriteoFormatError, match="line 2: 30 fields, expected 40"):
        read_criteo(p2)
    d2 = read_criteo(p2, pad_short_rows=True)
    assert (d2.cats[1, 16:] == -1).all() and d2.cats[1, 15] == 15
    empty = read_criteo(_write(tmp_path / "e.tsv", []), has_label=True)
    assert empty.labels.shape == (0,) and empty.ints.shape == (0, 13) and empty.cats.shape == (0, 26)


@pytest.mark.parametrize(
    "bad_row,match",
    [
        (_row("0") + "\textra", "line 3: 41 fields, expected 40"),
        (_row("2"), "line 3: label = '2'"),
        (_row("0", ints=["1", "x"] + ["0"] * 11), "line 3: I2 = 'x' is not an integer"),
        (_row("0", ints=["1", "1.5"] + ["0"] * 11), "line 3: I2 = '1.5'"),
        (_row("0", ints=[" 5"] + ["0"] * 12), "line 3: I1"),
        (_row("0", ints=["5-"] + ["0"] * 12), "line 3: I1"),
        (_row("0", cats=["0"] * 2 + ["zz"] + ["0"] * 23), "line 3: C3 = 'zz' is not a hex hash"),
        (_row("0", cats=["0x1f"] + ["0"] * 25), "line 3: C1"),
        (_row("0", cats=["1" * 16] + ["0"] * 25), "line 3: C1"),
    ],
)
def test_read_malformed(tmp_path: Path, bad_row: str, match: str) -> None:
    p = _write(tmp_path / "bad.tsv", [_row("0"), _row("1"), bad_row, _row("0")])
    with pytest.raises(CriteoFormatError, match=match):
        read_criteo(p)


def test_read_malformed_first_row_and_gzip(tmp_path: Path) -> None:
    with pytest.raises(CriteoFormatError, match="line 1: 5 fields"):
        read_criteo(_write(tmp_path / "a.tsv", ["1\t2\t3\t4\t5"]))
    with pytest.raises(CriteoFormatError, match="line 2: 39 fields, expected 40"):
        read_criteo(_write(tmp_path / "b.tsv", [_row("0"), _row(None)]))
    good = _write(tmp_path / "g.tsv.gz", [_row("0")] * 200, gz=True).read_bytes()
    trunc = tmp_path / "t.tsv.gz"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(CriteoFormatError, match="gzip"):
        read_criteo(trunc)
    (tmp_path / "n.tsv").write_bytes(_row("0").encode() + b"\xe9\n")
    with pytest.raises(CriteoFormatError, match="line 1: non-ASCII"):
        read_criteo(tmp_path / "n.tsv")


def test_features() -> None:
    ints = np.array([[0, 1, np.nan, -1, 1000] + [2] * 8, [np.nan] * 13], dtype=np.float64)
    cats = np.array([[-1, 0, 5] + [7] * 23, [5] * 26], dtype=np.int64)
    dense, cat = criteo_features(CriteoData(None, ints, cats), num_buckets=50)
    assert dense.shape == (2, 26) and dense.dtype == np.float32
    np.testing.assert_allclose(dense[0, :5], [0, np.log(2), 0, -np.log(2), np.log(1001)], rtol=1e-6)
    assert dense[0, 13:18].tolist() == [0, 0, 1, 0, 0]
    assert (dense[1, 13:] == 1).all() and (dense[1, :13] == 0).all()
    assert cat.shape == (2, 26) and cat.dtype == np.int64
    assert cat[0, 0] == 0 and (cat[0, 1:] >= 1).all() and (cat < 50).all()
    assert cat[0, 2] == cat[1, 2]  # same id, same field -> same bucket
    np.testing.assert_array_equal(cat, criteo_features(CriteoData(None, ints, cats), 50)[1])  # deterministic
    # fields are salted: one id lands in different buckets across fields
    many = hash_categorical(np.full((1, 26), 12345), 1 << 20)
    assert len(set(many[0].tolist())) > 20
    per_field = hash_categorical(cats, [2] * 13 + [1000] * 13)
    assert (per_field[:, :13] <= 1).all()
    # buckets are spread out
    ids = np.arange(20000, dtype=np.int64)[:, None]
    counts = np.bincount(hash_categorical(ids, 101)[:, 0], minlength=101)
    assert counts[0] == 0 and counts[1:].min() > 100
    with pytest.raises(ValueError, match="num_buckets"):
        hash_categorical(cats, 1)
    with pytest.raises(ValueError, match="shape"):
        criteo_features(CriteoData(None, ints[:, :5], cats))
    with pytest.raises(ValueError, match=">= 0"):
        hash_categorical(np.array([[-2]]), 10)


# ==================================================================================================
# synthetic clickthrough


@pytest.fixture(scope="module")
def world() -> ClickthroughWorld:
    return ClickthroughWorld(world_seed=0)


def _same(a: CriteoData, b: CriteoData) -> bool:
    return (np.array_equal(a.labels, b.labels) and np.array_equal(a.ints, b.ints, equal_nan=True)
            and np.array_equal(a.cats, b.cats))


def test_clickthrough_determinism(world: ClickthroughWorld) -> None:
    small = ClickthroughConfig(calibration_rows=5000)
    d1, s1 = generate_clickthrough(3000, seed=7, world_seed=3, config=small)
    d2, s2 = generate_clickthrough(3000, seed=7, world_seed=3, config=small)
    assert _same(d1, d2) and all(np.array_equal(a, b) for a, b in zip(s1, s2))
    d3, _ = generate_clickthrough(3000, seed=8, world_seed=3, config=small)
    assert not _same(d1, d3)
    w4 = ClickthroughWorld(small, world_seed=4)
    w3 = ClickthroughWorld(small, world_seed=3)
    assert not np.array_equal(w3.cell_effects, w4.cell_effects)
    # rows are a function of (world, seed): a prefix of a bigger draw is not required, but re-drawing is exact
    assert _same(world.sample(500, seed=1)[0], world.sample(500, seed=1)[0])


def test_clickthrough_ctr_matches_target(world: ClickthroughWorld) -> None:
    d, s = world.sample(100_000, seed=1)
    assert abs(float(d.labels.mean()) - 0.04) < 0.004
    assert abs(float(s.click_prob.mean()) - 0.04) < 0.002
    cfg = ClickthroughConfig(target_ctr=0.2, calibration_rows=20_000)
    d2, _ = generate_clickthrough(20_000, seed=1, world_seed=1, config=cfg)
    assert abs(float(d2.labels.mean()) - 0.2) < 0.02


def test_clickthrough_segments_are_informative(world: ClickthroughWorld) -> None:
    from sklearn.metrics import normalized_mutual_info_score as nmi

    d, s = world.sample(60_000, seed=2)
    assert s.cell.tolist() == (s.user * 6 + s.ad).tolist()
    assert s.user.max() < 8 and s.ad.max() < 6
    counts = np.bincount(s.cell, minlength=48)
    ctr = np.bincount(s.cell, weights=d.labels, minlength=48) / np.maximum(counts, 1)
    big = counts >= 300
    assert big.sum() >= 20
    assert ctr[big].max() > 5 * max(ctr[big].min(), 1e-3)  # click rate varies strongly across cells
    # segment-dependent categorical fields carry information about their segment; noise fields do not
    present = d.cats[:, USER_CAT_FIELDS[0]] >= 0
    assert nmi(s.user[present], d.cats[present, USER_CAT_FIELDS[0]]) > 0.05
    present = d.cats[:, AD_CAT_FIELDS[0]] >= 0
    assert nmi(s.ad[present], d.cats[present, AD_CAT_FIELDS[0]]) > 0.05
    present = d.cats[:, NOISE_CAT_FIELDS[0]] >= 0
    noise_nmi = nmi(s.user[present], d.cats[present, NOISE_CAT_FIELDS[0]])
    assert noise_nmi < nmi(s.user[present], d.cats[present, USER_CAT_FIELDS[0]]) / 2
    # the I1 log-mean differs across user segments
    means = [np.nanmean(np.log1p(d.ints[s.user == u, 0])) for u in range(8) if (s.user == u).sum() > 100]
    assert max(means) - min(means) > 0.5


def test_clickthrough_schema_matches_criteo(world: ClickthroughWorld, tmp_path: Path) -> None:
    d, s = world.sample(2000, seed=3)
    real = read_criteo(_write(tmp_path / "r.tsv", [_row("0"), _row("1", ints=[""] * 13, cats=[""] * 26)]))
    for got, ref in zip(d, real):
        assert got.dtype == ref.dtype and got.shape[1:] == ref.shape[1:]
    assert d.labels.shape == (2000,) and set(np.unique(d.labels).tolist()) <= {0.0, 1.0}
    assert np.isnan(d.ints).any() and (d.ints[~np.isnan(d.ints)] >= 0).all()
    assert ((d.cats == -1) | ((d.cats >= 0) & (d.cats < 2**32))).all()
    miss_i, miss_c = np.isnan(d.ints).mean(axis=0), (d.cats == -1).mean(axis=0)
    assert (miss_i > 0.02).all() and (miss_i < 0.25).all() and (miss_c > 0.02).all() and (miss_c < 0.25).all()
    dense, cat = criteo_features(d, num_buckets=1000)
    assert dense.shape == (2000, 26) and cat.shape == (2000, 26) and np.isfinite(dense).all()
    assert s.click_prob.dtype == np.float64 and ((s.click_prob > 0) & (s.click_prob < 1)).all()


def test_clickthrough_splits_share_one_world() -> None:
    cfg = ClickthroughConfig(calibration_rows=5000)
    splits = clickthrough_splits(train=1000, val=300, test=200, world_seed=5, config=cfg)
    assert [len(splits[k][0].labels) for k in ("train", "val", "test")] == [1000, 300, 200]
    assert not np.array_equal(splits["train"][0].cats[:200], splits["test"][0].cats)
    w = ClickthroughWorld(cfg, world_seed=5)
    assert _same(splits["val"][0], w.sample(300, seed=2)[0])
    with pytest.raises(ValueError, match="target_ctr"):
        ClickthroughConfig(target_ctr=1.5)
    with pytest.raises(ValueError, match="num_rows"):
        w.sample(-1)
