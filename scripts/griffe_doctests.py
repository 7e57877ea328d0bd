"""Griffe extension for the API reference: ``>>>`` examples in docstrings are shown as Python console blocks.

Without it, Markdown reads an example's ``[...]`` as a link and its output as prose. The reStructuredText ``::``
that introduces an indented example becomes a plain colon (Markdown already shows the indented lines as code).
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object


def fence_doctests(text: str) -> str:
    """Wrap each run of ``>>>`` lines, their ``...`` continuations and their output in a ```pycon fence."""
    out: list[str] = []
    in_block = False
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(">>>") and not in_block:
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_block = True
        elif in_block and not stripped:
            out.append(f"{indent}```")
            in_block = False
        out.append(line)
    if in_block:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(Extension):
    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        value = re.sub(r"::[ \t]*$", ":", obj.docstring.value, flags=re.M)
        obj.docstring.value = fence_doctests(value) if ">>>" in value else value
