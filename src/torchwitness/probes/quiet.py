"""What the watch does between audited steps and around the loss call: the sentinels' sums, the input
bookkeeping, the loss tap and the function mode that sees functional losses on audited steps.

:class:`BetweenAudits` is a part of :class:`~torchwitness.probes.watch.Watch` (its state lives there); it is
kept apart so that the per-step path, which runs with the CPU's caches cold after the step's kernels, reads as
one short piece of code.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import torch

from torchwitness.probes.cutspy import CutSpy
from torchwitness.probes.inrange import EMBEDDINGS, SameInput
from torchwitness.probes.lossspy import LossSpy, refresh
from torchwitness.probes.sentinel import Sentinel, floating
from torchwitness.probes.window import tensors_of

MAX_PENDING_LOSSES = 8192  # losses kept between two audits (each a detached 0-d tensor)


def guarded(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Hooks run inside the user's training step: a failure of the watch is recorded, never raised into it."""

    @functools.wraps(hook)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return hook(self, *args, **kwargs)
        except Exception as e:
            self._internal_error(hook.__name__, e)
            return None

    return run


class BetweenAudits:
    """Between audits: sentinels, the same-input bookkeeping and the loss tap; around the loss: the spy."""

    # State owned by the watch (set in Watch.__init__), declared here for the methods below.
    step: int
    tapping: bool
    compiled: bool
    loss_fn: Any
    optimizer: torch.optim.Optimizer | None
    same_input: SameInput
    masks: set[str]
    _sentinel_input: str
    _inner: torch.nn.Module
    _window: Any
    _sentinel: Sentinel
    _sentinel_grad: tuple[str, torch.nn.Parameter] | None
    _lean: Any
    _zeroed: bool
    model: torch.nn.Module
    _spy: LossSpy | None
    _cut: CutSpy | None = None  # the forward's cut spy, while one runs
    history: Any
    _losses: list[tuple[int, torch.Tensor]]
    _peek_step: int
    _same_step: int
    _internal_error: Callable[[str, Exception], None]
    _float_targets: bool
    _by_parts: bool
    _close_by_parts: Callable[[Any], None]
    _peek_batch: Callable[[tuple, dict], None]

    def _between_audits(self, args: tuple, kwargs: dict) -> None:
        # Runs at every unaudited step, right after the previous step's kernels left the CPU's caches cold: the
        # common call model(x) takes a short path (tensors_of costs ~20 us there).
        if self._peek_step == self.step:
            self._peek_batch(args, kwargs)
        if len(args) == 1 and not kwargs and type(args[0]) is torch.Tensor and args[0].layout == torch.strided:
            x, target = args[0], None
            self._sentinel_input = "arg0"
            same = self._same_step != self.step
            if same:
                self._same_step = self.step
                same = self.same_input.see(self.step, x)
        else:
            found, target = tensors_of(args, kwargs)
            # The first floating input that is not an additive attention mask (audited steps tell them: their -inf
            # is by design).
            inputs = [(n, t) for n, t in found if floating(t) is not None and n not in self.masks]
            name, x = inputs[0] if inputs else ("", None)
            self._sentinel_input = name
            same = self._see_input(found)
            for n, t in inputs[1:]:  # a second input (model(a, b), a dict batch) under its own name
                self._sentinel.note(f"input:{n}", self.step, t)
        # An input unchanged since the step before has the sum it had then: nothing new to check.
        if not same and x is not None and x.is_floating_point() and x.numel():
            if self._lean is not None and self._lean.active:
                self._lean.input = x  # reduced with the step's module outputs, in one kernel
            else:
                self._sentinel.note("input", self.step, x)
        if target is not None and floating(target) is not None:
            self._sentinel.note("target", self.step, target)

    def _see_first(self, x: torch.Tensor) -> bool:
        self._same_step = self.step
        return self.same_input.see(self.step, x)

    def _see_input(self, found: list[tuple[str, torch.Tensor]]) -> bool:
        if found and self._same_step != self.step:  # the step's first forward (a second view is another input)
            return self._see_first(found[0][1])
        return False

    def wants_taps(self) -> bool:
        """The functional-loss and zero_grad taps are wanted (see :func:`~torchwitness.probes.lossspy.refresh`):
        on an audited step, and between audits once a loss was seen with a floating target (its sentinel)."""
        return self._window is not None or self._float_targets

    def _floating_target(self, t: Any) -> None:
        if not self._float_targets and floating(t) is not None:
            self._float_targets = True
            refresh()

    def _spy_start(self) -> None:
        if self._spy is None and not self.compiled and not isinstance(self.loss_fn, torch.nn.Module):
            self._spy = LossSpy(self._spied_loss, self.tap_backward)
            self._spy.start()

    def _spy_stop(self, closing: bool = False) -> None:
        # A mode lives on the stack of the thread that pushed it: another thread's forward (an evaluation running
        # beside training) must leave it alone, or the spy would stay on the training thread's stack for good.
        if self._spy is not None and self._spy.thread != threading.get_ident() and not closing:
            return
        self.tapping = False
        if self._spy is not None:
            self._spy.stop()
            self._spy = None
        if self._cut is not None:  # a forward that raised before its end: the mode must not outlive the step
            self._cut_stop(None)

    def _cut_start(self, w: Any) -> None:
        """A statistical step after one whose inputs a cut or a discarded output could explain: its forward runs
        under the function mode that looks for the cut itself (probes/cutspy.py)."""
        notes = self.history.notes
        if w.statistics and self._cut is None and not self.compiled and notes.get("TW110:suspect") is not None \
                and not notes.get("TW110:checked") and not notes.get("TW110:detached"):
            self._cut = CutSpy()
            self._cut.__enter__()
            w.extra["cut_checked"] = True

    def _cut_stop(self, w: Any) -> None:
        spy, self._cut = self._cut, None
        if spy is not None:
            spy.stop()
            if spy.cut and w is not None:
                w.extra["detached_use"] = True

    @guarded
    def _spied_loss(self, kind: str, x: Any, t: Any, options: dict, out: Any, origin: str) -> None:
        self._floating_target(t)
        w = self._window
        if w is None:
            if torch.is_grad_enabled() and origin == "data":
                self._note_loss_call(x, t)
        elif w.loss is None and torch.is_grad_enabled():
            w.add_loss(kind, x, t, out, options=options)
            if w.loss is not None:
                w.loss.target_computed = origin != "data"
                w.loss.target_constant = origin == "constant"
        elif torch.is_grad_enabled() and origin == "data":
            w.more_targets(kind, x, t)

    @guarded
    def tap_loss(self, kind: str, x: Any, t: Any) -> None:
        if torch.is_grad_enabled():
            self._note_loss_call(x, t)

    @guarded
    def loss_in_forward(self, kind: str, x: Any, t: Any, out: Any, options: dict) -> None:
        # The spy listens from the end of the model's forward; a model that computes its loss inside forward
        # (Hugging Face's labels=...) is seen here. Under the spy this call is nested in its handler: the spy
        # notes the loss itself, with what it knows of the target's history.
        w = self._window
        if w is not None and w.thread != threading.get_ident():  # a loss another thread computes meanwhile
            return
        self._floating_target(t)
        if self._spy is None and w is not None and w.forwards and torch.is_grad_enabled():
            if w.loss is None:
                w.add_loss(kind, x, t, out, options=options)
            else:  # a later loss call of the step, once the spy has stopped (a second forward stops it)
                w.more_targets(kind, x, t)

    def tap_backward(self, loss: torch.Tensor) -> None:
        # Not @guarded: this runs at every step, where each Python frame is a measurable part of the cost.
        try:
            if self._by_parts:  # the forward a part of the model opened ends where backward starts
                self._close_by_parts(loss)
            if loss.numel() == 1 and not (self._losses and self._losses[-1][0] == self.step) \
                    and len(self._losses) < MAX_PENDING_LOSSES:
                self._losses.append((self.step, loss.detach()))
        except Exception as e:
            self._internal_error("tap_backward", e)

    def after_backward(self) -> None:
        # An audited step whose loss call and backward were both seen: the function mode has nothing left to note
        # before the optimizer step, and would otherwise intercept the optimizer's own torch calls (~10 us each).
        # Only from the outermost backward call: the one the mode's handler makes runs with the mode popped.
        w = self._window
        if self._spy is not None and w is not None and w.loss is not None and self._losses \
                and self._losses[-1][0] == self.step and self._spy.on_top():
            self._spy_stop()

    def zero_grad_called(self, owner: Any) -> None:
        if owner is self.optimizer or owner is self.model or owner is self._inner:
            self._zeroed = True

    def _note_loss_call(self, x: Any, t: Any) -> None:
        # A floating target and the prediction it meets: which of them turned non-finite first tells bad labels
        # from a loss computation that made NaN (log of a negative prediction, say). Class ids cannot be NaN.
        t = floating(t)
        if t is not None:
            self._sentinel.note("target", self.step, t)
            if floating(x) is not None:
                self._sentinel.note("pred", self.step, x)

    def _note_grad(self) -> None:
        # After the optimizer step (grads are left as backward made them): a gradient near the input, into which
        # NaN/Inf made anywhere downstream, in forward or backward, spreads.
        if self._sentinel_grad is None:
            self._sentinel_grad = self._sentinel_tensor()
            if self._sentinel_grad is None:
                return
        g = self._sentinel_grad[1].grad
        if g is not None and not g.is_sparse:
            self._sentinel.note("grad", self.step, g)

    def _sentinel_tensor(self) -> tuple[str, torch.nn.Parameter] | None:
        """The smallest trainable tensor of the first module, in the optimizer's order, that is not an embedding
        table (a bias rather than its weight matrix): its gradient carries what the whole backward carries, and
        summing it costs nothing next to a 50k-row table's. The first trainable tensor when nothing else fits."""
        held = [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]
        if not held:
            return None
        names = {id(p): n for n, p in self._inner.named_parameters()}
        owners = {id(p): m for m in self._inner.modules() for p in m.parameters(recurse=False)}
        first = next((p for p in held if not isinstance(owners.get(id(p)), EMBEDDINGS)), held[0])
        owner = owners.get(id(first))
        peers = [p for p in held if owners.get(id(p)) is owner] if owner is not None else [first]
        chosen = min(peers, key=lambda p: p.numel())
        return names.get(id(chosen), "param"), chosen
