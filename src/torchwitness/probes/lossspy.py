"""Seeing a functional loss (``F.cross_entropy(model(x), y)``) without being handed a loss module.

Between the end of the model's forward and the optimizer step (where the loss is computed and backward is
called), a :class:`torch.overrides.TorchFunctionMode` notes calls to the loss functions of
``torch.nn.functional`` (used on audited steps) and to ``Tensor.backward`` (the loss history, every step).
Every other call passes straight through. The watch never uses it when given a loss module, under
``torch.compile``, or inside the optimizer's step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LOSS_FUNCTIONS: dict[Callable[..., Any], str] = {
    F.cross_entropy: "CrossEntropyLoss", F.nll_loss: "NLLLoss", F.mse_loss: "MSELoss", F.l1_loss: "L1Loss",
    F.smooth_l1_loss: "SmoothL1Loss", F.huber_loss: "HuberLoss", F.binary_cross_entropy: "BCELoss",
    F.binary_cross_entropy_with_logits: "BCEWithLogitsLoss", F.kl_div: "KLDivLoss",
}


class LossSpy(TorchFunctionMode):
    """Calls ``on_loss(kind, input, target, weighted, output)`` and ``on_backward(tensor)``."""

    def __init__(self, on_loss: Callable[..., None], on_backward: Callable[[torch.Tensor], None]) -> None:
        super().__init__()
        self.on_loss, self.on_backward = on_loss, on_backward
        self.active = True

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.active and func is torch.Tensor.backward and args and isinstance(args[0], torch.Tensor):
            self.on_backward(args[0])
        out = func(*args, **kwargs)
        kind = LOSS_FUNCTIONS.get(func) if self.active else None
        if kind is not None:
            x = args[0] if args else kwargs.get("input")
            t = args[1] if len(args) > 1 else kwargs.get("target")
            weighted = kwargs.get("weight") is not None or kwargs.get("pos_weight") is not None
            self.on_loss(kind, x, t, weighted, out)
        return out

    def start(self) -> None:
        self.__enter__()

    def stop(self) -> None:
        """Leave the mode stack; if user code pushed a mode above ours and kept it, only stop listening."""
        self.active = False
        stack = torch.overrides._get_current_function_mode_stack()
        if stack and stack[-1] is self:
            self.__exit__(None, None, None)
