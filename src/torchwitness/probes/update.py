"""The audited step's gradients and update: what the watch reads in the optimizer's step hooks.

:class:`StepUpdate` is a part of :class:`~torchwitness.probes.watch.Watch` (its state lives there), kept apart
as :class:`~torchwitness.probes.quiet.BetweenAudits` is: per-parameter infos and gradient norms before the
update (after ``GradScaler.unscale_``), a snapshot of the first elements of each tensor about to change, and
after the step the update/weight norms and the share of low-precision updates rounded away.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from torchwitness.probes.quiet import guarded
from torchwitness.probes.stats import SNAPSHOT, ParamHeads
from torchwitness.probes.view import ParamInfo
from torchwitness.probes.window import Window


class StepUpdate:
    """The optimizer step's hooks; gradients and update of an audited step."""

    # State owned by the watch (set in Watch.__init__), declared here for the methods below.
    optimizer: torch.optim.Optimizer | None
    _inner: torch.nn.Module
    _window: Any
    _heads: ParamHeads
    _lean: Any
    _external_forward: bool
    _spy_start: Callable[[], None]
    _spy_stop: Callable[[], None]
    _note_grad: Callable[[], None]
    _end_step: Callable[[], None]
    _internal_error: Callable[[str, Exception], None]
    _by_parts: bool
    _close_by_parts: Callable[[Any], None]

    # ---- the optimizer's step hooks (the pre-hook exists on audited steps only) ------------------------------
    @guarded
    def _pre_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self._by_parts:  # a forward opened by a part of the model and no backward seen (autograd.grad, say)
            self._close_by_parts(None)
        self._spy_stop()
        w = self._window
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0] is the optimizer
        if w is None:
            if self._lean is not None and self._lean.active and not callable(closure):
                self._lean.note_grads()
            return None
        if not callable(closure):
            self._before_update(w)
            return None
        # step(closure) (Lightning, LBFGS) runs forward and backward inside the step: the gradients to judge are
        # the ones the closure leaves, so the pre-update work waits for its first call.
        judged: list[bool] = []
        # Lightning computes the loss inside the closure (training_step): an open begin_forward() listens there.
        listen = self._external_forward

        def closure_then_judge() -> Any:
            if listen:
                self._spy_start()
            try:
                loss = closure()
            finally:
                if listen:
                    self._spy_stop()
            if not judged:
                judged.append(True)
                self._before_update(w)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": closure_then_judge}
        return (args[0], closure_then_judge, *args[2:]), kwargs

    def _post_step(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._window is not None:  # between audits there is no update to measure
            self._measure_update()
        elif self._lean is None or not self._lean.active:  # a lean audited step reads every gradient's norm itself
            try:
                self._note_grad()
            except Exception as e:
                self._internal_error("_note_grad", e)
        self._end_step()


    def _named_params(self, w: Window) -> list[tuple[str, torch.nn.Parameter]]:
        named = w.extra.get("named_params")
        if named is None:  # listed once per audited step: the model may have changed since the last one
            named = w.extra["named_params"] = list(self._inner.named_parameters())
        return named

    def _trainable(self, w: Window) -> list[torch.nn.Parameter]:
        return [p for _, p in self._named_params(w) if p.requires_grad]

    def _groups(self, w: Window) -> dict[int, int]:
        """id(parameter) -> index of its optimizer param group, mapped once per audited step."""
        groups = w.extra.get("groups")
        if groups is None:
            groups = w.extra["groups"] = {id(p): gi for gi, g in enumerate(self.optimizer.param_groups)
                                          for p in g["params"]} if self.optimizer is not None else {}
        return groups

    @guarded
    def _collect_grads(self, w: Window) -> None:
        in_opt = self._groups(w)
        named = self._named_params(w)
        w.params = [ParamInfo(name=n, module=n.rpartition(".")[0] or "model", param=p, shape=tuple(p.shape),
                              dtype=p.dtype, has_grad=p.grad is not None and not p.grad.is_sparse,
                              group=in_opt.get(id(p))) for n, p in named if p.requires_grad]
        frozen = [(n, p) for n, p in named if not p.requires_grad][:256] if w.statistics else []
        if frozen:  # a freeze that does not hold (TW306) shows between statistical steps all the same
            w.extra["frozen"] = [n for n, _ in frozen]
            w.pack.add("frozen/norm", torch.stack(torch._foreach_norm([p.detach() for _, p in frozen])))
            # Those no optimizer step can move (not held, or without .grad) that have a trained twin: an EMA
            # teacher moves towards it on purpose.
            pairs = twins([(n, p) for n, p in frozen if id(p) not in in_opt or p.grad is None],
                          [(n, p) for n, p in named if p.requires_grad])
            if pairs:
                w.extra["frozen_twins"] = [n for n, _, _ in pairs]
                w.pack.add("frozen/twin", self._heads.toward([(f, t) for _, f, t in pairs]))
        # A trainable tensor no param group holds may be updated by hand from its .grad (TW301 judges whether it
        # changes from one statistical step to the next). Not under a process group: FSDP registers unsharded
        # parameters the optimizer does not hold, whose storage is freed between forwards (reading it crashes).
        outside = [p for p in w.params if p.group is None][:256] \
            if w.statistics and self.optimizer is not None and not in_process_group() else []
        if outside:
            w.extra["outside"] = [p.name for p in outside]
            w.pack.add("outside/norm", torch.stack(torch._foreach_norm([p.param.detach() for p in outside])))
        with_grad = [p for p in w.params if p.has_grad]
        if with_grad:  # an L2 norm is 0 exactly when the gradient is all zeros, and NaN/Inf when any element is
            # Weight norms (for relative gradients) read every weight: a statistical probe.
            weights = [p.param.detach() for p in with_grad] if w.statistics else []
            w.pack.add("gp/norm", torch.stack(torch._foreach_norm([p.param.grad for p in with_grad] + weights)))
        if w.statistics:
            self._zero_filters(w, with_grad)

    def _zero_filters(self, w: Window, with_grad: list[ParamInfo]) -> None:
        # A filter behind a functional ReLU (F.relu) that never passes it is invisible in module outputs (the
        # convolution's own output is its pre-activation); its weights get exactly zero gradient instead.
        convs = [p for p in with_grad if len(p.shape) >= 3 and p.name.endswith("weight") and p.shape[0] >= 2]
        if convs:
            w.extra["filters"] = [(p.module, p.shape[0]) for p in convs]
            w.pack.add("gp/zero_filters", torch.stack([p.param.grad.flatten(1).abs().amax(1).eq(0).sum()
                                                       for p in convs]))

    def _before_update(self, w: Window) -> None:
        self._collect_grads(w)
        moving = [p for p in w.params if p.has_grad and p.group is not None] if w.statistics else []
        # Update-to-weight ratios are estimated on the first SNAPSHOT elements of each tensor the step is about
        # to change: copying whole tensors would cost more than the step of a small model.
        w.extra["after"], w.before = self._heads.snapshot([p.param for p in moving]) if moving else ([], [])
        w.extra["moving"] = moving
        w.lowp = [i for i, p in enumerate(p for p in w.params if p.has_grad)
                  if p.dtype in (torch.float16, torch.bfloat16) and p.group is not None] if moving else []

    @guarded
    def _measure_update(self) -> None:
        w = self._window
        if w is not None and w.before:
            moving, after = w.extra["moving"], w.extra.pop("after")
            # Starting norms and update norms in one batched reduction and one stack.
            n = len(w.before)
            norms = torch.stack(torch._foreach_norm([*w.before, *torch._foreach_sub(after, w.before)]))
            w.pack.add("s/norm", norms[:n])
            w.pack.add("u/norm", norms[n:])
            with_grad = [p for p in w.params if p.has_grad]
            lp = []
            for i in w.lowp:
                p = with_grad[i]
                j = next(k for k, m in enumerate(moving) if m is p)
                pushed = p.param.grad.reshape(-1)[:SNAPSHOT] != 0
                lp += [((after[j] == w.before[j]) & pushed).sum(), pushed.sum()]
            if lp:
                w.pack.add("lowp", torch.stack(lp))
            w.before = []


def twins(frozen: list[tuple[str, torch.nn.Parameter]], trainable: list[tuple[str, torch.nn.Parameter]]) \
        -> list[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
    """``(name, frozen tensor, its twin)`` for each frozen tensor with exactly one twin among ``trainable``: a
    parameter of the same shape and dtype whose name differs in one dotted component before the last
    (``teacher.0.weight`` and ``student.0.weight``). A mean teacher, a MoCo key encoder, a BYOL target or a DQN
    target network is such a frozen copy of trained layers, moved towards them by its own update (an EMA under
    ``no_grad``, a periodic ``load_state_dict``)."""
    if not frozen or not trainable:
        return []
    by_key: dict[tuple, dict[int, torch.nn.Parameter]] = {}
    for name, p in trainable:
        for key in _twin_keys(name, p):
            by_key.setdefault(key, {})[id(p)] = p
    found = []
    for name, p in frozen:
        matches = {i: t for key in _twin_keys(name, p) for i, t in by_key.get(key, {}).items()}
        if len(matches) == 1:
            found.append((name, p, next(iter(matches.values()))))
    return found


def _twin_keys(name: str, p: torch.Tensor) -> list[tuple]:
    parts = name.split(".")
    return [(tuple(p.shape), p.dtype, k, *parts[:k], *parts[k + 1:]) for k in range(len(parts) - 1)]


def in_process_group() -> bool:
    """Under torch.distributed, where FSDP swaps the registered parameters for unsharded ones."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()
