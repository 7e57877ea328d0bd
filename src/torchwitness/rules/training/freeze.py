"""TW305, TW306: freezes: one written as a module attribute (which freezes or unfreezes nothing), and frozen
parameters that move all the same."""

from __future__ import annotations

import math
from collections.abc import Iterator

from torchwitness.probes.view import StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._registry import training_rule
from torchwitness.rules.training.optimizer import ART15

# The cosine between a frozen tensor's move and the way to its twin above which it is taken for an EMA update:
# an EMA points at its twin's recent average (cosine ~0.9 or more); a decay or a stray update at no twin (~0).
_TOWARDS_TWIN = 0.5


@training_rule("TW305", when=("init", "close"), name="noop-freeze-attribute", title="Freeze that does nothing",
               severity=Severity.ERROR, phase=Phase.INIT, obligations=ART15,
               remediation="Use module.requires_grad_(False) (with the underscore and parentheses), or set "
                           "requires_grad on each parameter.")
def noop_freeze_attribute(v: StepView) -> Iterator[Finding]:
    """``module.requires_grad = False`` only sets a Python attribute on the module; its parameters still
    train. The same holds the other way: ``module.requires_grad = True`` unfreezes nothing.

    Example: ``model.backbone.requires_grad = False``. Fix: ``model.backbone.requires_grad_(False)``.
    Looked for when the watch starts and again when it closes (a freeze or an unfreeze written mid-run, for
    fine-tuning).
    """
    reported = v.history.notes.setdefault("TW305", set())
    for name, m in v.watch._inner.named_modules():
        flag = m.__dict__.get("requires_grad")
        if not isinstance(flag, bool) or name in reported:
            continue
        held = [p.requires_grad for p in m.parameters()]
        label = name or "model"
        if not flag and any(held):
            reported.add(name)
            yield Finding.of("TW305", label, f"{label}.requires_grad = False is a plain attribute; its parameters "
                             "still require grad")
        elif flag and held and not any(held):
            reported.add(name)
            yield Finding.of("TW305", label, f"{label}.requires_grad = True is a plain attribute; its parameters "
                             "stay frozen (requires_grad_(True) unfreezes them)")


@training_rule("TW306", when=("step", "close"), name="frozen-params-change", title="Frozen parameters change",
               severity=Severity.ERROR, phase=Phase.STEP, obligations=ART15,
               remediation="Something updates parameters with requires_grad=False: an optimizer given "
                           "them with stale .grad, weight decay, a manual update, or loading weights each step.",
               statistical=True)
def frozen_params_change(v: StepView) -> Iterator[Finding]:
    """Parameters with ``requires_grad=False`` changed between audited steps: the freeze is not holding.

    Example: the backbone is frozen after a few steps but keeps its old ``.grad`` and stays in an optimizer
    with momentum, so it keeps moving. Fix: set ``p.grad = None`` and drop frozen tensors from the optimizer.

    Not reported: a frozen tensor that no optimizer step can move (not in its param groups, or without a
    ``.grad``) and that moved towards its trained twin (a parameter of the same shape whose name differs in one
    component: ``teacher.0.weight`` and ``student.0.weight``): an EMA or momentum teacher, a BYOL target or a
    DQN target network inside the model, updated under ``no_grad`` on purpose. Moved anywhere else (a weight
    decay applied by hand to every parameter), it is reported.

    At the end of the run, when no audited step saw it: frozen tensors that the optimizer still holds with a
    ``.grad`` (``zero_grad(set_to_none=False)`` keeps zeros) and either optimizer state (momentum, Adam's
    moments) or weight decay, and that changed since the watch started: every step keeps moving them.
    """
    if v.event == "close":
        yield from _frozen_still_stepped(v)
        return
    names = v.extra.get("frozen")
    data = v.extra.get("data", {})
    if not names or "frozen/norm" not in data:
        return
    now = dict(zip(names, (float(x) for x in data["frozen/norm"]), strict=True))
    before = v.history.notes.get("frozen", {})
    v.history.notes["frozen"] = now
    # A frozen tensor no optimizer step can move whose move points at its trained twin: an EMA teacher.
    toward = dict(zip(v.extra.get("frozen_twins", ()), data.get("frozen/twin", ()), strict=True))
    moved = [n for n, x in now.items() if n in before and x != before[n] and math.isfinite(x)
             and not toward.get(n, 0.0) >= _TOWARDS_TWIN]
    if moved:
        v.history.notes["TW306:reported"] = True
        yield Finding.of("TW306", moved[0].rpartition(".")[0] or "model",
                         f"{len(moved)} frozen tensors changed (e.g. {moved[0]})", step=v.step)


def _frozen_still_stepped(v: StepView) -> Iterator[Finding]:
    opt = v.optimizer
    if opt is None or v.history.notes.get("TW306:reported"):
        return
    names = {id(p): n for n, p in v.watch._inner.named_parameters()}
    stepped = [names[id(p)] for g in opt.param_groups for p in g["params"]
               if id(p) in names and not p.requires_grad and p.grad is not None
               and (opt.state.get(p) or g.get("weight_decay", 0) > 0)
               and p._version != v.watch.initial_versions.get(id(p))]
    if stepped:
        yield Finding.of("TW306", stepped[0].rpartition(".")[0] or "model", f"{len(stepped)} frozen tensors (e.g. "
                         f"{stepped[0]}) are still in the optimizer with a gradient (zeros kept by "
                         "zero_grad(set_to_none=False)) and momentum or weight decay: each step keeps moving them")
