"""A report template file with named sections, shipped as package data.

A long report keeps its prose in one markdown file (``experiments/templates/<name>.md``) cut into sections by
marker lines ``<!-- section: NAME -->``; :func:`template_sections` returns ``{NAME: text}`` (each text without
the blank lines around it), and each text is a :func:`~.template.render` template::

    T = template_sections("darkknowledge.experiments", "templates/hinton_mnist.md")
    render(T["headline"], S=SummaryView(summary), table=...)

Text before the first marker (e.g. a comment saying what the file is) is not a section.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

__all__ = ["template_sections", "split_sections"]

_MARKER = re.compile(r"^<!-- section: ([A-Za-z0-9_]+) -->$", re.MULTILINE)


def split_sections(text: str) -> dict[str, str]:
    """``{name: text}`` of the sections of ``text`` (see the module docstring); a name used twice is an error."""
    parts = _MARKER.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in out:
            raise ValueError(f"template section {name!r} appears twice")
        out[name] = body.strip("\n")
    return out


@functools.cache
def template_sections(package: str, path: str) -> dict[str, str]:
    """The sections of the package data file ``path`` of ``package`` (read once)."""
    return split_sections(resources.files(package).joinpath(path).read_text(encoding="utf-8"))
