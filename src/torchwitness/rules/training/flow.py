"""TW110, TW413, TW414, TW112: where outputs go (cut from the loss, discarded, collapsed) and whether a run was long
enough to judge."""

from __future__ import annotations

import math
from collections.abc import Iterator

from torchwitness.probes.view import History, StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._registry import training_rule

ART15 = ("EU-AI-Act:Art.15",)
SHORT_RUN = 20  # steps below which the window rules are not judged (TW112 says so)
_COSINE_BOUND = -0.995  # a mean negative cosine similarity this close to -1: every pair of views agrees
_COSINE_NEAR = -0.99  # this close, with the outputs' spread shrinking too: the views agree because all outputs do
_ZERO_BOUND = 0.1  # a distance between views down to this share of its start, the outputs already drawing together


@training_rule("TW110", when=("step", "close"), name="gradient-flow-cut",
               title="Module runs but its parameters get no gradient", severity=Severity.WARN,
               phase=Phase.BACKWARD, obligations=ART15,
               remediation="Remove the stray .detach(), .data, .item() or torch.no_grad() between this module "
                           "and the loss, or freeze the module on purpose (requires_grad_(False)).", statistical=True)
def gradient_flow_cut(v: StepView) -> Iterator[Finding]:
    """A module ran in the training forward with autograd on, its parameters are trainable and in the optimizer,
    yet on every audited step (at least ``window_min_steps``) they received no gradient, and a detached copy of
    a module's output (``.detach()``, ``.data``: same memory, no autograd history) was seen used downstream, or
    a forward watched for it made the cut itself (``h.mean(1).detach()``, ``.item()``, a ``no_grad`` block):
    something between it and the loss cuts the graph. Without that evidence the output is discarded (TW413).
    A head whose output feeds the loss only on some steps is not reported. Also reported: a module that had
    gradients, then (with a detached copy seen used from then on) got none and never moved again on at least
    ``window_min_steps`` audited steps up to the end of the run (a detach switched on mid-run); and a model
    whose output reached the loss as a leaf of its own (``model(x).detach().requires_grad_()``), so that the
    loss's backward never reaches the model.

    Example: ``features = self.encoder(x).detach()``. Fix: drop the detach, or freeze the encoder explicitly.
    """
    h = v.history
    if v.event == "step":
        _note_flow(v)
        return
    modules = dict(v.watch._inner.named_modules())
    held = {id(p) for g in v.optimizer.param_groups for p in g["params"]} if v.optimizer is not None else None
    for module, first in sorted(h.notes.get("TW110:no_grad", {}).items()):
        own = list(modules[module].parameters(recurse=False)) if module in modules else []
        # A module kept out of the optimizer and run under no_grad is frozen on purpose.
        if own and (held is None or any(id(p) in held for p in own)) \
                and all(p._version == v.watch.initial_versions.get(id(p)) for p in own):
            yield Finding.of("TW110", module, f"{module} ran under torch.no_grad() inside the training forward: "
                             "its parameters never received a gradient", step=first)
    leaf = h.counters.get("TW110:leaf", 0)
    if leaf >= v.threshold("window_min_steps") and not h.notes.get("TW110:grad") and all(
            p._version == v.watch.initial_versions.get(id(p)) for p in v.watch._inner.parameters()):
        yield Finding.of("TW110", "model", f"the loss was computed from a tensor outside the model's graph on {leaf} "
                         "audited steps (its output detached, then requires_grad_() or torch.tensor(...)): the "
                         "model never received a gradient", step=h.notes["TW110:leaf_first"])
    if not detached(h):  # no detached copy of an output was seen used: TW413's case
        return
    for module, count, last in cut_modules(v):
        yield Finding.of("TW110", module, f"{module} ran on {count} audited steps but its parameters "
                         "never received a gradient (a detached copy of an output was used downstream)", step=last)
    for module, (count, first, versions) in sorted(h.notes.get("TW110:trail", {}).items()):
        own = list(modules[module].parameters(recurse=False)) if module in modules else []
        # Frozen on purpose (requires_grad_(False), or left out of the optimizer) is not a cut.
        if count >= v.threshold("window_min_steps") and own and h.notes.get("TW110:detached_last", -1) >= first \
                and all(p.requires_grad and (held is None or id(p) in held) for p in own) \
                and [p._version for p in own] == versions:
            yield Finding.of("TW110", module, f"{module} had gradients earlier, but none from step {first} on "
                             f"({count} audited steps, to the end of the run) and never moved again, while a detached "
                             "copy of an output was used downstream: the graph was cut mid-run", step=first)


