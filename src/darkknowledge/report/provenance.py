"""Provenance of a results folder: the command, the commit, the seeds, the wall time and the machine."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any

from ..utils import git_commit, machine_facts

__all__ = ["provenance"]


def provenance(command: str, wall_time_s: float | None = None, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    facts = machine_facts()
    return {"command": command, "git_commit": git_commit(), "seeds": list(seeds) if seeds is not None else None,
            "wall_time_s": wall_time_s, "machine": facts, "python": platform.python_version()}
