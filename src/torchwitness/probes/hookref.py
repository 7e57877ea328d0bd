"""Hooks that stay with the hooked object: a copy or a pickle of it carries them as no-ops.

``copy.deepcopy(model)`` (an EMA or SWA copy) and ``torch.save(model)`` copy a module's hook dictionaries, and a
hook that is a bound method of the watch would drag the watch, its run, the ledger's open files and the signing
key along (neither can be copied: the copy or the save fails). The copy is not watched, so its hooks become
:func:`inert`.

>>> import copy, torch
>>> m = torch.nn.Linear(2, 2); calls = []
>>> _ = m.register_forward_hook(detachable(lambda *a: calls.append(1)))
>>> _ = m(torch.ones(2)); _ = copy.deepcopy(m)(torch.ones(2))
>>> calls
[1]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def inert(*args: Any, **kwargs: Any) -> None:
    """What a copied or unpickled module calls in place of a watch's hook."""
    return None


class Detachable(functools.partial):
    """Calls ``fn``; deep-copied or pickled, it becomes :func:`inert`. A ``partial`` so that the call goes through
    C (a hook runs at every step: a Python ``__call__`` would add a frame to each)."""

    def __deepcopy__(self, memo: dict) -> Detachable:
        return Detachable(inert)

    def __reduce__(self) -> tuple[type, tuple[Callable[..., Any]]]:
        return Detachable, (inert,)


def detachable(fn: Callable[..., Any]) -> Detachable:
    """``fn`` as a hook that a copy or a pickle of the hooked object does not carry."""
    return Detachable(fn)
