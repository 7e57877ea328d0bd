"""Callback classes whose base class lives in an optional extra: built on first access, cached."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def lazy_class(module: str, name: str, build: Callable[[], type]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that builds ``name`` with ``build()`` the first time it is looked up.

    The integration modules subclass a class of their library (``lightning.pytorch.Callback``,
    ``transformers.TrainerCallback``), which cannot be imported until the extra is known to be installed; a
    module-level ``__getattr__`` (PEP 562) defers that to the first use and lets the import error name the extra.
    """
    built: list[type] = []

    def __getattr__(attribute: str) -> Any:
        if attribute != name:
            raise AttributeError(f"module {module!r} has no attribute {attribute!r}")
        if not built:
            built.append(build())
        return built[0]

    return __getattr__
