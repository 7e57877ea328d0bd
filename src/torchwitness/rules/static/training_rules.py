"""Static rules on training-loop mistakes: mode misuse, ``requires_grad`` on modules, Adam with weight decay,
softmax before cross-entropy, gradients never zeroed.

Each is a silent accuracy bug (EU AI Act Art. 15(1)): the code runs, the loss goes down, the model is worse.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from torchwitness.rules.catalogue import Phase, Severity, rule
from torchwitness.rules.findings import Finding
from torchwitness.rules.static.context import Assign, CallSite, FileContext, constant, dotted, is_torch_module_class
from torchwitness.rules.static.repro_rules import training_loops

TRIGGERS = {  # a file containing none of these substrings cannot trigger the rule, and is not parsed for it
    "TW605": (".backward(",),
    "TW606": (".requires_grad =", ".requires_grad="),
    "TW607": ("Adam",),
    "TW608": ("cross_entropy", "CrossEntropyLoss"),
    "TW609": (".backward(",),
}
_OBLIGATIONS = ("eu-ai-act:15(1)",)
_SOFTMAX = {"torch.softmax", "torch.log_softmax", "torch.nn.functional.softmax", "torch.nn.functional.log_softmax",
            "torch.special.softmax", "torch.special.log_softmax"}
_CROSS_ENTROPY = "torch.nn.functional.cross_entropy"
_CE_MODULE = "torch.nn.CrossEntropyLoss"
_MODULE_ITERATORS = {"modules", "children", "named_modules", "named_children"}


def _mode_call(call: CallSite) -> str | None:
    """``"eval"`` for ``m.eval()`` / ``m.train(False)``, ``"train"`` for ``m.train()`` / ``m.train(True)``."""
    if call.attr == "eval" and not call.node.args and not call.node.keywords and call.receiver:
        return "eval"
    if call.attr == "train" and call.receiver and len(call.node.args) <= 1 and not call.node.keywords:
        arg = constant(call.node.args[0]) if call.node.args else True
        return "train" if arg is not False else "eval"
    return None


@rule("TW605", name="train-in-eval-mode", title="training loop runs with the model left in eval mode",
      severity=Severity.ERROR, phase=Phase.STATIC, obligations=_OBLIGATIONS,
      remediation="Call model.train() at the top of each training epoch (after any validation that called "
                  "model.eval()).")
def train_in_eval_mode(ctx: FileContext) -> Iterator[Finding]:
    """A model switched to ``eval()`` is then trained without ``train()`` in between: dropout stays off and
    batch-norm statistics stay frozen while the optimizer updates weights.

    Example::

        for epoch in range(10):
            for x, y in loader:
                loss_fn(model(x), y).backward(); opt.step()
            model.eval(); validate(model)        # the next epoch trains in eval mode

    Fix: ``model.train()`` at the start of the epoch loop.
    """
    reported: set[tuple[str, int]] = set()
    for loop, inside in training_loops(ctx):
        called = {c.raw for c in inside}
        modes_inside = [(c.line, c.receiver, _mode_call(c)) for c in inside]
        backward_line = min(c.line for c in inside if c.attr == "backward")
        for line, receiver, mode in modes_inside:
            # eval() inside the loop after backward, and no train() anywhere in it: later iterations train in eval
            if mode == "eval" and line > backward_line and receiver in called and not any(
                    r == receiver and m == "train" for _, r, m in modes_inside) and (receiver, line) not in reported:
                reported.add((receiver, line))
                yield ctx.finding("TW605", loop.node, f"{receiver}.eval() (line {line}) inside this training loop "
                                  f"is never undone by {receiver}.train(): later iterations train in eval mode",
                                  model=receiver)
        last_mode: dict[str, tuple[str, int]] = {}
        for c in ctx.calls:
            if c.scope != loop.scope or c.line >= loop.node.lineno:
                continue
            mode = _mode_call(c)
            if mode and c.receiver:
                last_mode[c.receiver] = (mode, c.line)
        for receiver, (mode, line) in last_mode.items():
            if mode == "eval" and receiver in called and (receiver, line) not in reported and not any(
                    r == receiver and m == "train" for _, r, m in modes_inside):
                reported.add((receiver, line))
                yield ctx.finding("TW605", loop.node, f"{receiver}.eval() at line {line} is still in force when "
                                  "this training loop calls backward()", model=receiver)


def _module_names(ctx: FileContext) -> dict[str, set[str]]:
    """Per scope, the dotted names statically known to hold an ``nn.Module``."""
    names: dict[str, set[str]] = {}
    for a in ctx.assigns:
        if a.target and isinstance(a.value, ast.Call):
            callee = ctx.resolve(dotted(a.value.func))
            if is_torch_module_class(callee) or (callee and ctx.is_module_class(callee)):
                names.setdefault(a.scope, set()).add(a.target)
    for loop in ctx.loops:
        node = loop.node
        if isinstance(node, (ast.For, ast.AsyncFor)) and isinstance(node.iter, ast.Call) and isinstance(
                node.iter.func, ast.Attribute) and node.iter.func.attr in _MODULE_ITERATORS:
            target = node.target
            if isinstance(target, ast.Tuple) and target.elts:
                target = target.elts[-1]  # named_modules() yields (name, module)
            if isinstance(target, ast.Name):
                names.setdefault(loop.scope, set()).add(target.id)
    for qual in ctx.functions:
        cls, _, _ = qual.rpartition(".")
        if cls in ctx.classes and ctx.is_module_class(cls):
            names.setdefault(qual, set()).add("self")
    return names


@rule("TW606", name="module-requires-grad", title="requires_grad assigned on a Module",
      severity=Severity.ERROR, phase=Phase.STATIC, obligations=_OBLIGATIONS,
      remediation="Use module.requires_grad_(False) (or set it on each parameter); assigning the attribute on a "
                  "Module only creates a new Python attribute.")
def module_requires_grad(ctx: FileContext) -> Iterator[Finding]:
    """``module.requires_grad = False`` freezes nothing: ``nn.Module`` has no such attribute, the assignment just
    adds one, and every parameter keeps training.

    Example::

        for m in model.children():
            m.requires_grad = False

    Fix: ``m.requires_grad_(False)`` or ``for p in m.parameters(): p.requires_grad = False``.
    """
    modules = _module_names(ctx)
    for a in ctx.assigns:
        if not a.target or not a.target.endswith(".requires_grad"):
            continue
        owner = a.target.rsplit(".", 1)[0]
        if owner in modules.get(a.scope, ()) or owner in modules.get(_outer_init(ctx, a), ()):
            yield ctx.finding("TW606", a.node, f"{owner} is an nn.Module: assigning {a.target} freezes nothing; "
                              f"use {owner}.requires_grad_(False)")


def _outer_init(ctx: FileContext, a: Assign) -> str:
    """Attributes assigned in ``__init__`` (``self.encoder = nn.Linear(...)``) are modules in every method."""
    cls, _, _ = a.scope.rpartition(".")
    return f"{cls}.__init__" if cls else ""


@rule("TW607", name="adam-weight-decay", title="Adam with weight_decay (L2 penalty, not decoupled decay)",
      severity=Severity.WARN, phase=Phase.STATIC, obligations=_OBLIGATIONS,
      remediation="Use torch.optim.AdamW(..., weight_decay=...) for decoupled weight decay.",
      references=("https://arxiv.org/abs/1711.05101",))
def adam_weight_decay(ctx: FileContext) -> Iterator[Finding]:
    """``torch.optim.Adam(weight_decay=w)`` adds ``w*param`` to the gradient, which Adam's scaling then undoes for
    parameters with large gradients: it is not the weight decay most recipes (and papers) mean.

    Example::

        torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-2)

    Fix: ``torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)``.
    """
    for call in ctx.calls_named("torch.optim.Adam", "torch.optim.adam.Adam"):
        wd = call.kwarg("weight_decay")
        if wd is None and len(call.node.args) >= 5:
            wd = call.node.args[4]
        if wd is not None and constant(wd) not in (0, 0.0):
            yield ctx.finding("TW607", call.node, "Adam with weight_decay applies an L2 penalty; use AdamW")


def _is_softmax(ctx: FileContext, node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    raw = dotted(node.func) if not isinstance(node.func, ast.Call) else None
    name = ctx.resolve(raw)
    if name in _SOFTMAX or (raw and raw.rsplit(".", 1)[-1] in ("softmax", "log_softmax") and "." in raw):
        return True
    # nn.Softmax(dim=1)(x)
    return isinstance(node.func, ast.Call) and ctx.resolve(dotted(node.func.func)) in (
        "torch.nn.Softmax", "torch.nn.LogSoftmax")


@rule("TW608", name="softmax-before-cross-entropy", title="softmax applied before CrossEntropyLoss",
      severity=Severity.ERROR, phase=Phase.STATIC, obligations=_OBLIGATIONS,
      remediation="Feed raw logits to CrossEntropyLoss / F.cross_entropy (it applies log_softmax itself), or use "
                  "NLLLoss after log_softmax.")
def softmax_before_cross_entropy(ctx: FileContext) -> Iterator[Finding]:
    """Cross-entropy applies ``log_softmax`` itself; a softmax before it squashes the gradients (double softmax)
    and a log_softmax before it is redundant at best.

    Example::

        loss = F.cross_entropy(F.softmax(logits, dim=1), y)
        model = nn.Sequential(nn.Linear(8, 3), nn.Softmax(dim=1)); criterion = nn.CrossEntropyLoss()

    Fix: pass logits: ``F.cross_entropy(logits, y)``.
    """
    criteria = {a.target for a in ctx.assigns
                if a.target and isinstance(a.value, ast.Call) and ctx.resolve(dotted(a.value.func)) == _CE_MODULE}
    softmaxed: dict[str, list[tuple[int, str]]] = {}
    for a in ctx.assigns:
        if a.target and _is_softmax(ctx, a.value):
            softmaxed.setdefault(a.scope, []).append((a.node.lineno, a.target))
    for call in ctx.calls:
        is_ce = call.name == _CROSS_ENTROPY or call.raw in criteria or (
            isinstance(call.node.func, ast.Call) and ctx.resolve(dotted(call.node.func.func)) == _CE_MODULE)
        if not is_ce or not call.node.args:
            continue
        first = call.node.args[0]
        direct = _is_softmax(ctx, first)
        name = dotted(first)
        # the latest assignment of that name before this call decides
        latest = [t for line, t in softmaxed.get(call.scope, ()) if line < call.line]
        reassigned = any(a.target == name and a.scope == call.scope and a.node.lineno < call.line
                         and not _is_softmax(ctx, a.value) and a.node.lineno > max(
                             (ln for ln, t in softmaxed.get(call.scope, ()) if t == name), default=0)
                         for a in ctx.assigns)
        if direct or (name in latest and not reassigned):
            yield ctx.finding("TW608", call.node, "cross-entropy receives softmax output; it expects logits")
    if criteria or any(True for _ in ctx.calls_named(_CROSS_ENTROPY)):
        for call in ctx.calls_named("torch.nn.Sequential"):
            last = call.node.args[-1] if call.node.args else None
            if isinstance(last, ast.Call) and ctx.resolve(dotted(last.func)) in ("torch.nn.Softmax",
                                                                                 "torch.nn.LogSoftmax"):
                yield ctx.finding("TW608", last, "model ends in a softmax layer and this file trains it with "
                                  "cross-entropy, which applies log_softmax again")


@rule("TW609", name="missing-zero-grad", title="training loop never zeroes gradients",
      severity=Severity.WARN, phase=Phase.STATIC, obligations=_OBLIGATIONS,
      remediation="Call optimizer.zero_grad() (or model.zero_grad()) once per optimizer step.")
def missing_zero_grad(ctx: FileContext) -> Iterator[Finding]:
    """A loop calls ``backward()`` and ``step()`` but its function never zeroes gradients, so each step applies
    the sum of all previous gradients.

    Example::

        for x, y in loader:
            loss_fn(model(x), y).backward()
            opt.step()

    Fix: ``opt.zero_grad()`` before ``backward()`` (gradient accumulation zeroes every k steps, still in the loop).
    """
    by_scope = ctx.calls_by_scope()
    zeroing = {c.scope for calls in by_scope.values() for c in calls if c.attr in ("zero_grad", "zero_")}
    zeroing |= {a.scope for a in ctx.assigns if a.target and a.target.endswith(".grad")}
    reported: set[str] = set()
    for loop, inside in training_loops(ctx):
        if loop.scope in zeroing or loop.scope in reported:
            continue
        if any(c.attr == "step" and c.receiver and not c.node.args for c in inside):
            reported.add(loop.scope)
            yield ctx.finding("TW609", loop.node, "backward() and step() in a loop, but gradients are never "
                              "zeroed in this function")
