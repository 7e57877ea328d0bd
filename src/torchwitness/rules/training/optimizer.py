"""TW3xx: the optimizer: which parameters it holds, how it decays them, what its steps do."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterator

import torch

from torchwitness.probes.inrange import EMBEDDINGS, held_in_frames
from torchwitness.probes.update import in_process_group
from torchwitness.probes.view import StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._modules import stored_weight
from torchwitness.rules.training._registry import training_rule
from torchwitness.rules.training.flow import detached_loss_input
from torchwitness.rules.training.numerics import LARGE_UPDATE_SHARE as _LARGE_SHARE
from torchwitness.rules.training.numerics import chance_loss
from torchwitness.rules.training.schedule import LR_RISE as _LR_RISE
from torchwitness.rules.training.schedule import (
    eps_too_large,
    idle_group,
    lr_collapsed,
    lr_collapsed_at_close,
    lr_ratio,
    rate_raised_then_diverged,
    rate_too_low_at_close,
)

ART15 = ("EU-AI-Act:Art.15",)


def _in_optimizer(opt: torch.optim.Optimizer) -> set[int]:
    return {id(p) for g in opt.param_groups for p in g["params"]}


@training_rule("TW301", when=("init", "step", "close"), name="params-missing-from-optimizer",
               title="Trainable parameters missing from the optimizer", severity=Severity.ERROR, phase=Phase.INIT,
               obligations=ART15,
               remediation="Build the optimizer after the model is final, from model.parameters(); when you add "
                           "modules later, optimizer.add_param_group({'params': new.parameters()}).", statistical=True)
def params_missing(v: StepView) -> Iterator[Finding]:
    """Parameters with ``requires_grad=True`` are in no param group: they get gradients but never change.
    Reported once they are seen unchanged from one statistical audit to the next (or from the last audit to the
    end of the run).

    Example: ``opt = Adam(model.encoder.parameters())`` then training the whole model, or replacing
    ``model.head`` after creating the optimizer. Fix: create the optimizer from the final model. Parameters
    another optimizer of the training code holds (one per part of the model, ``SparseAdam`` beside ``Adam``,
    created before or after the watch) are not missing, nor are parameters that change between audits all the
    same (a temperature updated by hand from its ``.grad`` under ``no_grad``).
    """
    if v.optimizer is None:
        return
    missing: dict[str, list[str]] = {}
    # An audited step has already mapped each trainable tensor to its param group; not under a process group,
    # where FSDP swaps the registered parameters for unsharded ones between forward and step.
    if v.event == "step" and v.params and not in_process_group():
        total = len(v.params)
        for p in v.params:
            if p.group is None:
                missing.setdefault(p.module, []).append(p.name)
    else:
        held = _in_optimizer(v.optimizer)
        total = 0
        for name, p in v.watch._inner.named_parameters():
            if p.requires_grad:
                total += 1
                if id(p) not in held:
                    missing.setdefault(name.rpartition(".")[0] or "model", []).append(name)
    if missing:  # another optimizer of the training code may hold them (one per part of the model, or SparseAdam)
        # Remembered across events: at close the training loop's frame, and its other optimizers, are gone.
        others = v.history.notes.setdefault("TW301:others", set())
        others |= {i for o in held_in_frames(torch.optim.Optimizer) if o is not v.optimizer for i in _in_optimizer(o)}
        if others:
            named = dict(v.watch._inner.named_parameters())
            missing = {m: kept for m, names in missing.items()
                       if (kept := [n for n in names if id(named.get(n)) not in others])}
    # Judged from the first audited step on: the loop may create the other optimizers after the watch (the
    # optimizers in scope now are remembered).
    if not missing or v.event == "init":
        return
    first = v.history.notes.setdefault("TW301:first", v.step if v.event == "step" else None)
    still = _unchanged(v, [n for names in missing.values() for n in names])
    missing = {m: kept for m, names in missing.items() if (kept := [n for n in names if n in still])}
    if not missing:
        return
    if sum(len(x) for x in missing.values()) == total:
        yield Finding.of("TW301", "model", "no trainable parameter of the model is in the optimizer (was it built "
                         "for another model instance?)", step=first)
        return
    for module, names in missing.items():
        yield Finding.of("TW301", module, f"{', '.join(names)} not in any optimizer param group", step=first)


def _unchanged(v: StepView, names: list[str]) -> set[str]:
    """Of the trainable tensors outside every optimizer, those seen unchanged: the same norm on two statistical
    audits, or at the end of the run the same as at the last audit. One that changed between audits is trained
    by hand (its own update rule, from its .grad) and is never reported; one past the probe's 256 from the
    second audit on."""
    h = v.history
    moved: set[str] = h.notes.setdefault("TW301:moved", set())
    before: dict[str, float] = h.notes.setdefault("TW301:norms", {})
    if v.event == "close":
        named = dict(v.watch._inner.named_parameters())
        now = {n: float(named[n].detach().float().norm()) for n in names if n in before and n in named}
        audits = h.counters.get("TW301:audits", 0)
    else:
        data = v.extra.get("data", {})
        now = dict(zip(v.extra.get("outside", ()), (float(x) for x in data.get("outside/norm", ())), strict=False))
        audits = h.bump("TW301:audits")
    moved |= {n for n, x in now.items() if n in before and x != before[n] and math.isfinite(x)}
    seen = {n for n in names if n in before and n in now}
    before.update(now)
    return {n for n in names if n not in moved and (n in seen or (n not in now and audits >= 2))}


def _decoupled(opt: torch.optim.Optimizer, group: dict) -> bool:
    return isinstance(opt, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay"))


@training_rule("TW302", when="init", name="adam-weight-decay", title="Adam with L2 weight decay (not AdamW)",
               severity=Severity.WARN, phase=Phase.INIT, obligations=ART15,
               references=("Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019",),
               remediation="Use torch.optim.AdamW(params, weight_decay=...) (or Adam(decoupled_weight_decay=True)).")
def adam_weight_decay(v: StepView) -> Iterator[Finding]:
    """``torch.optim.Adam`` adds weight decay to the gradient, where Adam's scaling cancels most of it: the
    regularisation is weak and uneven across parameters. Decoupled decay (AdamW) is what was meant.

    Example: ``Adam(model.parameters(), lr=1e-3, weight_decay=1e-2)``. Fix: ``AdamW``.
    """
    opt = v.optimizer
    if opt is None or not isinstance(opt, (torch.optim.Adam, torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam)):
        return
    for i, g in enumerate(opt.param_groups):
        if g.get("weight_decay", 0) > 0 and not _decoupled(opt, g):
            yield Finding.of("TW302", f"optimizer.param_groups[{i}]",
                             f"{type(opt).__name__} with weight_decay={g['weight_decay']} couples decay to the "
                             "adaptive scaling")


# AdamW's default decay: a plain AdamW(model.parameters()) decays biases and norms by this much, a mild and very
# common choice; stronger decay on them (the GPT-style 0.1, say) is the configuration bug.
_DEFAULT_DECAY = 0.01
# SGD adds decay to the gradient and runs at learning rates ~100x AdamW's: the classic recipes' 1e-4 to 5e-4 over
# every parameter is mild; 1e-3 and up pulls norm scales and biases to 0 within an epoch or two. (Adam's L2 decay
# is mostly cancelled by its scaling: TW302's business, judged on AdamW's bar here.)
_COUPLED_DECAY = 1e-3
_ACCUMULATED_STEPS = 5  # consecutive audited steps whose gradient growth tells accumulation from a trend


@training_rule("TW303", when="init", name="decay-on-norm-bias-embedding",
               title="Weight decay on biases, normalisation or embeddings", severity=Severity.WARN,
               phase=Phase.INIT, obligations=ART15,
               remediation="Put biases, norm weights and embeddings in a param group with weight_decay=0.")
def decay_on_norm_bias(v: StepView) -> Iterator[Finding]:
    """Param groups with weight decay above 0.01 (AdamW's default), or under SGD 1e-3 or more, hold 1-D tensors
    (biases, LayerNorm/BatchNorm scales) or embedding tables; decaying them pulls norm scales towards 0 and
    rare-token embeddings towards nothing. Milder decay (AdamW's default, SGD's classic 1e-4 to 5e-4) is
    reported as INFO.

    Example: ``AdamW(model.parameters(), weight_decay=0.1)`` on a transformer.
    Fix: two groups, ``[{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0}]``.
    """
    opt = v.optimizer
    if opt is None:
        return
    embeddings = {id(stored_weight(m)) for m in v.watch._inner.modules() if isinstance(m, EMBEDDINGS)}
    for i, g in enumerate(opt.param_groups):
        wd = g.get("weight_decay", 0)
        if wd <= 0:
            continue
        flat = sum(1 for p in g["params"] if p.ndim <= 1 and p.requires_grad)
        emb = sum(1 for p in g["params"] if id(p) in embeddings and p.requires_grad)
        if flat or emb:
            strong = wd >= _COUPLED_DECAY if isinstance(opt, torch.optim.SGD) else wd > _DEFAULT_DECAY
            yield Finding.of("TW303", f"optimizer.param_groups[{i}]", f"weight decay {wd} applies to "
                             f"{flat} bias/norm tensors and {emb} embedding tables",
                             severity=None if strong else Severity.INFO)


@training_rule("TW304", when="step", name="zero-grad-forgotten", title="Gradients accumulate across steps",
               severity=Severity.ERROR, phase=Phase.BACKWARD, obligations=ART15,
               remediation="Call optimizer.zero_grad() once per optimizer step (before backward or after step).",
               statistical=True)
def zero_grad_forgotten(v: StepView) -> Iterator[Finding]:
    """When backward started, the parameters still held non-zero gradients from before the previous optimizer
    step: ``zero_grad()`` is missing, so every step applies the sum of all past gradients.

    Example: a loop with ``loss.backward(); opt.step()`` and no ``opt.zero_grad()``. Fix: add it. Gradient
    accumulation done right (zero_grad after each optimizer step) is not reported, nor a step in which the
    optimizer or the model cleared gradients: a GAN's generator loss flows back through the discriminator
    before ``D.zero_grad()``, and a second head's loss meets the first's gradients, on purpose.

    Tensors of the model that another optimizer of the training code steps (see TW301) are judged by their
    gradient norm: grown over 5 consecutive audited steps (falling at most once, ending at its largest) to 2.5x
    its first value and twice the watched optimizer's growth, as gradients summed over steps grow: that
    optimizer's ``zero_grad()`` is missing.
    """
    yield from _others_accumulating(v)
    if v.extra.get("zeroed") or v.extra.get("unstepped"):  # cleared, or the run ended before it could be
        return
    if v.step > 0 and v.stale_grad_norm is not None and v.stale_grad_norm > 0:
        yield Finding.of("TW304", "optimizer", f"backward started with gradients left from before step {v.step} "
                         f"(norm {v.stale_grad_norm:.3g})", step=v.step)


def _others_accumulating(v: StepView) -> Iterator[Finding]:
    h = v.history
    others = h.notes.get("TW301:others")
    if not others or h.notes.get("TW304:others"):
        return
    theirs = [p.grad_norm for p in v.params if p.group is None and id(p.param) in others and p.has_grad]
    mine = [p.grad_norm for p in v.params if p.group is not None and p.has_grad]
    if not theirs or not mine:
        return
    run = h.notes.get("TW304:run", [])
    if run and run[-1][0] != v.step - 1:  # consecutive steps only: accumulation adds one gradient per step
        run = []
    run = [*run, (v.step, math.hypot(*theirs), math.hypot(*mine))][-_ACCUMULATED_STEPS:]
    h.notes["TW304:run"] = run
    (s0, t0, m0), (s1, t1, m1) = run[0], run[-1]
    if len(run) < _ACCUMULATED_STEPS or not (t0 > 0 and m0 > 0 and math.isfinite(t1) and math.isfinite(m1)):
        return
    # A new gradient against the sum may dip it once; the sum still ends at its largest.
    steady = sum(b[1] < a[1] for a, b in itertools.pairwise(run)) <= 1 and t1 == max(t for _, t, _ in run)
    if steady and t1 / t0 >= 2.5 and t1 / t0 >= 2 * m1 / m0:
        h.notes["TW304:others"] = True
        yield Finding.of("TW304", "optimizer", f"the gradients of {len(theirs)} tensors another optimizer steps grew "
                         f"{t1 / t0:.2g}x from step {s0} to {s1} (those of the watched optimizer {m1 / m0:.2g}x), as "
                         "gradients summed across steps grow: that optimizer's zero_grad() is missing", step=s0)


# TW307 dates itself from a streak of large updates that lasts while they stay over this share of
# update_ratio_max ("TW307:since"): ten times a healthy run's (~1e-3 to 1e-2), and what a too-high rate's updates
# shrink to once the units they killed pass no gradient. "TW307:large" (TW108's start) ends below the large share.
_KEEP_SHARE = 0.1
_SETTLE_RATIO = 0.2  # |update| / |weight| per step that a healthy run (~1e-3 to 1e-2) does not hold for long


@training_rule("TW307", when=("step", "close"), name="learning-rate-too-high", title="Updates as large as the weights",
               severity=Severity.WARN, phase=Phase.STEP, obligations=ART15,
               remediation="Lower the learning rate until |update|/|weight| is around 1e-3 per step; add warm-up.",
               statistical=True)
def update_ratio_high(v: StepView) -> Iterator[Finding]:
    """In one step a weight matrix moved by ``update_ratio_max`` (1.0) times its own norm or more: the learning
    rate is far too high and the weights are being overwritten, not refined.

    Example: SGD with lr=10. Fix: lower the learning rate; a healthy ratio is around 1e-3. Not judged for
    L-BFGS, whose step sizes are its own.

    At the end of the run: updates of a fifth of the weights' norm or more on 3 audited steps while the loss
    jumped to twice its start and ended no lower than it began (a rate too high to settle); or the loss
    diverged (as TW108 judges it) while the learning rate stood at
    ``lr_rise`` (10) times its initial value or more: a schedule that raised the rate (a warm-up never capped,
    a factor multiplied instead of divided) is what made it diverge. A rate that rose on purpose (one-cycle) and
    a loss that stayed down are not reported.
    """
    if v.event == "close":
        yield from rate_raised_then_diverged(v)
        yield from _large_updates_without_progress(v)
        return
    # L-BFGS takes quasi-Newton steps sized by its own curvature estimate: a step as large as the weights is its
    # design, early on, not a learning rate set too high.
    if isinstance(v.optimizer, torch.optim.LBFGS):
        return
    ratio = lr_ratio(v)
    if ratio is not None and ratio >= _LR_RISE:  # when the schedule's rise began, should the loss diverge later
        # Between the last audit below the bar and this one, where a steady rise crossed it.
        below = v.history.notes.get("TW307:below")
        v.history.notes.setdefault("TW307:rise", v.step if below is None or ratio <= below[1] else
                                   round(below[0] + (_LR_RISE - below[1]) / (ratio - below[1]) * (v.step - below[0])))
    elif ratio is not None:
        v.history.notes["TW307:below"] = (v.step, ratio)
    # A tensor that started at zero (zero-initialised layers, on purpose or not) has a relative update that means
    # nothing for a while: its first steps are "infinitely" large relative to it. Such tensors are not judged.
    notes = v.history.notes
    zero_start = notes.setdefault("TW307:zero_start", set())
    seen = notes.setdefault("TW307:seen", set())
    limit = v.threshold("update_ratio_max")
    large = kept = False
    largest = max((p.update_ratio for p in v.params if p.update_ratio is not None and len(p.shape) >= 2
                   and p.name not in zero_start and p.weight_norm > 1e-12), default=None)
    ratios = notes.setdefault("TW307:ratios", [])
    if largest is not None and len(ratios) < 32:  # the first audits: what the run's start did
        ratios.append((v.step, largest))
    for p in v.params:
        if p.name not in seen and p.update_norm is not None:
            seen.add(p.name)
            if not p.weight_norm > 1e-12:
                zero_start.add(p.name)
        r = p.update_ratio
        if r is None or len(p.shape) < 2 or p.name in zero_start or not p.weight_norm > 1e-12:
            continue
        large = large or r >= _LARGE_SHARE * limit
        kept = kept or r >= _KEEP_SHARE * limit
        if r >= limit:
            notes.setdefault("TW307", v.step)
            # Dated from the unbroken run of audited steps whose updates were already a large share of the weights:
            # those steps are what killed units or blew up activations, found on the forwards that followed.
            since = notes.get("TW307:since", v.step)
            streak = f" (updates over {_KEEP_SHARE:g}x their weights' norm since step {since}, over " \
                f"{_LARGE_SHARE:g}x there)" if since < v.step \
                else ""
            size = f"{r:.3g}x its norm" if math.isfinite(r) else "non-finite (the weights overflowed)"
            yield Finding.of("TW307", p.name, f"update of {p.name} is {size} at step {v.step}{streak}", step=since)
            return
    if large:
        notes.setdefault("TW307:large", v.step)
        notes.setdefault("TW307:since", v.step)
    else:
        notes.pop("TW307:large", None)
        if not kept:
            notes.pop("TW307:since", None)


def _large_updates_without_progress(v: StepView) -> Iterator[Finding]:
    """Weight matrices moved by a fifth of their norm or more per step on 3 audited steps, and the loss jumped
    (to twice its start or more) and ended no lower than it began: the rate is too high for the updates to
    settle (dying ReLUs and a loss at chance follow). A high rate whose loss falls is not reported."""
    h = v.history
    high = [step for step, r in h.notes.get("TW307:ratios", []) if r >= _SETTLE_RATIO]
    if len(high) < 3 or h.notes.get("TW307", math.inf) <= high[0] or h.losses.start > 0 or len(h.losses) < 20:
        return
    losses = [h.losses[i][1] for i in range(len(h.losses))]
    if not all(map(math.isfinite, losses)):
        return  # a NaN loss is TW108's
    head, tail = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    if head > 0 and tail >= 0.9 * head and max(losses) >= 2 * head:
        h.notes["TW307"] = high[0]
        peak = max(r for _, r in h.notes["TW307:ratios"])
        yield Finding.of("TW307", "optimizer", f"weight matrices moved by up to {peak:.2g}x their norm per step "
                         f"(over {_SETTLE_RATIO:g}x on {len(high)} audited steps from step {high[0]}) while the "
                         f"loss jumped to {max(losses):.3g} and ended at {tail:.3g} from {head:.3g}: the learning "
                         "rate is too high for training to settle", step=high[0], details={"peak_ratio": peak})


@training_rule("TW308", when=("init", "step", "close"), name="optimizer-step-noop",
               title="Optimizer steps change nothing",
               severity=Severity.WARN, phase=Phase.STEP, obligations=ART15,
               remediation="Check the learning rate (a scheduler that reaches 0, lr=0 in a param group, a per-epoch "
                           "schedule stepped every batch) and that optimizer.step() runs after backward.",
               statistical=True)
def optimizer_step_noop(v: StepView) -> Iterator[Finding]:
    """The optimizer's steps do not train the model, on two audited steps: parameters with non-zero gradients did
    not move at all; or a backward ran but no trainable parameter held a gradient when ``step()`` was called
    (``step()`` before ``backward()``, or right after ``zero_grad()``); or every weight matrix moved by less
    than ``update_ratio_min`` (1e-6) of its norm on every audited step (a learning rate far too low); or the
    learning rate fell to ``lr_collapse`` (1e-4) of its initial value on a quarter of the audited steps or more
    (a per-epoch schedule such as ``StepLR`` stepped every batch). A schedule that reaches 0 only at its end is
    not reported; at the end of a sparsely audited run, a collapsed rate is reported when the loss had stopped
    falling far above where it started.

    Also: the optimizer stepping on two audited steps with no gradient while backward went to another model (the
    loop went on with a checkpoint loaded into a new instance, or a copy, and the old optimizer); a param group
    whose rate is 0 on every audited step (3 or more) while another trains, and still 0 at
    the end of the run; and, when the watch starts, an Adam-style ``eps`` of 0.1 or more (a typo for 1e-8: each
    update is divided by it).

    Example: ``lr=0`` from a scheduler misconfigured, or ``LambdaLR(lambda e: 0)``. Fix: check the schedule.
    """
    if v.event == "init":
        yield from eps_too_large(v)
        return
    if v.event == "close":
        yield from list(lr_collapsed_at_close(v)) or rate_too_low_at_close(v)
        yield from idle_group(v)
        return
    yield from idle_group(v)
    h = v.history
    moving = [p for p in v.params if p.update_norm is not None and p.grad_norm > 0 and math.isfinite(p.grad_norm)]
    if isinstance(v.optimizer, torch.optim.LBFGS):  # converged: it returns untouched once no |grad| exceeds this
        tol = v.optimizer.defaults.get("tolerance_grad", 0.0)
        moving = [p for p in moving if p.grad_norm > tol * math.sqrt(math.prod(p.shape))]
    if moving and all(p.update_norm == 0 for p in moving) and h.bump("TW308") >= 2:
        yield Finding.of("TW308", "optimizer", f"no parameter changed at step {v.step}", step=v.step)
        return
    # A backward ran in this step's window, or a training forward did whose backward comes after the step (forward,
    # step(), backward()), yet the step found no gradient anywhere: it came before backward (a loss fed a detached
    # copy of the output is TW110's).
    if (v.trained_modes or (v.forwards and not detached_loss_input(v))) and _no_gradient(v):
        first = h.notes.setdefault("TW308:nograd", v.step)
        if h.bump("TW308:nograd") >= 2:
            yield Finding.of("TW308", "optimizer", f"optimizer.step() found no gradient on any parameter although "
                             f"a backward ran (first at step {first}): step() is called before backward() or right "
                             "after zero_grad()", step=first)
            return
    yield from _trains_another_model(v)
    yield from _negligible_updates(v)
    yield from lr_collapsed(v)


def _no_gradient(v: StepView) -> bool:
    """The step's optimizer found no gradient on any parameter (a sparse one counts). Not judged under a process
    group, where FSDP swaps the registered parameters for unsharded ones (as for TW301)."""
    return bool(v.params) and not any(p.has_grad or p.param.grad is not None for p in v.params) \
        and not in_process_group()


def _trains_another_model(v: StepView) -> Iterator[Finding]:
    """The loop trains another model (a checkpoint loaded into a new instance, a copy) while the watched optimizer
    still steps: the watched model ran no forward, no parameter holds a gradient, and backward calls went
    elsewhere since the last audit; on two audited steps. A watched model that never ran is TW412's."""
    h = v.history
    if v.forwards or v.trained_modes or not h.counters.get("training_forwards") or not _no_gradient(v):
        return
    seen, last = v.watch.backward_elsewhere, h.notes.get("TW308:elsewhere", 0)
    h.notes["TW308:elsewhere"] = seen
    if seen > last:
        first = h.notes.setdefault("TW308:orphaned", v.step)
        if h.bump("TW308:orphaned") == 2:
            yield Finding.of("TW308", "optimizer", f"optimizer.step() found no gradient on any parameter from step "
                             f"{first}: the watched model no longer ran and backward went to another model (a "
                             "checkpoint loaded into a new instance, or a copy, trained with this optimizer?)",
                             step=first)


def _negligible_updates(v: StepView) -> Iterator[Finding]:
    h = v.history
    ratios = [p.update_ratio for p in v.params if p.update_ratio is not None and len(p.shape) >= 2
              and p.grad_norm > 0 and math.isfinite(p.grad_norm) and p.weight_norm > 1e-12]
    if not ratios:
        return
    h.bump("TW308:judged")
    h.notes["TW308:max_ratio"] = max(h.notes.get("TW308:max_ratio", 0.0), max(ratios))
    if max(ratios) < v.threshold("update_ratio_min"):
        first = h.notes.setdefault("TW308:tiny", v.step)
        tiny = h.bump("TW308:tiny")
        if tiny >= 2 and tiny == h.counters["TW308:judged"] and not h.notes.get("TW308:tiny_reported") \
                and not _converged(v):
            h.notes["TW308:tiny_reported"] = True
            yield Finding.of("TW308", "optimizer", f"every weight matrix moved by less than {max(ratios):.2g} of its "
                             f"norm per step on every audited step from step {first}: the learning rate is far too "
                             "low for anything to be learned", step=first, details={"update_ratio": max(ratios)})


def _converged(v: StepView) -> bool:
    """The loss sits under half of its chance level: a model that has learned its task, whose updates are tiny
    because its gradients are (training a converged model further), not because of its rate."""
    chance, losses = chance_loss(v), v.history.losses
    recent = [x for _, x in losses.recent(min(len(losses), 5)) if math.isfinite(x)]
    return chance is not None and bool(recent) and statistics.fmean(recent) < 0.5 * chance

