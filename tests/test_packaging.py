"""The built wheel ships the configs the README names, and the CLI finds them by name anywhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from darkknowledge.config import BUNDLED, load_config

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_the_configs(tmp_path):
    pytest.importorskip("build")
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                        str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    readme = (REPO / "README.md").read_text()
    named = {p.name for p in BUNDLED.glob("*.yaml") if f"configs/{p.name}" in readme}
    assert named, "the README names no bundled config"
    for name in sorted(p.name for p in BUNDLED.glob("*.yaml")):
        assert f"darkknowledge/configs/{name}" in names, name


def test_a_bundled_config_is_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/mnist_teacher.yaml")
    assert cfg.model.args["hidden"] == [1200, 1200]
    assert load_config("digits_mlp.yaml").data.dataset == "digits"
