"""The report of ``consistent-teaching`` (placeholder while the runs train)."""

from __future__ import annotations

import json
from typing import Any


def report(settings: Any, summary: dict[str, Any], details: dict[str, Any], prov: dict[str, Any]) -> str:
    return "# consistent-teaching\n\n```\n" + json.dumps(summary, indent=1) + "\n```\n"


def figures(res: Any, details: dict[str, Any]) -> None:
    return None