def detached(h: History) -> bool:
    """A detached copy of an output was seen used; or an input that a cut or a discarded output could explain was,
    and no forward watched for the cut since (probes/cutspy.py) saw none."""
    notes = h.notes
    return bool(notes.get("TW110:detached")) or (notes.get("TW110:suspect") is not None
                                                  and not notes.get("TW110:checked"))


def detached_loss_input(v: StepView) -> bool:
    """The step's loss was fed a tensor outside the autograd graph (no producing op) while a training forward ran
    and no parameter got a gradient: the model's output was detached on its way to the loss."""
    lo = v.loss
    return bool(v.forwards and v.statistics and not v.trained_modes and lo is not None and lo.input is not None
                and lo.producer is None and v.params and not any(p.has_grad for p in v.params))


def _note_flow(v: StepView) -> None:
    """Per audited step: which modules ran with and without a gradient, and since when without one."""
    h = v.history
    if detached_loss_input(v):
        h.notes.setdefault("TW110:leaf_first", v.step)
        h.bump("TW110:leaf")
    if not v.trained_modes:
        return
    # Counts, not step lists: every-step auditing of a long run would otherwise keep every step number.
    grad = h.notes.setdefault("TW110:grad", set())
    nograd = h.notes.setdefault("TW110:nograd", {})  # module -> (audited steps without a gradient, last one)
    with_grad, without = set(), set()
    for p in v.params:
        if p.module in v.modules and (v.optimizer is None or p.group is not None):
            if p.has_grad:
                with_grad.add(p.module)
            else:
                without.add(p.module)
                if (seen := nograd.get(p.module)) is None or seen[1] != v.step:
                    nograd[p.module] = ((seen[0] if seen else 0) + 1, v.step)
    without -= with_grad
    # A module that had gradients and then lost them: the streak of audited steps without one, from its first,
    # with its tensors' versions then (an update on any later step, audited or not, moves them).
    trail = h.notes.setdefault("TW110:trail", {})
    for module in with_grad:
        trail.pop(module, None)
    lost = [m for m in without if m in grad]
    if lost:
        modules = dict(v.watch._inner.named_modules())
        for m in lost:
            if m in trail:
                trail[m][0] += 1
            elif m in modules:
                trail[m] = [1, v.step, [p._version for p in modules[m].parameters(recurse=False)]]
    grad |= with_grad
    if v.extra.get("detached_use"):
        h.notes["TW110:detached"] = True
        h.notes["TW110:detached_last"] = v.step
    elif v.extra.get("detached_maybe"):  # the next statistical forward looks for the cut (probes/cutspy.py)
        h.notes.setdefault("TW110:suspect", v.step)
        h.notes["TW110:detached_last"] = v.step
    if v.extra.get("cut_checked"):
        h.notes["TW110:checked"] = True
    for module in v.extra.get("no_grad_modules", ()):
        h.notes.setdefault("TW110:no_grad", {}).setdefault(module, v.step)


def cut_modules(v: StepView) -> list[tuple[str, int, int]]:
    """``(module, audited steps it ran, last one)`` of the modules that ran on at least ``window_min_steps``
    audited steps and whose parameters never received a gradient nor moved."""
    h = v.history
    nograd, grad = h.notes.get("TW110:nograd", {}), h.notes.get("TW110:grad", set())
    modules = dict(v.watch._inner.named_modules())
    out = []
    for module, (count, last) in sorted(nograd.items()):
        if count < v.threshold("window_min_steps") or module in grad:
            continue
        own = list(modules[module].parameters(recurse=False)) if module in modules else []
        # Updated on some unaudited step (version counter moved): the gradient does arrive, sometimes.
        if all(p._version == v.watch.initial_versions.get(id(p)) for p in own):
            out.append((module, count, last))
    return out


