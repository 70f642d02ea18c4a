"""Where datasets live and how they are fetched.

Search order for a dataset's files: an explicit ``data_dir`` (the ``--data-dir`` flag), then the
``DARKKNOWLEDGE_DATA`` environment variable, then ``~/.cache/darkknowledge``. A file missing
everywhere is downloaded (when online) from its canonical URLs into the first writable directory,
checked against its sha256 and renamed into place atomically. When nothing works the error names
every place looked in and how to provide the files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ENV_VAR = "DARKKNOWLEDGE_DATA"
DEFAULT_CACHE = Path.home() / ".cache" / "darkknowledge"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file could not be found locally nor downloaded."""


class ChecksumError(ValueError):
    """A file's sha256 does not match the expected value."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name, sha256 and the URLs it can be fetched from."""

    name: str
    sha256: str | None
    urls: tuple[str, ...] = field(default_factory=tuple)
    #: if True, ``sha256`` is of the gunzipped content, so mirrors whose gzip headers differ still match
    gunzip: bool = False


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20, gunzip: bool = False) -> str:
    """sha256 of a file's bytes, or of its decompressed content when ``gunzip``."""
    h = hashlib.sha256()
    opener = gzip.open if gunzip else open
    try:
        with opener(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ChecksumError(f"{path}: not a valid gzip file ({e})") from e
    return h.hexdigest()


def candidate_dirs(dataset: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for ``dataset``, in order. Each root is tried as ``root/dataset`` and ``root``."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        roots.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    roots.append(DEFAULT_CACHE)
    out: list[Path] = []
    for r in roots:
        for d in (r / dataset, r):
            if d not in out:
                out.append(d)
    return out


def _download(url: str, dest: Path, rf: RemoteFile, timeout: float) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
        if rf.sha256 is not None:
            got = sha256_file(tmp, gunzip=rf.gunzip)
            if got != rf.sha256:
                raise ChecksumError(f"{url}: sha256 {got} != expected {rf.sha256}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def locate_files(
    dataset: str,
    files: list[RemoteFile],
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    timeout: float = 10.0,
    verify: bool = True,
    budget: float = 60.0,
) -> dict[str, Path]:
    """Return ``{name: path}`` for every file of ``dataset``, downloading the missing ones.

    A file found locally whose sha256 does not match raises :class:`ChecksumError` (it is never
    silently replaced). Raises :class:`DatasetNotFoundError` naming every place looked in. Each URL gets
    ``timeout`` seconds to connect and between reads; all downloads together get ``budget`` seconds, after
    which the remaining URLs are not tried (a network that accepts but never answers costs at most that).
    """
    dirs = candidate_dirs(dataset, data_dir)
    found: dict[str, Path] = {}
    missing: list[RemoteFile] = []
    for rf in files:
        hit = next((d / rf.name for d in dirs if (d / rf.name).is_file()), None)
        if hit is None:
            missing.append(rf)
            continue
        if verify and rf.sha256 is not None:
            got = sha256_file(hit, gunzip=rf.gunzip)
            if got != rf.sha256:
                raise ChecksumError(
                    f"{hit}: sha256 {got} does not match the expected {rf.sha256}. The file is corrupt or "
                    f"a different version; delete it (it will be downloaded again) or replace it."
                )
        found[rf.name] = hit
    if not missing:
        return found

    errors: list[str] = []
    if download:
        target = Path(data_dir).expanduser() / dataset if data_dir is not None else (
            Path(os.environ[ENV_VAR].split(os.pathsep)[0]).expanduser() / dataset
            if os.environ.get(ENV_VAR) else DEFAULT_CACHE / dataset)
        deadline = time.monotonic() + budget
        for rf in list(missing):
            for url in rf.urls:
                left = deadline - time.monotonic()
                if left <= 0:
                    errors.append(f"  {url}: not tried (the {budget:g} s download budget is spent)")
                    continue
                try:
                    _download(url, target / rf.name, rf, min(timeout, left))
                    found[rf.name] = target / rf.name
                    missing.remove(rf)
                    break
                except (OSError, urllib.error.URLError, ChecksumError) as e:
                    errors.append(f"  {url}: {e}")
    if missing:
        looked = "\n".join(f"  {d}" for d in dirs)
        tried = "\n".join(errors) if errors else "  (downloading disabled)"
        names = ", ".join(rf.name for rf in missing)
        raise DatasetNotFoundError(
            f"dataset {dataset!r}: missing {names}.\nLooked in:\n{looked}\nDownloads tried:\n{tried}\n"
            f"Provide the files by putting them in one of those folders, pointing --data-dir or "
            f"${ENV_VAR} at a folder that holds a '{dataset}/' subfolder with them, or going online."
        )
    return found
