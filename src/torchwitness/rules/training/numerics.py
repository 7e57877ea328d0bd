"""TW1xx: numerics, the loss curve and gradient flow."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator

import torch

from torchwitness.probes.inrange import EMBEDDINGS
from torchwitness.probes.view import LossLog, StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._modules import stored_weight
from torchwitness.rules.training._registry import training_rule

ART15 = ("EU-AI-Act:Art.15",)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


@training_rule("TW101", when="step", name="nonfinite-loss", title="Loss is NaN or infinite",
               severity=Severity.ERROR, phase=Phase.FORWARD, obligations=ART15,
               remediation="Find the first NaN: check inputs (TW201), lower the learning rate, add gradient "
                           "clipping, use log-sum-exp forms (cross_entropy on logits, not log(softmax)).")
def nonfinite_loss(v: StepView) -> Iterator[Finding]:
    """The loss became NaN or infinite; every later update is garbage. When the loss call had been fed a
    non-finite prediction (or NLL the log of an underflowed probability) and the gradients turned non-finite
    up to 3 steps before the value did, with clean data, the finding is dated at the gradients' step: the loss
    computation made them (TW102 is then its consequence).

    Example: ``loss = torch.log(probs).mean()`` with a probability that underflowed to 0.
    Fix: compute losses from logits, clip gradients, lower the learning rate, check the data.
    """
    notes, losses = v.history.notes, v.history.losses
    if notes.get("TW101"):
        return
    g = _first_bad_gradient(v)  # noted at every event: the loss may turn non-finite only at a later one
    fed = v.extra.get("sentinel", {}).get("pred")
    lo = v.loss
    if fed is None and lo is not None and lo.input is not None and lo.input.stats is not None and (
            lo.input.nonfinite or (lo.kind == "NLLLoss" and lo.input.stats.get("min", 0.0) <= _LOG_TINY)):
        fed = v.step
    if fed is not None:
        notes.setdefault("TW101:fed", fed)  # the first step the loss call was fed a non-finite prediction
    bad = None
    # The history only grows: each loss is looked at once, not once per step; a sparse audit brings ~100 new
    # ones, checked in one pass of builtins unless one of them is not finite.
    i = max(notes.get("TW101_next", 0), losses.start)
    new = losses.recent(len(losses) - i)
    if all(math.isfinite(x) for _, x in new) and (not new or new[-1][0] <= v.step):
        i = len(losses)
    while i < len(losses) and losses[i][0] <= v.step:
        if not math.isfinite(losses[i][1]):
            bad = losses[i]
            break
        i += 1
    notes["TW101_next"] = i
    if bad is None and v.loss is not None and v.loss.value is not None and not math.isfinite(v.loss.value):
        bad = (v.step, v.loss.value)
    if bad is not None:
        notes["TW101"] = True
        s, x = bad
        # A gradient that went non-finite just before, on a step whose loss was still finite, with clean data,
        # where the loss call was already fed a non-finite prediction (or an NLL a log-probability of an underflowed
        # one): the loss computation made the NaN (the log of a probability that underflowed to 0, masked out of
        # the value by NLL, is 1/0 in backward). The loss
        # is the cause the user must fix. (A sqrt(0) elsewhere in the objective feeds the loss nothing
        # non-finite: TW102 names it.)
        clean = not any(k in notes for k in ("TW201:first", "TW202:first"))
        fed = notes.get("TW101:fed")
        if g is not None and fed is not None and fed <= g[0] and s - 3 <= g[0] < s and clean:
            yield Finding.of("TW101", "loss", f"loss is {x} at step {s}; its backward had already made non-finite "
                             f"gradients at step {g[0]}, while its value was finite (a log or division of a value "
                             "that underflowed to 0?)", step=g[0])
            return
        # Between sparse audits only the gradient sentinel watched: when it saw the gradients turn non-finite at a
        # step whose loss nobody recorded, with clean data, the loss is as likely to have turned there (a log of
        # an underflowed probability makes both in one step) and is the earlier link of the chain.
        if g is not None and g[0] < s and clean and not any(
                g[0] <= step < s for step, _ in losses.recent(min(len(losses), s - g[0] + 1))):
            yield Finding.of("TW101", "loss", f"loss is {x} at step {s}; the gradients were non-finite from step "
                             f"{g[0]}, whose loss was not recorded (between audits): the loss computation is the "
                             "first suspect (a log or division of a value that underflowed to 0?)", step=g[0])
            return
        yield Finding.of("TW101", "loss", f"loss is {x} at step {s}", step=s)


# The log of float32's smallest normal number: a log-probability at or below it is the log of a probability that
# underflowed (to a denormal or 0), whose derivative 1/p overflows in backward.
_LOG_TINY = -87.3


def _first_bad_gradient(v: StepView) -> tuple[int, str] | None:
    """The first step with a non-finite gradient (and the parameter): from this audit's sentinel, or as TW102
    noted it at an earlier event (no scan of the parameters here: TW102 does that)."""
    notes = v.history.notes
    first = v.extra.get("sentinel", {}).get("grad")
    if first is not None and not v.inputs_nonfinite:
        notes.setdefault("TW102:first", (first, v.extra.get("sentinel_grad", "param")))
    return notes.get("TW102:first")


@training_rule("TW102", when="step", name="nonfinite-gradient", title="Gradient contains NaN or Inf",
               severity=Severity.ERROR, phase=Phase.BACKWARD, obligations=ART15,
               remediation="Look at the first parameter named: a NaN there usually comes from a division by zero, "
                           "log(0), sqrt(0) in backward, or an overflow in float16 without a GradScaler.")
def nonfinite_gradient(v: StepView) -> Iterator[Finding]:
    """A parameter's gradient holds NaN or Inf at an optimizer step, so the step corrupts the weights.

    Example: ``torch.sqrt(x)`` at ``x == 0`` has an infinite derivative. Fix: add an epsilon, clip gradients,
    use a GradScaler with float16. Not reported when the inputs or the loss are already non-finite.
    """
    first = v.extra.get("sentinel", {}).get("grad")
    if first is not None:  # between audits, from the always-on sentinel (the first trainable tensor's gradient)
        name = v.extra.get("sentinel_grad", "param")
        yield Finding.of("TW102", name, f"gradient of {name} is non-finite, first at step {first} (between "
                         "audited steps)", step=first)
        return
    if v.inputs_nonfinite or (v.loss is not None and not _finite(v.loss.value) and v.loss.value is not None):
        return
    for p in v.params:
        if p.has_grad and not math.isfinite(p.grad_norm):
            v.history.notes.setdefault("TW102:first", (v.step, p.name))  # TW101 may date its root here
            yield Finding.of("TW102", p.name, f"gradient of {p.name} is non-finite (norm {p.grad_norm})",
                             step=v.step)
            return


_ADAPTIVE = (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adamax,
             torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adadelta, torch.optim.SparseAdam)


@training_rule("TW103", when=("step", "close"), name="exploding-gradient", title="Gradient norm is exploding",
               severity=Severity.WARN, phase=Phase.BACKWARD, obligations=ART15,
               remediation="Lower the learning rate, clip gradients (torch.nn.utils.clip_grad_norm_), normalise "
                           "inputs, check the initialisation.")
def exploding_gradient(v: StepView) -> Iterator[Finding]:
    """The global gradient norm exceeds ``grad_norm_max`` (default 1e3); under an adaptive optimizer (Adam,
    RMSprop, Adagrad and kin), which rescales gradients, only once it has also grown 10x from the first audited
    step.

    Example: unnormalised inputs in the thousands, or a learning rate far too high. Fix: clip gradients and fix
    the scale of the data or the learning rate.
    """
    # An explosion in the step whose loss jumped from a settled level is held: when the loss stays up, TW108 names
    # the batch (targets in other units, say) and the later large gradients follow it; when the loss comes back
    # down (or the run ends without TW108), the one batch's explosion is reported at its step.
    notes = v.history.notes
    now = v.loss.value if v.loss is not None else None
    held = notes.get("TW103:jump")
    if held is not None and "TW108:began" not in notes and (v.event == "close" or (
            v.step > held[0] + 1 and now is not None and math.isfinite(now) and now < 10 * held[2])):
        del notes["TW103:jump"]
        yield Finding.of("TW103", "model", f"global gradient norm {held[1]:.3g} > {v.threshold('grad_norm_max'):g}",
                         step=held[0], details={"grad_norm": held[1]})
    if v.event == "close":
        return
    norms = [p.grad_norm for p in v.params if p.has_grad]
    if not norms or not all(math.isfinite(n) for n in norms):
        return
    total = math.sqrt(sum(n * n for n in norms))
    first = notes.setdefault("TW103:first", total)
    # An adaptive optimizer divides each gradient by its running scale: a large norm from the start (a summed
    # loss) moves nothing further than a small one. Under it only a norm grown from where it started explodes.
    if total <= v.threshold("grad_norm_max") or (isinstance(v.watch.optimizer, _ADAPTIVE) and total < 10 * first):
        return
    jump = loss_jump(v.history.losses, v.step, now) if held is None else None
    if jump is not None:
        notes["TW103:jump"] = (v.step, total, jump[1])
        return
    yield Finding.of("TW103", "model", f"global gradient norm {total:.3g} > {v.threshold('grad_norm_max'):g}",
                     step=v.step, details={"grad_norm": total})


@training_rule("TW104", when="step", name="vanishing-gradient", title="Gradients vanish towards the input",
               severity=Severity.WARN, phase=Phase.BACKWARD, obligations=ART15,
               remediation="Use ReLU/GELU instead of saturating activations, residual connections, normalisation "
                           "layers, or a better initialisation (kaiming/xavier).", statistical=True)
def vanishing_gradient(v: StepView) -> Iterator[Finding]:
    """The relative gradient (|grad| / |weight|) of the early weight layers (the largest of the first quarter, and
    of 3 at least) is ``vanishing_ratio`` (1e-4) times that of the last one or smaller: the early layers
    effectively stop learning.

    Embedding tables are not judged: a batch looks up a few of their rows, so their relative gradient is small
    however shallow the model.

    Example: a 20-layer MLP of sigmoids. Fix: non-saturating activations, residuals, normalisation.
    """
    tables = v.history.notes.get("TW104:tables")
    if tables is None:  # found once per run: walking the modules at every audit costs on large models
        tables = v.history.notes["TW104:tables"] = {id(stored_weight(m)) for m in v.watch._inner.modules()
                                                    if isinstance(m, EMBEDDINGS)}
    layers = [p for p in v.params if p.has_grad and len(p.shape) >= 2 and _finite(p.grad_norm)
              and _finite(p.weight_norm) and p.weight_norm > 0 and id(p.param) not in tables]
    if len(layers) < 3:
        return
    # The best-trained of the first quarter of the weight matrices (3 at least) stands for the early layers: in a
    # transformer the first attention query/key projections get tiny gradients at any depth, its value and MLP
    # matrices do not; in a net whose gradients vanish, all of them are small.
    last = layers[-1]
    head = layers[:min(len(layers) - 1, max(3, len(layers) // 4))]
    first = max(head, key=lambda p: p.grad_norm / p.weight_norm)
    rf, rl = first.grad_norm / first.weight_norm, last.grad_norm / last.weight_norm
    if rf > 0 and rl > 0 and rf / rl < v.threshold("vanishing_ratio"):  # exactly zero is no gradient (TW111)
        yield Finding.of("TW104", first.name, f"relative gradient of {first.name} is {rf / rl:.2g}x that of "
                         f"{last.name}", step=v.step, details={"ratio": rf / rl})


@training_rule("TW105", when="step", name="nonfinite-activation", title="Activation contains NaN or Inf",
               severity=Severity.ERROR, phase=Phase.FORWARD, obligations=ART15,
               remediation="The named module is the first one whose output is non-finite: check its weights, its "
                           "inputs' scale and any log/exp/division inside it.")
def nonfinite_activation(v: StepView) -> Iterator[Finding]:
    """A module's output holds NaN or Inf while the model's inputs are finite; names the first such module.
    When its own weights are finite too, it made the value itself, from finite inputs: if the loss turned
    non-finite between audits, with clean inputs, the finding is dated at that step (its likely origin).

    An output holding infinities but no NaN, on a step whose loss and gradients are finite, is a mask by design
    (logits of illegal actions set to -inf, attention scores masked before a softmax), not a fault.

    Example: ``torch.exp`` of large logits overflows. Fix: numerically stable forms, smaller learning rate.
    """
    if v.inputs_nonfinite:
        return
    masked = v.loss is not None and v.loss.value is not None and math.isfinite(v.loss.value) \
        and all(math.isfinite(p.grad_norm) for p in v.params if p.has_grad and p.grad_norm is not None)
    for name, m in v.modules.items():
        if m.out is not None and m.out.nonfinite and not (masked and not m.out.has_nan):
            own = [p.weight_norm for p in v.params if p.module == name]
            first = next((s for s, x in v.history.losses.held() if not math.isfinite(x)), None)
            clean = not any(k in v.history.notes for k in ("TW201:first", "TW202:first"))
            if all(map(math.isfinite, own)) and first is not None and first < v.step and clean:
                yield Finding.of("TW105", name, f"output of {name} ({m.kind}) is non-finite from finite inputs and "
                                 f"weights; the loss was first non-finite at step {first}, between audits: this layer "
                                 "is its likely origin", step=first)
                return
            yield Finding.of("TW105", name, f"output of {name} ({m.kind}) is non-finite", step=v.step)
            return


@training_rule("TW106", when="init", name="float64-compute", title="Training in float64",
               severity=Severity.WARN, phase=Phase.INIT, obligations=ART15, category="performance",
               remediation="Use float32 (model.float()) or mixed precision; float64 is 2-64x slower on GPUs and "
                           "doubles memory, with no accuracy benefit for deep learning.")
def float64_compute(v: StepView) -> Iterator[Finding]:
    """Parameters are float64 (often from ``model.double()`` or numpy arrays turned into float64 tensors).

    Fix: ``model.float()`` and ``torch.from_numpy(x).float()``.
    """
    n = [name for name, p in v.watch._inner.named_parameters() if p.dtype == torch.float64]
    if n:
        yield Finding.of("TW106", "model", f"{len(n)} parameter tensors are float64 (e.g. {n[0]})")


@training_rule("TW107", when="step", name="low-precision-updates-lost", title="Updates rounded away in low precision",
               severity=Severity.WARN, phase=Phase.STEP, obligations=ART15,
               remediation="Keep float32 master weights (torch.autocast with float32 parameters, or an optimizer "
                           "with master weights); do not train parameters stored in bfloat16/float16 directly.",
               statistical=True)
def low_precision_updates(v: StepView) -> Iterator[Finding]:
    """Most elements of a float16/bfloat16 parameter that received a non-zero gradient did not change at the
    step: the update is smaller than the format's resolution and is rounded away.

    Example: ``model.to(torch.bfloat16)`` trained with SGD at lr=1e-3. Fix: float32 weights plus autocast.
    """
    for p in v.params:
        if p.unchanged_frac is not None and p.unchanged_frac > v.threshold("rounded_away_fraction"):
            yield Finding.of("TW107", p.name, f"{p.unchanged_frac:.0%} of the updates to {p.name} ({p.dtype}) "
                             "were rounded away", step=v.step)


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


# An update this share of update_ratio_max is already destructive: an unbroken run of audited steps with one
# (noted by TW307 as "TW307:large", from its first step) dates a later TW307 or divergence from its start.
LARGE_UPDATE_SHARE = 0.3
_JUMP = 100.0  # a loss this many times its settled level within one step: the batch changed, not the weights
_JUMP_REACH = 1024  # losses looked back through for it (they reach the history at statistical audits)


@training_rule("TW108", when=("step", "close"), name="loss-divergence", title="Loss is diverging",
               severity=Severity.WARN, phase=Phase.STEP, obligations=ART15,
               remediation="Lower the learning rate (often by 10x), add warm-up or gradient clipping.",
               statistical=True)
def loss_divergence(v: StepView) -> Iterator[Finding]:
    """The loss climbed to ``divergence_factor`` (3) times its early level, the median of its first five values
    (the model as initialised; a few lucky first batches do not set the bar), judged on medians of three consecutive
    values, so one noisy batch does not count, or turned
    non-finite after starting finite: the learning rate is too high for this model and data. A loss that spikes
    and comes back down is reported too: the spike usually leaves dead units behind.

    Example: Adam with lr=1 on a small MLP. Fix: lower the learning rate, add warm-up and clipping.
    """
    history, notes = v.history.losses, v.history.notes
    if len(history) < 6 or notes.get("TW108"):
        return
    base = notes.get("TW108:base")
    if base is None:  # fixed once: the first five losses are held at any audit with six (history.start is 0)
        early = [history[i][1] for i in range(history.start, history.start + 5)]
        base = notes["TW108:base"] = _median(early) if all(map(math.isfinite, early)) else history.first[1]
    if not math.isfinite(base) or base <= 0 or not math.isfinite(history.first[1]):
        return
    limit = v.threshold("divergence_factor") * base
    # Windows already judged stay judged: O(new losses) per audit. A window's median is at most its largest
    # value, so when no new loss is over the limit (nor non-finite), no window is: one pass of builtins.
    start = max(notes.get("TW108_next", 1), history.start)
    notes["TW108_next"] = max(start, len(history) - 2)
    new = [x for _, x in history.recent(len(history) - start)]
    if not new or (all(map(math.isfinite, new)) and max(new) <= limit):
        return
    found = first_divergence(history, start, limit)
    if found is not None:
        notes["TW108"] = True
        step, level = found
        # Steps that each moved the weights by a large share of their norm, from before the rise to the latest
        # audit, are where it began: the units they killed on the way are its consequences, not a second cause.
        since = notes.get("TW307:large")
        began = f" (updates over {LARGE_UPDATE_SHARE:g}x their weights' norm from step {since})" \
            if since is not None and since < step else ""
        notes["TW108:began"] = since if began else step
        # Not a batch's doing while updates stay far above a healthy run's (TW307's streak): the rate's.
        jump = loss_jump(history, step) if not began and "TW307:since" not in notes else None
        if jump is not None:  # the step the batch changed: an input rule that sees it later dates it there
            notes["TW108:jump"] = jump[0]
        data = f": it jumped in one step from a settled {jump[1]:.3g} to {jump[2]:.3g} at step {jump[0]}, which the " \
            "weights of the step before cannot do; a batch unlike the earlier ones (targets or inputs in other " \
            "units, a second data source) made it, not the learning rate" if jump is not None else ""
        yield Finding.of("TW108", "loss", f"loss rose from {base:.3g} to {level:.3g} around step {step}{began}{data}",
                         step=notes["TW108:began"], details={"early": base, "peak": level})


def loss_jump(history: LossLog, step: int, now: float | None = None) -> tuple[int, float, float] | None:
    """``(step, settled level, jumped level)`` when the loss of ``step`` (or, for a window judged around it, of
    the step after; ``now``: this step's loss, not yet in the history) is ``_JUMP`` times the median of the ten
    finite losses before it: one step of the optimizer cannot do that to a settled loss, so the batch did."""
    held = history.recent(min(len(history) - history.start, _JUMP_REACH))  # losses arrive up to an audit late
    if now is not None and not (held and held[-1][0] >= step):
        held = [*held, (step, now)]
    found = None
    for i in range(len(held) - 1, 4, -1):  # from the newest: the step sought is among the last few hundred
        s, x = held[i]
        if s < step:
            break
        if s > step + 1 or not math.isfinite(x):
            continue
        before = [y for _, y in held[max(0, i - 10):i]]
        settled = statistics.median(before) if all(map(math.isfinite, before)) else 0.0
        if settled > 0 and x >= _JUMP * settled:
            found = (s, settled, x)  # the earlier of the two steps wins
    return found


def first_divergence(history: LossLog, start: int, limit: float) -> tuple[int, float] | None:
    """``(step, level)`` of the first window of three consecutive losses, from run-wide index ``start``, whose
    median is over ``limit`` or which holds a non-finite loss (dated at the first such loss: a cause found at
    that step explains it)."""
    for i in range(max(start, history.start), len(history) - 2):
        window = [history[j] for j in range(i, i + 3)]
        bad = next((s for s, x in window if not math.isfinite(x)), None)
        level = _median([x for _, x in window]) if bad is None else math.inf
        if level > limit:
            return (history[i + 1][0] if bad is None else bad), level
    return None


def _entropy(counts: list[float]) -> float:
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts if c > 0) if total else float("nan")


def falling(xs: list[float]) -> bool:
    """The series falls significantly: its least-squares slope is below minus two standard errors."""
    ys = [x for x in xs if math.isfinite(x)]
    n = len(ys)
    if n < 6:
        return False
    tm, ym = (n - 1) / 2, statistics.fmean(ys)
    sxx = sum((t - tm) ** 2 for t in range(n))
    slope = sum((t - tm) * (y - ym) for t, y in enumerate(ys)) / sxx
    resid = sum((y - ym - slope * (t - tm)) ** 2 for t, y in enumerate(ys)) / (n - 2)
    return slope < -2 * math.sqrt(resid / sxx)


def chance_loss(v: StepView) -> float | None:
    """The loss of a model that ignores its input, for the loss kind seen (None when unknown), in the units of the
    loss given to backward: times the median ratio of that loss to the loss call's value (a loss divided over
    accumulation steps, an auxiliary head's term or a feature loss added)."""
    level = _chance_of_call(v)
    scale = v.history.objective_scale
    return level * statistics.median(scale) if level is not None and scale else level


def _chance_of_call(v: StepView) -> float | None:
    notes = v.history.notes
    kind = notes.get("loss_kind")
    hist = v.history.label_hist
    if notes.get("several_losses"):  # loss calls of one kind summed in a step (a GAN discriminator's real + fake)
        return None
    if kind in ("CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss", "BCELoss") and hist is not None:
        # Class weights move the input-blind optimum and its loss away from the label entropy (towards log C for
        # weights that balance the classes): with no level to compare against, none is claimed.
        return None if notes.get("class_weighted") else _entropy([float(c) for c in hist[:-1]])
    # A target with gradients is the model's own output (the other view of a self-supervised pair): no level
    # of a model that ignores its input exists.
    if kind in ("MSELoss",) and notes.get("target_var") and not notes.get("target_grad"):
        return float(statistics.median(notes["target_var"]))
    return None


@training_rule("TW109", when="close", name="loss-at-chance", title="Loss stuck at chance level",
               severity=Severity.WARN, phase=Phase.STEP, obligations=("EU-AI-Act:Art.15", "EU-AI-Act:Art.10(2)(f)"),
               remediation="Check that inputs and labels stay aligned (shuffle them together, same index), that "
                           "labels are the intended column, and that the model receives gradients.")
def loss_at_chance(v: StepView) -> Iterator[Finding]:
    """After ``chance_min_steps`` (20) steps the loss is still within ``chance_margin`` of the loss of a model that
    ignores its inputs (label entropy for classification, target variance for regression). Below twice that
    many steps (moderate confidence, said in the message) it is reported only when the loss is within a third
    of that margin below chance and not significantly falling over the second half of the run, so a run that
    has barely started to learn is not mistaken for one that cannot.

    Example: ``y = y[torch.randperm(len(y))]`` shuffles labels apart from inputs, so nothing can be learned.
    Fix: shuffle indices once and index inputs and labels with them.
    """
    history = v.history.losses
    chance = chance_loss(v)
    if chance is None or chance <= 0 or not len(history):
        return
    first_step, last_step = history.first[0], history[len(history) - 1][0]
    if last_step - first_step + 1 < v.threshold("chance_min_steps"):
        return
    tail = [x for _, x in history.recent(max(5, len(history) // 5)) if math.isfinite(x)]
    if not tail:
        return
    level = statistics.fmean(tail)
    # Far above chance is divergence (TW108), not a model that cannot see the labels.
    if (1 - v.threshold("chance_margin")) * chance <= level <= 1.5 * chance and not v.history.notes.get("TW108"):
        steps = last_step - first_step + 1
        confidence = "high" if steps >= 2 * v.threshold("chance_min_steps") else "moderate"
        # A short run may sit near chance only because it has barely started: judged only when the loss is not
        # significantly falling (least-squares slope within two standard errors of flat, or rising).
        if confidence != "high" and (level < (1 - v.threshold("chance_margin") / 3) * chance or falling(
                [x for _, x in history.recent((len(history) - history.start) // 2)])):
            return
        yield Finding.of("TW109", "loss", f"loss {level:.3g} after {last_step + 1} steps is at chance level "
                         f"{chance:.3g}: no better than the label frequencies (labels misaligned with the inputs, or "
                         f"the model not learning at all); judged from {steps} steps, {confidence} confidence",
                         step=last_step, details={"loss": level, "chance": chance, "steps": steps,
                                                  "confidence": confidence})


@training_rule("TW111", when="close", name="zero-gradient", title="Gradients exactly zero on every audited step",
               severity=Severity.WARN, phase=Phase.BACKWARD, obligations=ART15,
               remediation="The loss does not depend on these weights: look for dead activations after them, a "
                           "multiplication by zero, or an output that never reaches the loss.")
def zero_gradient(v: StepView) -> Iterator[Finding]:
    """A weight tensor's gradient was exactly zero on every audited step although its module ran.

    Example: all ReLUs after a layer are dead, so the layer's gradient is 0. Fix: see TW401/TW402.
    """
    h = v.history
    # Dated no later than the loss's last step, where TW109 dates a loss stuck at chance that this explains.
    step = min(v.step, h.losses[len(h.losses) - 1][0]) if len(h.losses) else v.step
    for name, count in sorted(h.grad_zero.items()):
        if count >= v.threshold("window_min_steps") and h.grad_seen.get(name, 0) == 0:
            yield Finding.of("TW111", name, f"gradient of {name} was exactly zero on {count} audited steps",
                             step=step)
