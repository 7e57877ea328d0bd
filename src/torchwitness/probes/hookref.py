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
import itertools
import types
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


class _Before:
    """What a tapped forward calls first; a copy or a pickle of the module carries None in its place."""

    __slots__ = ("before", "forward")

    def __init__(self, before: Callable[..., Any] | None, forward: Callable[..., Any]) -> None:
        self.before, self.forward = before, forward

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self) -> tuple[type, tuple]:
        return type(None), ()


class ForwardTap:
    """Calls ``before(module, args, kwargs)`` first in every call of ``module.forward``, as a forward pre-hook
    would. A hook of any kind sends each call of the module through ``nn.Module._call_impl``'s general path,
    which costs a small CPU model ~9 us a step with the CPU's caches cold from the step's kernels (~1 us warm);
    a method in the instance's ``forward`` keeps the short path and costs one Python call.

    The method looks its target up in the module's ``__dict__`` under a key of its own, which a deep copy or a
    pickle of the module carries as None: a copy calls its class's forward. It carries the original forward's
    name, signature and docstring (``inspect.signature(model.forward)``, which Hugging Face's Trainer reads,
    is unchanged). :meth:`remove` puts back what was there, or, when another wrapper was put over this one since
    (accelerate's autocast), leaves it to pass calls straight through.
    """

    _keys = itertools.count()

    def __init__(self, module: Any, before: Callable[..., Any]) -> None:
        self.module = module
        self.key = key = f"_torchwitness_forward_{next(ForwardTap._keys)}"
        self.previous = module.__dict__.get("forward")  # another instance wrapper, or None: the class's method
        original = module.forward

        @functools.wraps(getattr(original, "__func__", original))
        def forward(self_module: Any, *args: Any, **kwargs: Any) -> Any:
            tap = self_module.__dict__.get(key)
            if tap is None:  # a copy or an unpickled module
                return type(self_module).forward(self_module, *args, **kwargs)
            if tap.before is not None:
                tap.before(self_module, args, kwargs)
            return tap.forward(*args, **kwargs)

        module.__dict__[key] = _Before(before, original)
        self.method = module.__dict__["forward"] = types.MethodType(forward, module)

    def remove(self) -> None:
        d = self.module.__dict__
        if d.get("forward") is self.method:
            if self.previous is None:
                del d["forward"]
            else:
                d["forward"] = self.previous
            d.pop(self.key, None)
        elif isinstance(d.get(self.key), _Before):
            d[self.key].before = None
