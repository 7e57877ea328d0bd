"""Seeing a functional loss (``F.cross_entropy(model(x), y)``) without being handed a loss module.

On audited steps, between the end of the model's forward and the optimizer step (where the loss is computed
and backward is called), a :class:`torch.overrides.TorchFunctionMode` notes calls to the loss functions of
``torch.nn.functional`` and to ``Tensor.backward``; every other call passes straight through. Between audits,
a cheaper tap (:func:`listen`) wraps ``Tensor.backward`` and the functional losses themselves, for the loss
history and the sentinels. The watch never uses the mode when given a loss module, under ``torch.compile``,
or inside the optimizer's step.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from torchwitness.probes.cutspy import leave_stack

LOSS_FUNCTIONS: dict[Callable[..., Any], str] = {
    F.cross_entropy: "CrossEntropyLoss", F.nll_loss: "NLLLoss", F.mse_loss: "MSELoss", F.l1_loss: "L1Loss",
    F.smooth_l1_loss: "SmoothL1Loss", F.huber_loss: "HuberLoss", F.binary_cross_entropy: "BCELoss",
    F.binary_cross_entropy_with_logits: "BCEWithLogitsLoss", F.kl_div: "KLDivLoss",
}


# Calls that reshape, cast or copy a tensor without changing its values: a target that went only through these
# is still the data's target.
_PASS_THROUGH = frozenset({
    torch.Tensor.float, torch.Tensor.double, torch.Tensor.half, torch.Tensor.to, torch.Tensor.type,
    torch.Tensor.view, torch.Tensor.view_as, torch.Tensor.reshape, torch.Tensor.reshape_as, torch.Tensor.flatten,
    torch.Tensor.unsqueeze, torch.Tensor.squeeze, torch.Tensor.contiguous, torch.Tensor.clone,
    torch.Tensor.detach, torch.Tensor.__getitem__, torch.Tensor.long, torch.Tensor.permute, torch.Tensor.t,
    torch.Tensor.transpose, torch.Tensor.expand_as, torch.Tensor.cuda, torch.Tensor.cpu, torch.unsqueeze,
    torch.squeeze, torch.reshape, torch.flatten, torch.Tensor.bfloat16,
})


# Tensors filled with one value by construction: a target made by these (a GAN's real/fake labels) holds no class
# frequencies of any data.
_FACTORIES = frozenset({torch.ones, torch.zeros, torch.full, torch.ones_like, torch.zeros_like, torch.full_like})


def loss_options(get: Callable[[str], Any]) -> dict[str, Any]:
    """What a loss call was told besides its input and target, from its keyword arguments (``kwargs.get``) or its
    module's attributes: ``weights``, ``("pos", pos_weight)`` or ``("class", weight)`` (a binary loss's ``weight``
    rescales elements, not classes: :meth:`~torchwitness.probes.window.Window.add_loss`, which knows the loss
    kind, tells it apart), and ``ignore``, an ``ignore_index`` that is a class id (padding's, say)."""
    pos, weight, ignore = get("pos_weight"), get("weight"), get("ignore_index")
    weights = ("pos", pos) if pos is not None else None if weight is None else ("class", weight)
    return {"weights": weights, "ignore": ignore if isinstance(ignore, int) and ignore >= 0 else None}


class LossSpy(TorchFunctionMode):
    """Calls ``on_loss(kind, input, target, options, output, origin)`` (``options``: :func:`loss_options`) and
    ``on_backward(tensor)``.

    ``origin`` is ``"data"`` for a target that existed before the model's forward ended (reshaped or cast at
    most), ``"computed"`` for one made by arithmetic after it (``log1p(y)``, say: non-finite values in it were
    made by the loss computation, not found in the data), and ``"constant"`` for one filled with a single value
    by construction after it (``torch.ones_like(d_out)``).
    """

    def __init__(self, on_loss: Callable[..., None], on_backward: Callable[[torch.Tensor], None]) -> None:
        super().__init__()
        self.on_loss, self.on_backward = on_loss, on_backward
        self.active = True
        self.thread = threading.get_ident()  # whose mode stack start() pushes it on (the watch starts it at once)
        self._computed: dict[int, torch.Tensor] = {}  # id -> tensor (held, so the id is not reused meanwhile)
        self._constant: dict[int, torch.Tensor] = {}

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if self.active and func is torch.Tensor.backward and args and isinstance(args[0], torch.Tensor):
            self.on_backward(args[0])
        out = func(*args, **kwargs)
        if not self.active:
            return out
        kind = LOSS_FUNCTIONS.get(func)
        if kind is not None:
            x = args[0] if args else kwargs.get("input")
            t = args[1] if len(args) > 1 else kwargs.get("target")
            origin = "constant" if id(t) in self._constant else "computed" if id(t) in self._computed else "data"
            self.on_loss(kind, x, t, loss_options(kwargs.get), out, origin)
        elif isinstance(out, torch.Tensor):
            if func in _FACTORIES or (func in _PASS_THROUGH and any(id(a) in self._constant for a in args)):
                self._constant[id(out)] = out
            if func not in _PASS_THROUGH or any(id(a) in self._computed for a in args):
                self._computed[id(out)] = out
        return out

    def start(self) -> None:
        self.__enter__()

    def on_top(self) -> bool:
        """The mode is the innermost one (not while its own handler runs: torch pops it meanwhile)."""
        stack = torch.overrides._get_current_function_mode_stack()
        return bool(stack) and stack[-1] is self

    def stop(self) -> None:
        """Leave the mode stack, from under any mode pushed above ours since (another watch's spy, the user's):
        left in the stack, an idle spy would still see every torch call of the process."""
        self.active = False
        self._computed.clear()
        self._constant.clear()
        leave_stack(self)


# ---- between audits: a tap on Tensor.backward and the functional losses (no function mode) ---------------------
_LISTENERS: list[Any] = []
_ORIGINALS: dict[str, Any] = {}
_TAPS: list[tuple[Any, str, Any, Any]] = []  # (owner, attribute, original, tapped): zero_grad and F.<loss>
_TAPS_ON = [False]


_GRAD_CALLS = [0]  # torch.autograd.grad calls under way (their backward leaves .grad alone)


def grad_call_running() -> bool:
    """A ``torch.autograd.grad`` call is running: the backward under way accumulates nothing into ``.grad``."""
    return _GRAD_CALLS[0] > 0


def _tapped_grad(*args: Any, **kwargs: Any) -> Any:
    _GRAD_CALLS[0] += 1
    try:
        return _ORIGINALS["grad"](*args, **kwargs)
    finally:
        _GRAD_CALLS[0] -= 1


def _tapped_backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    # Between audits (tapping, no spy) a listener's work is one detach: these loops are the whole per-step cost.
    for listener in _LISTENERS:
        if listener.tapping:
            listener.tap_backward(self)
        else:  # not after a forward of its model (an audited step's spy sees its own, or another model trains)
            listener.backward_elsewhere += 1
        w = listener._window
        if w is not None:  # an audited step: one backward per loss call is gradient accumulation, not a sum
            w.backwards += 1
    out = _ORIGINALS["backward"](self, *args, **kwargs)
    for listener in _LISTENERS:
        if listener._spy is not None:
            listener.after_backward()
    return out


def _tapped_zero_grad(original: Callable[..., Any]) -> Callable[..., Any]:
    def zero_grad(self: Any, *args: Any, **kwargs: Any) -> Any:
        for listener in _LISTENERS:
            if listener._window is not None:  # only an audited step asks whether gradients were cleared
                listener.zero_grad_called(self)
        return original(self, *args, **kwargs)

    zero_grad.__name__, zero_grad.__qualname__, zero_grad.__doc__ = (
        original.__name__, original.__qualname__, original.__doc__)
    return zero_grad


def _tap_loss(name: str, kind: str) -> Callable[..., Any]:
    original = getattr(F, name)

    def tapped(input: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        # Only a floating target can turn non-finite: class ids are not worth a call into the watch.
        if isinstance(target, torch.Tensor) and target.is_floating_point():
            for listener in _LISTENERS:
                if listener.tapping:
                    listener.tap_loss(kind, input, target)
        out = original(input, target, *args, **kwargs)
        for listener in _LISTENERS:
            if listener._window is not None:  # an audited step: a loss the model computes in its own forward
                listener.loss_in_forward(kind, input, target, out, loss_options(kwargs.get))
        return out

    tapped.__name__, tapped.__qualname__, tapped.__doc__ = original.__name__, original.__qualname__, original.__doc__
    return tapped


def listen(listener: Any) -> None:
    """Route the losses given to backward to ``listener`` (its ``tap_backward(loss)``, while its ``tapping`` is
    true; ``after_backward()`` when each backward returns, while its ``_spy`` is set). While a listener's
    ``wants_taps()`` is true (see :func:`refresh`), the functional losses of ``torch.nn.functional`` are routed
    too (``tap_loss(kind, input, target)`` for a floating target while ``tapping``; ``loss_in_forward(kind,
    input, target, output, options)`` while its ``_window``, an audited step, is open), and so are the calls
    that clear gradients (``zero_grad_called(owner)``, while ``_window`` is open: neither optimizers nor modules
    offer a hook for it). Calls to ``torch.autograd.grad`` are counted (:func:`grad_call_running`): their
    backward leaves ``.grad`` alone.

    Between audited steps a function mode would cost ~10 us per torch call of the loss computation; these
    wrappers cost a loop over the listeners. Installed with the first listener, removed with the last. Loss
    modules look ``F.<loss>`` up at call time, so they are seen too; a loss function imported by name before
    the first watch started is not (it is still seen on audited steps).
    """
    if not _LISTENERS:
        _ORIGINALS["backward"] = torch.Tensor.backward
        torch.Tensor.backward = _tapped_backward  # type: ignore[method-assign]
        _ORIGINALS["grad"] = torch.autograd.grad
        functools.update_wrapper(_tapped_grad, torch.autograd.grad)
        torch.autograd.grad = _tapped_grad
        for owner in (torch.optim.Optimizer, torch.nn.Module):
            _TAPS.append((owner, "zero_grad", owner.zero_grad, _tapped_zero_grad(owner.zero_grad)))
        for fn, kind in list(LOSS_FUNCTIONS.items()):
            if getattr(F, fn.__name__) is fn:
                tapped = _tap_loss(fn.__name__, kind)
                LOSS_FUNCTIONS[tapped] = kind  # F.<loss> names itself to handle_torch_function: the spy sees this
                _TAPS.append((F, fn.__name__, fn, tapped))
    _LISTENERS.append(listener)
    refresh()


def refresh() -> None:
    """Put the zero_grad and functional-loss taps in place while a listener's ``wants_taps()`` is true, and the
    originals back otherwise: an unaudited step of a loop whose loss has class-index targets then pays for
    neither (two Python calls of the dozen its watch costs)."""
    want = any(listener.wants_taps() for listener in _LISTENERS)
    if want == _TAPS_ON[0]:
        return
    _TAPS_ON[0] = want
    for owner, name, original, tapped in _TAPS:
        if getattr(owner, name) is (original if want else tapped):  # another patch since is left in place
            setattr(owner, name, tapped if want else original)


def unlisten(listener: Any) -> None:
    """Stop routing to ``listener``; the last one restores the originals."""
    if listener in _LISTENERS:
        _LISTENERS.remove(listener)
    refresh()
    if not _LISTENERS and _ORIGINALS:
        torch.Tensor.backward = _ORIGINALS.pop("backward")  # type: ignore[method-assign]
        torch.autograd.grad = _ORIGINALS.pop("grad")
        for _, _, _, tapped in _TAPS:
            LOSS_FUNCTIONS.pop(tapped, None)
        _TAPS.clear()
        _ORIGINALS.clear()