@training_rule("TW413", when="close", name="discarded-output", title="A module's output never reaches the loss",
               severity=Severity.WARN, phase=Phase.FORWARD, obligations=ART15,
               remediation="Use the module's output: assign it (x = self.block(x)), add its loss term to the total, "
                           "or remove the module (and its parameters from the optimizer).")
def discarded_output(v: StepView) -> Iterator[Finding]:
    """A module ran in every audited training forward (at least ``window_min_steps``) with autograd on, yet its
    trainable parameters never received a gradient and no detached copy of any output was used: its output is
    computed and thrown away. Typical: ``self.block(x)`` without ``x =``, an auxiliary head whose loss term is
    never added to the total.

    Example: ``aux = self.aux_head(h)`` in ``forward`` and ``loss = crit(out, y)`` only. Fix: use or remove it.
    """
    if detached(v.history):  # a detached copy was used: TW110 names the cut
        return
    for module, count, last in cut_modules(v):
        yield Finding.of("TW413", module, f"{module} ran on {count} audited steps but its output never reached "
                         "the loss (its parameters never received a gradient)", step=last)


@training_rule("TW414", when=("step", "close"), name="representation-collapse", title="Representation collapse",
               severity=Severity.WARN, phase=Phase.FORWARD, obligations=ART15,
               remediation="Self-supervised objectives need something that keeps embeddings apart: negatives "
                           "(contrastive loss), a stop-gradient with a predictor (SimSiam/BYOL), or variance and "
                           "covariance terms (VICReg); check the temperature and the augmentations.",
               statistical=True)
def representation_collapse(v: StepView) -> Iterator[Finding]:
    """The spread across the batch of the model's output (at least 8 dimensions; per dimension, the mean
    absolute deviation from the batch mean) fell to a third of its value at the first audited step relative
    to the output's magnitude, or to a fifth absolutely, on two audited steps (or on one from step 8 on, where
    both fell: a fifth absolutely and half relatively): every input maps to (nearly) the same embedding.
    Judged only for self-supervised objectives: a loss the watch does not know (negative cosine similarity),
    or one whose target was computed after the forward or carries gradients (the other view's embedding);
    supervised targets give outputs their spread.

    Example: a Siamese network trained with ``-cosine_similarity(f(x1), f(x2))`` and no negatives or
    stop-gradient. Fix: a contrastive or variance-preserving objective.

    At the end of the run, from the loss of every step (collapse often comes between sparse audits): a
    self-supervised loss that settled, over the last fifth of the run (at least 5 steps, batches of 8 or
    more), at -1 (a negative cosine similarity only gets there when every pair of views maps to the same
    direction; within 1% of it when the outputs' spread had shrunk too, as below), or at 10% or less of its
    first value when the outputs' spread relative to their magnitude had already shrunk by a quarter at the
    latest audit, or when the whole loss is a library loss between two outputs that both carry gradients (a
    distance between views, 2 - 2cos or MSE, minimised by drawing every output together).
    """
    notes = v.history.notes
    if v.event == "close":
        yield from _collapsed_loss(v)
        return
    out = v.modules.get(v.extra.get("root_producer", "model"))
    lo = v.loss
    # Supervised targets from the data give the outputs their spread; only a loss that compares the model with
    # itself (no library loss seen, or a target computed after the forward: the other view's embedding) can
    # be minimised by collapsing.
    self_supervised = lo is None or lo.target_computed or lo.target_grad
    if out is not None and out.batch >= 4 and not self_supervised:
        notes["TW414:supervised"] = True
    losses = v.history.losses
    if lo is not None and lo.target_grad and lo.value is not None and len(losses) and losses[len(losses) - 1][0] \
            == v.step and abs(losses[len(losses) - 1][1] - lo.value) <= 1e-6 * (abs(lo.value) + 1e-12):
        # The whole objective is the agreement of two outputs, both trained: nothing holds them apart.
        notes["TW414:bare"] = True
    if out is None or out.units is None or out.n_units < 8 or out.batch < 4 or not self_supervised:
        return
    notes["TW414:ssl"] = out.batch >= 8
    spread, magnitude = out.units["spread"], out.units["magnitude"]
    if not (math.isfinite(spread) and math.isfinite(magnitude)):  # non-finite outputs: TW105's, not a collapse
        return
    start = notes.setdefault("TW414:start", (spread, magnitude))
    s0, m0 = start
    if s0 <= 0 or m0 <= 0:
        return
    ratio0, ratio = s0 / m0, (spread / magnitude if magnitude > 0 else 0.0)
    notes["TW414:shrunk"] = ratio <= 0.75 * ratio0  # at the latest audit: the outputs drawing together
    if spread <= 0.5 * s0 or ratio <= 0.5 * ratio0:
        notes.setdefault("TW414:first", v.step)  # when the decline got under way
    # Two audits agree; or one, well into the run, that saw both the spread and its ratio to the magnitude
    # collapse (statistical audits thin out in long stretches of dense auditing).
    deep = spread <= 0.2 * s0 and ratio <= 0.5 * ratio0 and v.step >= 8
    if (spread <= 0.2 * s0 or ratio <= ratio0 / 3) and (v.history.bump("TW414") >= 2 or deep) \
            and not notes.get("TW414:reported"):
        notes["TW414:reported"] = True
        yield Finding.of("TW414", "model", f"the spread of the model's output across the batch fell from "
                         f"{s0:.3g} to {spread:.3g} (relative to its magnitude: {ratio0:.3g} to {ratio:.3g}): the "
                         "representation is collapsing to one point", step=notes.get("TW414:first", v.step),
                         details={"spread_start": s0, "spread": spread})


