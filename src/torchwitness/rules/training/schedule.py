"""The learning-rate schedule's parts of TW308 and TW307: a rate collapsed long before the run's end (a per-epoch
schedule stepped every batch), judged at the audits that read the rate and at the end of the run; and a rate the
schedule raised too far (a warm-up never capped), judged at the end."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator

from torchwitness.probes.view import History, StepView
from torchwitness.rules.findings import Finding
from torchwitness.rules.training.numerics import chance_loss, falling, first_divergence

LR_RISE = 10.0  # a rate this many times its initial value at the end of a diverged run: the schedule raised it


def lr_ratio(v: StepView) -> float | None:
    """The largest current learning rate over the param groups, relative to its initial value (schedulers keep
    ``initial_lr`` in the group; without one, the rate this rule saw first: a loop that sets ``group["lr"]``
    itself); None with a zero initial rate or groups added since."""
    opt = v.optimizer
    if opt is None:
        return None
    first = v.history.notes.setdefault("TW308:lr0", [g.get("lr") for g in opt.param_groups])
    if len(first) != len(opt.param_groups):
        return None
    ratios = []
    for g, seen in zip(opt.param_groups, first, strict=True):
        lr, start = g.get("lr"), g.get("initial_lr", seen)
        if not isinstance(lr, (int, float)) or not isinstance(start, (int, float)) or start <= 0:
            return None
        ratios.append(lr / start)
    return max(ratios) if ratios else None


def lr_collapsed(v: StepView) -> Iterator[Finding]:
    h = v.history
    ratio = lr_ratio(v)
    if ratio is None:
        return
    h.bump("TW308:lr_seen")
    if ratio > 1.0:  # the first audit that saw the rate above its initial value (TW307 dates a rise from it)
        h.notes.setdefault("TW307:above", v.step)
    if ratio > v.threshold("lr_collapse"):
        # The highest rate audited (after any warm-up) is where the schedule's fall starts.
        if ratio > h.notes.get("TW308:lr_peak", (0, 0.0))[1]:
            h.notes["TW308:lr_peak"] = (v.step, ratio)
        h.notes["TW308:lr_high"] = (v.step, ratio)
        return
    first = h.notes.setdefault("TW308:lr_first", v.step)
    low = h.bump("TW308:lr_low")
    if low >= 2 and low >= 0.25 * h.counters["TW308:lr_seen"] and not h.notes.get("TW308:lr_reported"):
        h.notes["TW308:lr_reported"] = True
        yield Finding.of("TW308", "optimizer", f"the learning rate fell to {ratio:.2g} of its initial value by step "
                         f"{first} and stayed there: a per-epoch schedule stepped every batch?", step=first,
                         details={"lr_ratio": ratio})


def lr_collapsed_at_close(v: StepView) -> Iterator[Finding]:
    """A sparsely audited run whose rate collapsed between audits, unlike a schedule annealed to 0: reported when
    the last audit that saw the rate above the bar saw it far below any schedule ending with the run, or when
    the loss had stopped falling (the second half of the run flat) at more than half of its first value."""
    h = v.history
    ratio = lr_ratio(v)
    if h.notes.get("TW308:lr_reported") or ratio is None or ratio > v.threshold("lr_collapse") or \
            h.losses.first is None:
        return
    # A schedule annealed to 0 at the run's end: the audited rates, extrapolated along their fall from their peak
    # (past any warm-up), reach 0 in the run's last quarter or later (a rate collapsed by a per-batch step or decay
    # falls far earlier, or at once).
    (s0, r0), (s1, r1) = h.notes.get("TW308:lr_peak", (0, 0.0)), h.notes.get("TW308:lr_high", (0, 0.0))
    # Already far below any schedule that anneals to 0 at the run's end (linear, or cosine where that is lower)
    # at the last audit that saw it above the bar: a per-batch step or decay, whatever the loss did since.
    f = s1 / max(v.step, 1)
    if s1 > s0 and r1 < r0 and r1 < 0.2 * min(1.0 - f, 0.5 * (1.0 + math.cos(math.pi * f))):
        yield Finding.of("TW308", "optimizer", f"the learning rate ended at {ratio:.2g} of its initial value; it "
                         f"was already {r1:.2g} of it at step {s1} of {v.step}, far below a schedule that anneals to "
                         "0 at the run's end: a per-epoch schedule stepped every batch?", step=s1,
                         details={"lr_ratio": ratio})
        return
    if s1 > s0 and r1 < r0 and s1 + r1 * (s1 - s0) / (r0 - r1) >= 0.75 * v.step:
        return
    losses = [x for _, x in h.losses.held()]
    half = losses[len(losses) // 2:]
    start = h.losses.first[1]
    if len(losses) < 10 or not all(math.isfinite(x) for x in half) or not math.isfinite(start) or start <= 0:
        return
    if statistics.fmean(half) > 0.5 * start and not falling(half):
        yield Finding.of("TW308", "optimizer", f"the learning rate ended at {ratio:.2g} of its initial value while "
                         "the loss, still above half of where it started, had stopped falling: the schedule decayed "
                         "the rate long before the run ended (a per-epoch schedule stepped every batch?)",
                         step=h.losses.first[0], details={"lr_ratio": ratio})


def rate_raised_then_diverged(v: StepView) -> Iterator[Finding]:
    """TW307 at close: the rate stands at ``LR_RISE`` times its initial value or more at the run's end, and the
    loss diverged (as TW108 judges it) or climbed back to 3x its best, or units died (TW403, TW404 on two audits)
    and the loss ended no lower than nine tenths of its start: the schedule raised the rate too far."""
    h = v.history
    ratio = lr_ratio(v)
    base = h.losses.first[1] if h.losses.first is not None else math.nan
    if ratio is None or ratio < LR_RISE or not math.isfinite(base) or base <= 0:
        return
    found = first_divergence(h.losses, 1, v.threshold("divergence_factor") * base)
    rose = f"rose from {base:.3g}"
    if found is None:  # not past its start, but back up from its best: what the rising rate undid
        found, rose = _regressed(h), "climbed back up"
    if found is None:  # neither, but the rate killed units and nothing was learned
        killed = _killed(h, base)
        if killed is not None:
            dead, level = killed
            yield Finding.of("TW307", "optimizer", f"the learning rate ended at {ratio:.3g}x its initial value; units "
                             f"died from step {dead} and the loss ended at {level:.3g}, no lower than where it started "
                             f"({base:.3g}): the schedule raised the rate too far (a warm-up never capped?)",
                             step=min(dead, h.notes.get("TW307:above", dead)), details={"lr_ratio": ratio})
        return
    step, level = found
    rise = h.notes.get("TW307:rise", step)  # dated from the rise, when an audit saw it: it explains what followed
    if h.notes.get("TW307", math.inf) <= min(rise, step):  # an update as large as the weights came first
        return
    since = f" (past {LR_RISE:g}x from step {rise})" if rise < step else ""
    yield Finding.of("TW307", "optimizer", f"the learning rate ended at {ratio:.3g}x its initial value{since} and "
                     f"the loss {rose} to {level:.3g} around step {step}: the schedule raised the "
                     "rate until training diverged (a warm-up never capped?)",
                     step=min(rise, step, h.notes.get("TW108:began", step)),  # as TW108 dated the rise
                     details={"lr_ratio": ratio})


def _regressed(h: History) -> tuple[int, float] | None:
    """``(step, level)`` where a loss that had come down climbed back: the mean of the run's last fifth at 3x (the
    divergence factor) its best mean of five consecutive losses, or more; dated at the first loss of that fifth."""
    held = h.losses.held()
    xs = [x for _, x in held]
    if len(xs) < 20 or not all(map(math.isfinite, xs)):
        return None
    tail = xs[-(len(xs) // 5):]
    best = min(statistics.fmean(xs[i:i + 5]) for i in range(len(xs) - 4))
    level = statistics.fmean(tail)
    return (held[-len(tail)][0], level) if best > 0 and level >= 3 * best else None


def _killed(h: History, base: float) -> tuple[int, float] | None:
    """``(first step, level)``: units or filters dead on two audited steps (TW403, TW404), the first from that
    step, and the run's last fifth of losses at nine tenths of its first loss or more, else None."""
    dead = [s for k, s in h.notes.items() if k.startswith(("TW403:", "TW404:")) and k.endswith(":first")
            and h.counters.get(k[:-len(":first")], 0) >= 2]
    xs = [x for _, x in h.losses.held()]
    if not dead or len(xs) < 20 or not all(map(math.isfinite, xs)):
        return None
    level = statistics.fmean(xs[-(len(xs) // 5):])
    return (min(dead), level) if level >= 0.9 * base else None


def rate_too_low_at_close(v: StepView) -> Iterator[Finding]:
    """TW308 at close: over at least ``chance_min_steps`` (20) steps the loss did not fall and stayed near its
    chance level (within 0.8x-1.5x of it: the noise of a few batches' target variance is wider than TW109's
    margin), while no audited update of a weight matrix reached ``update_ratio_low`` (1e-4) of its norm: a rate
    far too low, whose updates the per-step bar (1e-6) does not call negligible (SGD at 1e-6 with momentum moves a
    small model's weights ~5e-5 a step). A model that has converged sits far below chance."""
    h = v.history
    top, chance = h.notes.get("TW308:max_ratio"), chance_loss(v)
    xs = [x for _, x in h.losses.held()]
    if top is None or top >= v.threshold("update_ratio_low") or h.notes.get("TW308:tiny_reported") or \
            chance is None or chance <= 0 or len(xs) < v.threshold("chance_min_steps") or \
            not all(math.isfinite(x) for x in xs):
        return
    q = max(5, len(xs) // 4)
    head, tail = statistics.fmean(xs[:q]), statistics.fmean(xs[-q:])
    if not 0.8 * chance <= tail <= 1.5 * chance or tail < 0.9 * head or falling(xs):  # no significant fall
        return
    yield Finding.of("TW308", "optimizer", f"the loss did not fall from its chance level ({tail:.3g}; chance "
                     f"{chance:.3g}) over {len(xs)} steps while no weight matrix moved by more than {top:.2g} of its "
                     "norm in an audited step: the learning rate is far too low", step=h.losses.first[0],
                     details={"update_ratio": top})


def idle_group(v: StepView) -> Iterator[Finding]:
    """TW308: a param group whose rate is 0 on every audited step (3 or more; a warm-up from 0 rises after its
    first step) while another group trains, and still 0 when the run ends: its parameters never change. Judged at
    the end of the run: a group held at 0 for a warm-up of the others and given a rate later (between sparse
    audits, say) trains after all."""
    opt, h = v.optimizer, v.history
    if opt is None or len(opt.param_groups) < 2 or h.notes.get("TW308:idle_reported"):
        return
    rates = [g.get("lr") for g in opt.param_groups]
    if not all(isinstance(r, (int, float)) for r in rates):
        return
    idle = h.notes.setdefault("TW308:idle", {})
    if v.event == "close":
        found = [(i, s) for i, s in idle.items() if s is not None and s[1] >= 3 and i < len(rates) and rates[i] == 0]
        if found:
            h.notes["TW308:idle_reported"] = True
            i, (first, _) = found[0]
            n = sum(p.numel() for p in opt.param_groups[i]["params"])
            yield Finding.of("TW308", "optimizer", f"param group {i} ({n:,} parameters) has lr=0 on every audited "
                             f"step from step {first} to the end of the run while another group trains: its "
                             "parameters never change", step=first)
        return
    for i, (g, r) in enumerate(zip(opt.param_groups, rates, strict=True)):
        if i in idle and idle[i] is None:  # it trained on an audited step: never reported
            continue
        if r == 0 and any(p.requires_grad for p in g["params"]) and max(rates) > 0:
            idle.setdefault(i, [v.step, 0])[1] += 1
        else:
            idle[i] = None


# Adam-style optimizers divide each update by sqrt(v) + eps; eps defaults to 1e-8 (1e-6 or 1e-5 in some recipes).
_EPS_TOO_LARGE = 0.1


def eps_too_large(v: StepView) -> Iterator[Finding]:
    """TW308 when the watch starts: an Adam-style ``eps`` of 0.1 or more, which makes the update lr * m / (sqrt(v)
    + eps) a tiny plain-SGD step wherever gradients are small (``eps=1`` written for ``1e-8``)."""
    opt = v.optimizer
    if opt is None:
        return
    for i, g in enumerate(opt.param_groups):
        eps = g.get("eps")
        if "betas" in g and isinstance(eps, (int, float)) and eps >= _EPS_TOO_LARGE:
            yield Finding.of("TW308", "optimizer", f"{type(opt).__name__}'s eps is {eps:g} in param group {i} (its "
                             "default is 1e-8): each update is divided by sqrt(v) + eps, a tiny step wherever "
                             "gradients are small")
            return

