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

import torch


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


def elsewhere() -> bool:
    """A forward the watch must leave alone: one that activation checkpointing runs again inside backward, one
    that ``torch.jit.trace`` records (the watch's own tensor arithmetic would join the traced graph), or one
    under ``torch.func`` transforms (per-sample gradients: its tensors are batched wrappers)."""
    return torch._C._current_graph_task_id() != -1 or torch._C._get_tracing_state() is not None \
        or torch._C._are_functorch_transforms_active()  # (transformed() inlined: this runs at every step)


def transformed() -> bool:
    """Running under ``torch.func`` transforms (``vmap``, ``grad``)."""
    return torch._C._are_functorch_transforms_active()


def detachable(fn: Callable[..., Any]) -> Detachable:
    """``fn`` as a hook that a copy or a pickle of the hooked object does not carry."""
    return Detachable(fn)


class _Before:
    """What a tapped forward calls first; a copy or a pickle of the module carries None in its place."""

    __slots__ = ("before", "forward")

    def __init__(self, before: Callable[..., Any] | None, forward: Callable[..., Any] | None) -> None:
        self.before, self.forward = before, forward  # forward: another instance wrapper, or None: the class's

    def __deepcopy__(self, memo: dict) -> None:
        return None

    def __reduce__(self) -> tuple[type, tuple]:
        return type(None), ()


_PREFIX = "_torchwitness_forward_"


def _state_without_taps(module: Any) -> Any:
    """What a pickle or a deep copy of a tapped module holds (pickle and copy look ``__getstate__`` up on the
    instance): what its class would give (``nn.Module``'s: its ``__dict__``), without the taps, with the forward
    they were put over, if any."""
    state = type(module).__getstate__(module)
    if not isinstance(state, dict):
        return state
    state = {k: v for k, v in state.items() if k != "__getstate__" and not k.startswith(_PREFIX)}
    forward = state.get("forward")
    while isinstance(forward, types.MethodType) and hasattr(forward.__func__, "_torchwitness_tap"):
        tap = module.__dict__.get(forward.__func__._torchwitness_tap)
        forward = tap.forward if isinstance(tap, _Before) else None
    if forward is None:
        state.pop("forward", None)
    else:
        state["forward"] = forward
    return state


class ForwardTap:
    """Calls ``before(module, args, kwargs)`` first in every call of ``module.forward``, as a forward pre-hook
    would. A hook of any kind sends each call of the module through ``nn.Module._call_impl``'s general path,
    which costs a small CPU model ~9 us a step with the CPU's caches cold from the step's kernels (~1 us warm);
    a method in the instance's ``forward`` keeps the short path and costs one Python call.

    The method looks its target up in the module's ``__dict__`` under a key of its own. A deep copy or a pickle
    of the module holds neither (an instance ``__getstate__`` leaves them out; were they carried, the key would
    come as None and the copy's method call its class's forward). It carries the original forward's name,
    signature and docstring (``inspect.signature(model.forward)``, which Hugging Face's Trainer reads,
    is unchanged). :meth:`remove` puts back what was there, or, when another wrapper was put over this one since
    (accelerate's autocast), leaves it to pass calls straight through. The class's forward is looked up at each
    call (a class patched or swapped after the tap is honoured).
    """

    _keys = itertools.count()

    def __init__(self, module: Any, before: Callable[..., Any]) -> None:
        self.module = module
        self.key = key = f"{_PREFIX}{next(ForwardTap._keys)}"
        self.previous = module.__dict__.get("forward")  # another instance wrapper, or None: the class's method
        original = module.forward

        @functools.wraps(getattr(original, "__func__", original))
        def forward(self_module: Any, *args: Any, **kwargs: Any) -> Any:
            tap = self_module.__dict__.get(key)
            if tap is not None and tap.before is not None:  # None: a copy or an unpickled module
                tap.before(self_module, args, kwargs)
            if tap is None or tap.forward is None:  # looked up at each call: the class may be patched or swapped
                return type(self_module).forward(self_module, *args, **kwargs)
            return tap.forward(*args, **kwargs)

        forward._torchwitness_tap = key  # type: ignore[attr-defined]
        module.__dict__[key] = _Before(before, self.previous)
        self.method = module.__dict__["forward"] = types.MethodType(forward, module)
        if "__getstate__" not in module.__dict__ and hasattr(type(module), "__getstate__"):
            module.__dict__["__getstate__"] = types.MethodType(_state_without_taps, module)

    def remove(self) -> None:
        d = self.module.__dict__
        if d.get("forward") is self.method:
            d.pop(self.key, None)
            previous = self.previous
            # a tap put under this one and removed since: its method would only pass calls to the class's forward
            if getattr(getattr(previous, "__func__", None), "_torchwitness_tap", None) is not None \
                    and previous.__func__._torchwitness_tap not in d:
                previous = None
            if previous is None:
                del d["forward"]
            else:
                d["forward"] = previous
        elif self.previous is None:  # under another wrapper, the method without its key calls the class's forward
            d.pop(self.key, None)
        elif isinstance(d.get(self.key), _Before):  # and here the instance wrapper it was put over
            d[self.key].before = None
        if not any(k.startswith(_PREFIX) for k in d) and \
                getattr(d.get("__getstate__"), "__func__", None) is _state_without_taps:
            del d["__getstate__"]