def _collapsed_loss(v: StepView) -> Iterator[Finding]:
    notes, losses = v.history.notes, v.history.losses
    if notes.get("TW414:reported") or not notes.get("TW414:ssl") or notes.get("TW414:supervised"):
        return
    held = losses.held()
    tail = held[-max(5, len(held) // 5):]
    if len(held) < 10 or not all(math.isfinite(x) for _, x in tail):
        return
    start = held[0][1]
    if all(-1.0 - 1e-3 <= x <= _COSINE_BOUND for _, x in tail):
        first = next(s for s, x in held if x <= _COSINE_BOUND)
        why = "the negative cosine similarity of the two views reached its bound, -1"
    elif notes.get("TW414:shrunk") and all(-1.0 - 1e-3 <= x <= _COSINE_NEAR for _, x in tail):
        first = next(s for s, x in held if x <= _COSINE_NEAR)
        why = "the negative cosine similarity of the two views came within 1% of its bound, -1, while the outputs " \
              "drew together"
    elif (notes.get("TW414:shrunk") or notes.get("TW414:bare")) and start > 0 \
            and all(0 <= x <= _ZERO_BOUND * start for _, x in tail):
        first = next(s for s, x in held if 0 <= x <= _ZERO_BOUND * start)
        why = f"a distance between the views fell to {tail[-1][1] / start:.2g} of its start while the outputs drew " \
              "together"
    else:
        return
    yield Finding.of("TW414", "model", f"the self-supervised loss settled at {tail[-1][1]:.4g} from step {first}: "
                     f"{why}, which a representation that maps every input to one point attains", step=first,
                     details={"loss": tail[-1][1]})


@training_rule("TW112", when="close", name="run-too-short", title="Run too short to judge the loss curve",
               severity=Severity.INFO, phase=Phase.STEP, obligations=ART15,
               remediation="Watch at least 20 optimizer steps for the loss-curve rules (divergence, loss at chance) "
                           "to judge.")
def run_too_short(v: StepView) -> Iterator[Finding]:
    """The watch saw fewer than 20 steps: the window rules that judge the loss curve (TW108 divergence from its
    early level, TW109 loss at chance) had too little of it, and their silence says nothing."""
    if 0 < v.step < SHORT_RUN and v.history.audited:
        yield Finding.of("TW112", "loss", f"only {v.step} steps watched: the loss curve (divergence, loss at "
                         f"chance) needs {SHORT_RUN} to be judged", step=v.step)
