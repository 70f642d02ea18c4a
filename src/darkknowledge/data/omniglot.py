"""Omniglot, "background small 1 + small 2" (Lake, Salakhutdinov & Tenenbaum 2015; GitHub ``brendenlake/omniglot``):
8 alphabets, 242 characters, 20 drawers each — a many-class set for Hinton et al.'s specialists (spec §6.1 claim 7).

Files: ``images_background_small1.zip`` and ``images_background_small2.zip`` (dataset folder ``omniglot-small``, or
``omniglot``), checked against their sha256 and downloaded from the repository at a fixed commit when missing and
allowed. Members are ``images_background_smallK/<Alphabet>/characterNN/XXXX_DD.png`` (105×105, 1-bit, white
background), ``DD`` the drawer 01–20. Greek and Latin appear in both zips with the same characters and drawers; each
(alphabet, character, drawer) is kept once.

Classes: the 242 characters, ordered by (alphabet, character) — class names ``Alphabet/characterNN``
(:func:`omniglot_class_names`). Images: ink = 1, downsampled to 28×28 by area averaging (Pillow's ``BOX`` filter,
so thin strokes stay grey instead of vanishing), float32 in [0, 1], shape ``[N, 1, 28, 28]``.

Split **by drawer** (within-character generalisation to new people): drawers 1–15 for training, 16–20 test
(1,210 images). The validation split is carved from the training drawers, again by drawer — drawers 14–15 by
default (484 images), so that selection sees new drawers as the test does — leaving drawers 1–13 (3,146 images,
13 per character) for training. Decoding all 4,840 PNGs takes a few seconds; the result is memoised per process by
the registry.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .common import DatasetNotFoundError, RemoteFile, candidate_dirs, locate_files
from .registry import register_dataset

__all__ = ["OMNIGLOT_FILES", "OMNIGLOT_DATASET", "TRAIN_DRAWERS", "VAL_DRAWERS", "TEST_DRAWERS", "OmniglotFormatError",
           "read_omniglot", "omniglot_class_names", "load_omniglot"]

OMNIGLOT_DATASET = "omniglot-small"
_ALIASES = (OMNIGLOT_DATASET, "omniglot")
_URL = "https://github.com/brendenlake/omniglot/raw/057f034baf2ecb8530bc5710e5a23584d2a519cc/python/"
OMNIGLOT_FILES = (
    RemoteFile("images_background_small1.zip", "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
               (_URL + "images_background_small1.zip",)),
    RemoteFile("images_background_small2.zip", "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
               (_URL + "images_background_small2.zip",)),
)
TRAIN_DRAWERS = tuple(range(1, 14))
VAL_DRAWERS = (14, 15)
TEST_DRAWERS = tuple(range(16, 21))
NUM_CLASSES = 242
_MEMBER = re.compile(r"^images_background_small\d/([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")


class OmniglotFormatError(ValueError):
    """An Omniglot zip does not have the expected layout or content."""


def _paths(data_dir: str | os.PathLike | None, download: bool) -> list[Path]:
    errors = []
    for name in _ALIASES:  # the shared folder's name first, then the registry's
        try:
            found = locate_files(name, list(OMNIGLOT_FILES), data_dir, download=download and name == _ALIASES[-1])
            return [found[rf.name] for rf in OMNIGLOT_FILES]
        except DatasetNotFoundError as e:
            errors.append(str(e))
    looked = ", ".join(str(d) for a in _ALIASES for d in candidate_dirs(a, data_dir))
    raise DatasetNotFoundError(
        f"Omniglot: {' and '.join(rf.name for rf in OMNIGLOT_FILES)} not found (looked in {looked}); put them in a "
        f"folder 'omniglot-small/' under --data-dir (GitHub brendenlake/omniglot, python/)")


def _members(paths: Sequence[Path]) -> dict[tuple[str, str, int], tuple[Path, str]]:
    """``(alphabet, character, drawer) → (zip, member)``, the first zip's copy of a duplicate."""
    out: dict[tuple[str, str, int], tuple[Path, str]] = {}
    for p in paths:
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise OmniglotFormatError(f"{p}: not a readable zip ({e})") from e
        for n in names:
            if n.endswith("/"):
                continue
            m = _MEMBER.match(n)
            if m is None:
                raise OmniglotFormatError(f"{p}: unexpected member {n!r} (want images_background_smallK/"
                                          "<Alphabet>/characterNN/XXXX_DD.png)")
            key = (m.group(1), m.group(2), int(m.group(4)))
            out.setdefault(key, (p, n))
    return out


def omniglot_class_names(data_dir: str | os.PathLike | None = None, download: bool = True) -> list[str]:
    """The 242 class names ``Alphabet/characterNN`` in class-id order (only the zip directories are read)."""
    return sorted({f"{a}/{c}" for a, c, _ in _members(_paths(data_dir, download))})


def read_omniglot(paths: Sequence[str | os.PathLike], image_size: int = 28
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Decode every image of the zips: ``(images float32 [N, 1, s, s] ink = 1, labels int64 [N], drawers int64 [N],
    class names)``, sorted by (class, drawer)."""
    from PIL import Image, UnidentifiedImageError

    members = _members([Path(p) for p in paths])
    names = sorted({f"{a}/{c}" for a, c, _ in members})
    label_of = {n: i for i, n in enumerate(names)}
    keys = sorted(members, key=lambda k: (label_of[f"{k[0]}/{k[1]}"], k[2]))
    images = np.empty((len(keys), 1, image_size, image_size), np.float32)
    zips: dict[Path, zipfile.ZipFile] = {}
    try:
        for i, k in enumerate(keys):
            p, member = members[k]
            if p not in zips:
                zips[p] = zipfile.ZipFile(p)
            z = zips[p]
            try:
                with Image.open(io.BytesIO(z.read(member))) as im:
                    ink = Image.eval(im.convert("L"), lambda v: 255 - v)  # white background → 0, ink → 255
                    small = ink.resize((image_size, image_size), Image.Resampling.BOX)
                    images[i, 0] = np.asarray(small, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise OmniglotFormatError(f"{p}: member {member!r} is not a decodable image ({e})") from e
    finally:
        for z in zips.values():
            z.close()
    labels = np.array([label_of[f"{a}/{c}"] for a, c, _ in keys], np.int64)
    drawers = np.array([d for _, _, d in keys], np.int64)
    return images, labels, drawers, names


@register_dataset("omniglot", classes=242)
def load_omniglot(data_dir: str | os.PathLike | None = None, download: bool = True,
                  val_drawers: Sequence[int] = VAL_DRAWERS) -> dict[str, tuple[Tensor, Tensor]]:
    """The registry's ``omniglot``: ``{"train", "val", "test"}`` → ``(x [N, 1, 28, 28], y)`` split by drawer
    (training drawers 1–15 minus ``val_drawers``; test drawers 16–20)."""
    images, labels, drawers, names = read_omniglot(_paths(data_dir, download))
    if len(names) != NUM_CLASSES:
        raise OmniglotFormatError(f"expected {NUM_CLASSES} characters in the two zips, found {len(names)}")
    val = set(int(d) for d in val_drawers)
    if not val <= set(range(1, 16)):
        raise ValueError(f"validation drawers must come from the training drawers 1–15, got {sorted(val)}")
    part = {"train": (drawers <= 15) & ~np.isin(drawers, list(val)), "val": np.isin(drawers, list(val)),
            "test": drawers >= 16}
    return {k: (torch.from_numpy(images[m].copy()), torch.from_numpy(labels[m].copy())) for k, m in part.items()}
