"""Telling a cut graph (TW110) from a discarded output (TW413) when the module hooks cannot.

A layer with weights fed a float tensor without autograd history that the model was not given is either a
detached copy of an earlier output (``h.mean(1).detach()``, ``.data``, ``.item()``, a ``torch.no_grad()`` block
inside the forward) or something computed from the model's own inputs (``img.mean((2, 3))`` where
``feats.mean((2, 3))`` was meant), the earlier layers' output then left unused. Module hooks see the same tensor
either way. After a step that showed such an input, the next statistical step runs its forward under
:class:`CutSpy`, a function mode that looks for the cut itself: a call that takes a tensor requiring a gradient and
returns a floating tensor that does not (or a Python number). Factories (``zeros_like``, ``new_ones``) and
sampling (``bernoulli``, ``rand_like``) return such tensors by design and are not cuts.

>>> import torch
>>> w = torch.ones(3, requires_grad=True)
>>> with CutSpy() as spy:
...     _ = (w * 2).mean()
>>> spy.cut
False
>>> with CutSpy() as spy:
...     _ = (w * 2).detach() + 1
>>> spy.cut
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_NOT_CUTS = ("_like", "new_", "rand", "normal", "bernoulli", "multinomial", "poisson", "empty", "zeros", "ones",
             "full", "size", "dim", "numel", "shape", "stride", "is_", "data_ptr", "element_size", "__len__")
_TO_PYTHON = frozenset({"item", "tolist", "numpy"})


class CutSpy(TorchFunctionMode):
    """``cut`` turns True at the first call that leaves the autograd graph (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = False

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not self.cut:
            name = getattr(func, "__name__", "")
            dropped = (isinstance(out, torch.Tensor) and out.is_floating_point() and not out.requires_grad) \
                or name in _TO_PYTHON
            if dropped and not any(part in name for part in _NOT_CUTS) and any(
                    isinstance(a, torch.Tensor) and a.requires_grad for a in (*args, *(kwargs or {}).values())):
                self.cut = True
        return out

    def stop(self) -> None:
        """Leave the mode stack, from under any mode pushed above it since."""
        leave_stack(self)


def leave_stack(mode: TorchFunctionMode) -> None:
    """Take ``mode`` off the function-mode stack, wherever it is in it, leaving the modes above it in place."""
    stack = torch.overrides._get_current_function_mode_stack()
    if not any(m is mode for m in stack):
        return
    if stack[-1] is mode:
        mode.__exit__(None, None, None)
        return
    above = []
    while (top := torch._C._pop_torch_function_stack()) is not mode:
        above.append(top)
    for m in reversed(above):
        torch._C._push_on_torch_function_stack(m)
