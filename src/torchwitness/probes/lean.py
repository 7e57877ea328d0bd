"""Lean audited steps: what dense auditing checks at every step, at a few microseconds per module.

With ``every_n_steps`` small, most audited steps are neither statistical nor fingerprinting (see
:data:`~torchwitness.probes.watch.STATISTICS_WARMUP`): what they judge is whether this step's numbers went
wrong (a non-finite output, gradient, input, target or loss; an exploding gradient norm). On such a step the
watch runs its between-audits path (sentinels, loss tap, same-input and eval-mode bookkeeping) plus:

- a plain forward hook on each module that can turn finite inputs into NaN/Inf (all but element-wise
  activations), holding its output until the training forward ends, when one ``_foreach_norm`` reduces them
  all (an L2 norm is finite exactly when every element is, short of elements past ~1e19, which no sane
  activation reaches: it is reported as non-finite, as the loss soon will be);
- after the optimizer step, one ``_foreach_norm`` over the gradients;
- one host read of those norms, the sentinels' sums and the loss.

When every number is finite and the gradient norm is under its threshold (nearly every step), that is all: the
step's summary joins the audit records. Otherwise the numbers become a :class:`StepView` (modules in call
order, gradients, inputs and targets as their sums) and the step-time rules judge it as they judge any audit,
so a fault is named at the step it happens, in the order of the data flow. The full Window path measured
~440 us a step on torch-audit's benchmark MLP; this one ~60 us.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.hooks import RemovableHandle

from torchwitness.probes.hookref import detachable
from torchwitness.probes.sentinel import first_bad, magnitude
from torchwitness.probes.transfer import cpu_list, to_host
from torchwitness.probes.view import LossInfo, ModuleInfo, ParamInfo, StepView, TensorInfo
from torchwitness.probes.window import first_tensor

if TYPE_CHECKING:
    from torchwitness.probes.watch import Watch

_SCALAR = ()
_INPUT = "\0input"  # the name under which the step's input is reduced with the module outputs


class Lean:
    """The hooks and per-step buffers of lean audited steps for one watch."""

    def __init__(self, watch: Watch, passive: tuple[type, ...]) -> None:
        self.watch = watch
        self._passive = passive
        self._handles: list[RemovableHandle] = []
        self._plan: list[tuple[torch.nn.Module, str]] | None = None
        self._params: list[tuple[str, torch.nn.Parameter]] | None = None
        self.active = False
        self.input: torch.Tensor | None = None  # the step's first floating input, when it is a new one
        self._outs: list[torch.Tensor] = []
        self._names: list[str] = []
        self._norms: list[torch.Tensor] = []  # 0-d norms of the hooked outputs, training forwards in order
        self._norm_names: list[str] = []
        self._grads: tuple[list[tuple[str, torch.nn.Parameter]], list[torch.Tensor]] | None = None
        self._modules: dict[str, torch.nn.Module] = {}

    # ---- arming -------------------------------------------------------------------------------------------
    def arm(self) -> None:
        self.active = True
        if self._handles:
            return
        if self._plan is None:  # planned again only when the watch's module tree changes (forget_plan)
            w = self.watch
            self._plan = [(m, w._names.get(id(m), type(m).__name__)) for m in w._inner.modules()
                          if m is not w._inner and not isinstance(m, (*self._passive, torch.jit.ScriptModule))]
            self._modules = {name: m for m, name in self._plan}
        for m, name in self._plan:
            self._handles.append(m.register_forward_hook(detachable(self._hook(name))))

    def forget_plan(self) -> None:
        """The module tree changed: hook the modules it holds now at the next lean step."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._plan = None

    def disarm(self) -> None:
        self.active = False
        self.input = None
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._outs.clear()
        self._names.clear()
        self._norms.clear()
        self._norm_names.clear()
        self._grads = None

    def _hook(self, name: str) -> Any:
        outs, names = self._outs, self._names

        def note(module: torch.nn.Module, args: tuple, output: Any) -> None:
            out = output if type(output) is torch.Tensor else first_tensor(output)
            # A container handing on its last child's output adds nothing; one that computes (a functional op
            # in its forward) is checked after its children, so the first non-finite name is the innermost.
            if out is not None and out.requires_grad and out.is_floating_point() and not (outs and outs[-1] is out):
                outs.append(out)
                names.append(name)
        return note

    # ---- during the step ----------------------------------------------------------------------------------
    def end_forward(self, output: Any) -> None:
        """A training forward ended: reduce its outputs (and the model's) to norms, and let go of them."""
        out = first_tensor(output)
        if out is not None and out.is_floating_point():
            self._outs.append(out)
            self._names.append("model")
        if self.input is not None:
            self._outs.append(self.input)
            self._names.append(_INPUT)
            self.input = None
        if self._outs:
            self._norms.extend(torch._foreach_norm([t.detach() for t in self._outs]))
            self._norm_names.extend(self._names)
            self._outs.clear()
            self._names.clear()

    def note_grads(self) -> None:
        """Reduce the gradients in the optimizer's pre-step hook (after ``GradScaler.unscale_``), while backward
        has just left them in the CPU's caches; a step with a closure has none yet and is reduced at its end."""
        if self._params is None:
            held = {id(p) for g in self.watch.optimizer.param_groups for p in g["params"]}
            self._params = [(n, p) for n, p in self.watch._inner.named_parameters()
                            if p.requires_grad and id(p) in held]
        with_grad = [(n, p) for n, p in self._params if p.grad is not None and not p.grad.is_sparse]
        self._grads = with_grad, list(torch._foreach_norm([p.grad for _, p in with_grad])) if with_grad else []

    def discard(self) -> None:
        """Let go of what an evaluation forward left (its outputs are not the step's training numbers)."""
        self._outs.clear()
        self._names.clear()
        self.input = None

    def finish(self, step: int) -> None:
        """After the optimizer step: read the step's numbers once; judge them only when one is out of order."""
        w = self.watch
        self.discard()
        if self._grads is None:
            self.note_grads()
        (with_grad, norms), self._grads = self._grads, None
        parts = self._norms
        parts.extend(norms)
        loss = w._losses[-1][1] if w._losses and w._losses[-1][0] == step else None
        if loss is not None:
            parts.append(magnitude(loss.detach().reshape(())))
        drained = w._sentinel.take()
        names = self._norm_names
        self._norms, self._norm_names = [], []
        chunks = ([torch.stack(parts)] if parts else []) + (drained[0] if drained else [])
        if not chunks:
            return
        flat = chunks[0] if len(chunks) == 1 else torch.cat(chunks)  # mixed float dtypes promote
        values = cpu_list(flat) if flat.is_cpu else to_host([[flat]], [flat.numel()])[0]  # the one host read
        n_act, n_grad = len(names), len(with_grad)
        grads = values[n_act:n_act + n_grad]
        loss_value = values[n_act + n_grad] if loss is not None else None
        total = math.sqrt(sum(g * g for g in grads))
        w._audit_log.lean(step, loss_value, total if grads else None)
        if all(map(math.isfinite, values)) and total <= w.thresholds["grad_norm_max"]:
            return
        sums = values[n_act + n_grad + (loss is not None):]
        w._run_rules(self._view(step, names, values[:n_act], with_grad, grads,
                                list(zip(sums, drained[1], strict=True)) if drained else [], loss_value))

    def _view(self, step: int, names: list[str], acts: list[float], with_grad: list[tuple[str, torch.nn.Parameter]],
              grads: list[float], sums: list[tuple[float, tuple[str, int]]], loss: float | None) -> StepView:
        """The step's numbers as the rules read an audited step: outputs in call order (a module called twice
        is non-finite when either call was), gradients, and inputs, targets and the loss's input as sums."""
        modules: dict[str, ModuleInfo] = {}
        inputs = []
        for name, value in zip(names, acts, strict=True):
            if name == _INPUT:
                inputs = [_summed(self.watch._sentinel_input, value)]
                continue
            info = modules.get(name)
            if info is None:
                m = self._modules.get(name, self.watch.model)
                info = modules[name] = ModuleInfo(name=name, kind=type(m).__name__, module=m, training=True,
                                                  grad_enabled=True)
                info.out = _summed("output", value)
            elif not math.isfinite(value):
                info.out = _summed("output", value)
        params = [ParamInfo(name=n, module=n.rpartition(".")[0] or "model", param=p, shape=tuple(p.shape),
                            dtype=p.dtype, has_grad=True, grad_norm=g)
                  for (n, p), g in zip(with_grad, grads, strict=True)]
        this_step = {field: x for x, (field, s) in sums if s == step}
        inputs += [_summed(field[6:], x) for field, x in this_step.items() if field.startswith("input:")]
        earlier = [(x, where) for x, where in sums if where[1] != step]
        targets = _summed("target", this_step["target"]) if "target" in this_step else None
        pred = _summed("input", this_step["pred"]) if "pred" in this_step else None
        lo = LossInfo(kind="loss", module=None, input=pred, target=targets, value=loss) \
            if loss is not None or pred is not None else None
        extra: dict[str, Any] = {}
        if earlier:
            extra["sentinel_where"] = [where for _, where in earlier]
            extra["sentinel"] = first_bad([x for x, _ in earlier], extra["sentinel_where"])
            if self.watch._sentinel_grad is not None:
                extra["sentinel_grad"] = self.watch._sentinel_grad[0]
        return StepView(event="step", step=step, watch=self.watch, inputs=inputs, targets=targets, loss=lo,
                        modules=modules, params=params, trained_modes=[True], forwards=1, statistics=False,
                        extra=extra)


def _summed(name: str, total: float) -> TensorInfo:
    """A tensor known by one reduction: non-finite exactly when the reduction is (what the rules ask of it)."""
    return TensorInfo(name=name, shape=_SCALAR, dtype=torch.float32, device="", stats={"mean": total})
