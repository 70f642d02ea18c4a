"""Every code block of the README is run here, or is marked as not runnable with the reason
(``<!-- not run by tests/test_readme_blocks.py: REASON -->`` on the line before it); the built-in dataset
list is the registry's."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from darkknowledge.config import validate
from darkknowledge.data import list_datasets

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
MARK = re.compile(r"<!-- not run by tests/test_readme_blocks\.py: (.+?) -->")


def blocks() -> list[tuple[int, str, str, str | None]]:
    """``(line, language, code, reason it is not run or None)`` of every fenced block."""
    out, lines, i = [], README.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
        prev = lines[i - 1] if i else ""
        reason = MARK.search(prev)
        out.append((i + 1, m.group(1), "\n".join(lines[i + 1:j]) + "\n", reason.group(1) if reason else None))
        i = j + 1
    return out


BLOCKS = blocks()


def test_every_block_is_run_or_says_why_not():
    for line, lang, _, reason in BLOCKS:
        if reason is not None:
            assert len(reason) > 15, f"README.md:{line}: give a reason"
        else:
            assert lang in ("python", "yaml"), f"README.md:{line}: a {lang or 'plain'} block no test runs — run it " \
                                               "or mark it <!-- not run by tests/test_readme_blocks.py: REASON -->"
    assert sum(r is None for *_, r in BLOCKS) >= 5


@pytest.mark.parametrize("line, code", [(b[0], b[2]) for b in BLOCKS if b[1] == "yaml" and b[3] is None],
                         ids=lambda v: str(v) if isinstance(v, int) else "")
def test_yaml_blocks_are_valid_configs(line, code):
    """Each config of the block: a block of alternatives (``data: ...`` on several lines) is split where a
    top-level key comes again, so no alternative is lost to YAML's last-key-wins."""
    chunks, keys = [[]], set()
    for ln in code.splitlines():
        key = re.match(r"^([A-Za-z_]\w*):", ln)
        if key and key.group(1) in keys:
            chunks.append([])
            keys = set()
        if key:
            keys.add(key.group(1))
        chunks[-1].append(ln)
    docs = [yaml.safe_load("\n".join(c)) for c in chunks]
    assert docs and all(docs), f"README.md:{line}: empty"
    for d in docs:
        validate(d, source=f"README.md:{line}")


@pytest.mark.parametrize("line, code", [(b[0], b[2]) for b in BLOCKS if b[1] == "python" and b[3] is None],
                         ids=lambda v: str(v) if isinstance(v, int) else "")
def test_python_blocks_run_as_written(line, code, tmp_path, monkeypatch, shared_data_root):
    """Run in a fresh folder beside a ``shared/`` that holds the data, as a clone beside ``../shared`` is."""
    if "../shared/data" in code and shared_data_root is None:
        pytest.skip("the shared data folder is not here")
    work = tmp_path / "clone"
    work.mkdir()
    if shared_data_root is not None:
        (tmp_path / "shared").symlink_to(shared_data_root)
    monkeypatch.chdir(work)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "readme_block"})


@pytest.fixture
def shared_data_root() -> Path | None:
    """The folder holding ``data/`` (``../shared`` beside the repository), if it has the speech recordings."""
    for d in (REPO.parent / "shared", Path(os.environ.get("DARKKNOWLEDGE_DATA", "/nonexistent")).parent):
        if (d / "data" / "fsdd").is_dir():
            return d
    return None


def test_the_dataset_list_is_the_registry():
    listed = re.search(r"<!-- datasets -->(.*?)<!-- /datasets -->", README, flags=re.S).group(1)
    names = re.findall(r"`([^`]+)`", listed)
    want = ", ".join(f"`{n}`" for n in list_datasets())
    assert names == list_datasets(), f"README's dataset list differs from the registry; write:\n{want}"
