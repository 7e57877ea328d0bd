"""TW4xx: architecture, train/eval modes, activations, and performance hints (``HINT``, off by default)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.nn.utils import prune

from torchwitness.probes.view import StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._modules import stored_weight
from torchwitness.rules.training._registry import training_rule

ART15 = ("EU-AI-Act:Art.15",)
_NORMS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)
_STATEFUL = (torch.nn.modules.batchnorm._BatchNorm,)


@training_rule("TW401", when="step", name="eval-mode-training", title="Model in eval mode while training",
               severity=Severity.ERROR, phase=Phase.FORWARD, obligations=ART15,
               remediation="Call model.train() at the start of every training epoch (after each evaluation).")
def eval_mode_training(v: StepView) -> Iterator[Finding]:
    """A forward whose output was backpropagated ran with ``model.training == False``: dropout is off and
    BatchNorm uses (and never updates) its running statistics, so the model trains as a different network.
    Reported as INFO when the model has no mode-dependent layer.

    Example: ``evaluate(model)`` calls ``model.eval()`` and the loop never calls ``model.train()`` again.
    """
    sev = None if v.watch.mode_sensitive else Severity.INFO
    first = v.extra.get("eval_trained")  # noted on the host between audits (no kernel): earlier than this step
    if v.trained_modes and not all(v.trained_modes) and (first is None or first >= v.step):
        yield Finding.of("TW401", "model", f"training step {v.step} ran in eval mode", step=v.step, severity=sev)
    elif first is not None:
        yield Finding.of("TW401", "model", f"every training forward of step {first} ran in eval mode", step=first,
                         severity=sev)


@training_rule("TW402", when=("eval", "step", "close"), name="eval-in-train-mode", title="Evaluation in train mode",
               severity=Severity.WARN, phase=Phase.EVAL, obligations=ART15,
               remediation="Call model.eval() before evaluating (and model.train() after); put a frozen teacher or "
                           "target network in eval() once.")
def eval_in_train_mode(v: StepView) -> Iterator[Finding]:
    """The model ran under ``torch.no_grad()`` (evaluation) in train mode while it has dropout or batch norm:
    predictions are noisy and BatchNorm's running statistics drift towards the evaluation data. Also a model
    outside the watch run under ``no_grad`` in train mode with its dropout on, while a statistical audit is armed
    (a distillation teacher frozen with ``requires_grad_(False)`` but never put in ``eval()``: every soft target
    is a random sub-network's guess).

    A no-grad forward of the very batch just trained on (a training-accuracy metric) is not an evaluation.

    Example: ``with torch.no_grad(): val_loss = loss_fn(model(xv), yv)`` without ``model.eval()``.
    """
    if v.event != "eval":  # seen by the hook every module call meets while an audit is armed
        seen = v.history.notes.get("TW402:outside_seen")
        if seen is not None and not v.history.notes.get("TW402:outside"):
            v.history.notes["TW402:outside"] = True
            yield Finding.of("TW402", "outside-model", f"a model outside the watch ran under no_grad in train mode at "
                             f"step {seen[2]}, its {seen[0]}(p={seen[1]:g}) on: a frozen teacher or a copy of the "
                             "model never put in eval()?", step=seen[2])
        return
    if v.extra.get("training") and v.watch.mode_sensitive and not _recalibrating(v.watch._inner):
        yield Finding.of("TW402", "model", "no-grad forward (evaluation) ran in train mode", step=v.step)


def _recalibrating(model: torch.nn.Module) -> bool:
    """BatchNorm statistics recomputed on purpose, as ``torch.optim.swa_utils.update_bn`` does: a no-grad pass in
    train mode with every tracking norm's momentum None (a cumulative average over the pass)."""
    norms = [m for m in model.modules() if isinstance(m, _STATEFUL) and m.track_running_stats]
    return bool(norms) and all(m.momentum is None for m in norms)


def _dated(rule_id: str, location: str, message: str, since: int, v: StepView) -> Finding:
    """A finding of a persistent condition: from the step it was first seen to this one."""
    f = Finding.of(rule_id, location, message, step=since)
    f.last_step = v.step
    return f


def _persistent(v: StepView, key: str) -> int | None:
    """The step this condition was first seen, once it has been seen on two audited steps (else None): a
    finding dated from its start can be tied to the cause that started at the same step."""
    first = v.history.notes.setdefault(f"{key}:first", v.step)
    return first if v.history.bump(key) >= 2 else None


_NARROW = 32  # layers with fewer units than this need a larger dead share (TW403)


@training_rule("TW403", when="step", name="dead-units", title="Dead units", severity=Severity.WARN,
               phase=Phase.FORWARD, obligations=ART15,
               remediation="Lower the learning rate, use LeakyReLU/GELU, check bias initialisation and input scale.",
               statistical=True)
def dead_units(v: StepView) -> Iterator[Finding]:
    """More than ``dead_fraction`` (50%) of a layer's units output exactly zero for the whole batch, on two
    audited steps: they pass no gradient and never recover ("dying ReLU"). A layer narrower than 32 units must
    have three quarters of them dead: a narrow healthy layer (a 16-unit predictor) can sit at half.

    Example: ``nn.Linear`` with ``bias`` initialised to -10 before a ReLU. Fix: sane init, smaller learning rate.
    """
    for name, m in v.modules.items():
        u = m.units
        if u is None or m.n_units < v.threshold("min_units") or m.batch < 8 or m.out is None:
            continue
        frac = u["dead"] / m.n_units
        conv = len(m.out.shape) in (4, 5) or m.channels_first
        limit = v.threshold("dead_fraction")
        if m.n_units < _NARROW:  # a few units make a noisy share: halfway from the threshold to all of them
            limit = (1 + limit) / 2
        if frac > limit and not conv and (since := _persistent(v, f"TW403:{name}")) is not None:
            yield _dated("TW403", name, f"{frac:.0%} of the {m.n_units} units of {name} are dead", since, v)


@training_rule("TW404", when="step", name="dead-filters", title="Dead convolution filters", severity=Severity.WARN,
               phase=Phase.FORWARD, obligations=ART15,
               remediation="Lower the learning rate, check the bias initialisation, add BatchNorm before the ReLU.",
               statistical=True)
def dead_filters(v: StepView) -> Iterator[Finding]:
    """At least ``dead_fraction`` (50%) of a convolutional layer's channels are zero at every position for the
    whole batch, on two audited steps. Or, behind an activation the watch does not see (``F.relu`` in the
    forward: the layer's own output is its pre-activation), at least that share of its filters, but not all, get
    exactly zero gradient on two statistical steps: they never pass the activation.

    Example: a conv stack with a learning rate 100x too high. Fix: lower it; BatchNorm; LeakyReLU.
    """
    zero = v.extra.get("data", {}).get("gp/zero_filters") or ()
    for (name, n), dead in zip(v.extra.get("filters", ()), zero, strict=False):
        # Not all of them: a whole gradient of zeros is a step that saw none (zero_grad before step(): TW308/TW111).
        if n >= v.threshold("min_units") and v.threshold("dead_fraction") <= dead / n < 1 \
                and (since := _persistent(v, f"TW404:grad:{name}")) is not None:
            yield _dated("TW404", name, f"{int(dead)} of the {n} filters of {name} get exactly zero gradient: dead, "
                         "they never pass the activation after them", since, v)
    for name, m in v.modules.items():
        u = m.units
        if u is None or m.out is None or m.n_units < v.threshold("min_units") \
                or not (len(m.out.shape) in (4, 5) or m.channels_first):
            continue
        frac = u["dead"] / m.n_units
        if frac >= v.threshold("dead_fraction") and (since := _persistent(v, f"TW404:{name}")) is not None:
            yield _dated("TW404", name, f"{frac:.0%} of the {m.n_units} channels of {name} are dead", since, v)


@training_rule("TW405", when="step", name="activation-collapse", title="Activations collapse to one vector",
               severity=Severity.WARN, phase=Phase.FORWARD, obligations=ART15,
               remediation="Check for saturation (huge pre-activations), a learning rate too high, or an input "
                           "that does not reach this layer.", statistical=True)
def activation_collapse(v: StepView) -> Iterator[Finding]:
    """A layer gives (almost) the same output for every sample of a varied batch on two audited steps: the
    representation has collapsed and carries no information about the input.

    Example: tanh units saturated by inputs in the thousands. Fix: normalise inputs, lower the learning rate.
    """
    x = v.primary
    if x is None or x.stats is None or not x.floating or x.stats["max"] - x.stats["min"] <= v.threshold("flat_std"):
        return
    for name, m in v.modules.items():
        u = m.units
        if u is None or m.batch < 8 or m.batch != (x.shape[0] if x.shape else 0) or u["magnitude"] <= 0:
            continue
        if isinstance(m.module, torch.nn.Embedding):  # a lookup of the same ids (positions) is not a collapse
            continue
        if u["dead"] >= m.n_units:  # every unit zero: that is TW403, not a collapse
            continue
        if u["spread"] <= v.threshold("collapse_ratio") * u["magnitude"] \
                and (since := _persistent(v, f"TW405:{name}")) is not None:
            yield _dated("TW405", name, f"outputs of {name} barely vary across the batch (spread "
                         f"{u['spread']:.2g} vs magnitude {u['magnitude']:.2g})", since, v)
            return


@training_rule("TW406", when="step", name="stateful-layer-reuse", title="Stateful layer called twice per forward",
               severity=Severity.WARN, phase=Phase.FORWARD, obligations=ART15,
               remediation="Create one BatchNorm per place it is used; reusing it mixes statistics of different "
                           "feature distributions.", statistical=True)
def stateful_reuse(v: StepView) -> Iterator[Finding]:
    """A BatchNorm module was called more than once in one forward: its running statistics mix the
    distributions of every call site, and evaluation uses the wrong ones.

    Example: ``self.bn`` applied after conv1 and again after conv2. Fix: ``self.bn1``, ``self.bn2``. A shared
    block run once per input (a Siamese encoder over two views: the block that holds the BatchNorm ran as many
    times) is not reported: every call normalises the same kind of features.
    """
    for name, m in v.modules.items():
        if m.max_calls > 1 and isinstance(m.module, _STATEFUL) and m.training and not _whole_block_rerun(v, name):
            yield Finding.of("TW406", name, f"{name} ({m.kind}) ran {m.max_calls} times in one forward", step=v.step)


def _whole_block_rerun(v: StepView, name: str) -> bool:
    """Whether a block enclosing ``name`` (below the model itself) ran as many times as it did."""
    calls = v.modules[name].max_calls
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        parent = v.modules.get(".".join(parts[:i]))
        if parent is not None and parent.max_calls >= calls:
            return True
    return False


@training_rule("TW407", when="step", name="tiny-batch-batchnorm", title="Tiny batches with BatchNorm",
               severity=Severity.WARN, phase=Phase.BATCH, obligations=ART15,
               remediation="Use batches of 16+ samples, or GroupNorm/LayerNorm, or freeze BatchNorm statistics.",
               statistical=True)
def tiny_batch_batchnorm(v: StepView) -> Iterator[Finding]:
    """BatchNorm in train mode sees fewer than ``tiny_batch`` (8) samples on two audited steps: its batch
    statistics are noise and the running estimates are poor.

    Example: ``DataLoader(ds, batch_size=2)`` with a BatchNorm model. Fix: bigger batches or GroupNorm.
    """
    for name, m in v.modules.items():
        if isinstance(m.module, _STATEFUL) and m.training and m.out is not None and m.out.shape:
            b = m.out.shape[0]
            if b < v.threshold("tiny_batch") and _persistent(v, f"TW407:{name}") is not None:
                yield Finding.of("TW407", name, f"{name} normalises batches of {b}", step=v.step)


@training_rule("TW408", when="close", name="unused-layer", title="Layer never used in training",
               severity=Severity.WARN, phase=Phase.STEP, obligations=ART15,
               remediation="Remove the layer, or wire it into forward(); if it is used only at inference, freeze "
                           "it and leave it out of the optimizer.")
def unused_layer(v: StepView) -> Iterator[Finding]:
    """Over the whole watch, a module with trainable parameters never ran in a training forward and none of its
    parameters was ever updated (their version counters never moved).

    Example: ``self.dropout2`` or an old ``self.head`` defined in ``__init__`` and never called. Fix: remove it.
    """
    w = v.watch
    if v.step < v.threshold("window_min_steps") or w.compiled or not v.history.audited:
        return
    for name, m in w._inner.named_modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if not own or (name or "model") in v.history.modules_called:
            continue
        if all(p._version == w.initial_versions.get(id(p)) for p in own):
            yield Finding.of("TW408", name or "model", f"{name} ({type(m).__name__}) never ran and was never updated "
                             f"in {v.step} steps", step=v.step)
    yield from _frozen_tail(v)


def _frozen_tail(v: StepView) -> Iterator[Finding]:
    """The last layers (in the model's definition order, the output layer included) are frozen while every layer
    before them trains, and they were handed to the optimizer all the same, the layer that produces the model's
    output among them: a freeze meant for the first layers that caught the last ones (a slice taken from the
    wrong end). A partly frozen model (a frozen backbone, LoRA over frozen weights) has frozen layers before
    trainable ones; frozen layers left out of the optimizer are frozen on purpose."""
    opt = v.optimizer
    if opt is None:
        return
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    layers = [(n or "model", own) for n, m in v.watch._inner.named_modules() if (own := list(m.parameters(False)))]
    frozen = [not any(p.requires_grad for p in own) for _, own in layers]
    tail = len(frozen)
    while tail > 0 and frozen[tail - 1]:
        tail -= 1
    if tail == 0 or tail == len(frozen) or any(frozen[:tail]) or \
            not all(id(p) in held for _, own in layers[tail:] for p in own):
        return
    names = [n for n, _ in layers[tail:]]
    out = v.history.notes.get("root_producer")
    if out is not None and not any(out == n or out.startswith(n + ".") for n in names):
        return  # the model's output comes from a layer that trains: the frozen ones are something else (a loss net)
    yield Finding.of("TW408", names[-1], f"the last layers ({', '.join(names[-4:])}) are frozen (requires_grad=False) "
                     "while every layer before them trains, yet the optimizer was given them: the output layers never "
                     "learn (a freeze meant for the first layers caught the last?)", step=v.step)


@training_rule("TW409", when="step", name="redundant-bias-before-norm", title="Bias before BatchNorm is redundant",
               severity=Severity.HINT, phase=Phase.FORWARD, obligations=ART15, category="performance",
               remediation="Create the Linear/Conv with bias=False: BatchNorm subtracts the mean and has its own "
                           "shift.", statistical=True)
def redundant_bias(v: StepView) -> Iterator[Finding]:
    """A Linear/Conv with a bias feeds BatchNorm directly; the normalisation removes the bias, which only
    costs memory and compute. Fix: ``bias=False``.
    """
    for name, m in v.modules.items():
        if isinstance(m.module, _NORMS) and m.producer:
            src = v.modules.get(m.producer)
            if src is not None and getattr(src.module, "bias", None) is not None and isinstance(
                    src.module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
                yield Finding.of("TW409", m.producer, f"{src.kind} '{m.producer}' has a bias that {m.kind} '{name}' "
                                 "cancels", step=v.step)


@training_rule("TW410", when="init", name="even-kernel", title="Even convolution kernel", severity=Severity.INFO,
               phase=Phase.INIT, obligations=ART15,
               remediation="Use odd kernels (3, 5) with padding k // 2 so outputs stay centred; even kernels are fine "
                           "when stride equals kernel size (patchify, downsampling).")
def even_kernel(v: StepView) -> Iterator[Finding]:
    """A convolution has an even kernel size with stride smaller than the kernel: outputs shift by half a
    pixel per layer and padding cannot keep them centred.
    """
    for name, m in v.watch._inner.named_modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd) and any(
                k % 2 == 0 and k > 1 and s < k for k, s in zip(m.kernel_size, m.stride, strict=False)):
            yield Finding.of("TW410", name, f"{name} has kernel {tuple(m.kernel_size)} with stride {tuple(m.stride)}")


_ZERO_SETTLE = 2  # the step from which a layer still all zero and without gradient is judged dead (TW411)


@training_rule("TW411", when=("init", "step", "close"), name="dead-filter-weights",
               title="Convolution filters with all-zero weights",
               severity=Severity.WARN, phase=Phase.INIT, obligations=ART15,
               remediation="Re-initialise the layer, or prune the filters for real (smaller out_channels).")
def dead_filter_weights(v: StepView) -> Iterator[Finding]:
    """Some output filters of a convolution have all-zero weights (often left by structured pruning or a bad
    init): they compute nothing, and the channels after them are dead (TW404 is reported as its consequence).

    The same for the output neurons (weight rows) of a ``Linear`` layer of 4 or more. A layer whose weights are
    all zero, with no pruning mask on them, may be zero-initialised on purpose (a ControlNet zero convolution, a
    residual branch, a LoRA ``B``, a head): it is reported only if it stays all zero, with no gradient from step 2
    on (nothing will ever move it) or until the end of the run; one that trains away from zero is not pruned.

    Example: ``conv.weight.data[:8] = 0`` after magnitude pruning. Fix: re-initialise, or shrink the layer."""
    pending: set[str] = v.history.notes.setdefault("TW411:pending", set())
    if v.event != "init":
        yield from _still_zero(v, pending)
        return
    for name, m in v.watch._inner.named_modules():
        weight = stored_weight(m)
        conv = isinstance(m, torch.nn.modules.conv._ConvNd)
        if weight is None or not weight.numel() or not (conv or (isinstance(m, torch.nn.Linear) and
                                                                m.out_features >= 4)):
            continue
        rows = weight.shape[0]
        zero = int((weight.detach().flatten(1).abs().amax(1) == 0).sum())
        if zero == rows and not prune.is_pruned(m):
            pending.add(name)  # zero-initialised on purpose, or dead: what training does to it tells
        elif zero:
            yield _zero_rows(name, m, zero)


def _zero_rows(name: str, m: torch.nn.Module, zero: int) -> Finding:
    if isinstance(m, torch.nn.Linear):
        return Finding.of("TW411", name, f"{zero} of {m.out_features} neurons of {name} have all-zero weights")
    return Finding.of("TW411", name, f"{zero} of {m.weight.shape[0]} filters of {name} are all zero")


def _still_zero(v: StepView, pending: set[str]) -> Iterator[Finding]:
    """The all-zero layers noted when the watch started that are still all zero: reported (dated from the start)
    at the end of the run, or from step 2 on when no gradient reaches them either (a chain of zero layers moves
    one layer a step, from the output back)."""
    if not pending:
        return
    modules = dict(v.watch._inner.named_modules())
    for name in sorted(pending):
        m = modules.get(name)
        weight = stored_weight(m) if m is not None else None
        if weight is None or bool(weight.detach().any()):
            pending.discard(name)  # it trained away from zero (a deliberate zero init), or is gone
            continue
        if v.event == "close" or (v.step >= _ZERO_SETTLE and (weight.grad is None or not bool(weight.grad.any()))):
            pending.discard(name)
            yield _zero_rows(name, m, weight.shape[0])


@training_rule("TW412", when="close", name="no-forward-seen", title="The watched model's forward never ran",
               severity=Severity.WARN, phase=Phase.STEP, obligations=ART15,
               remediation="Train the watched model (or watch the one the loop trains: a copy made by deepcopy or "
                           "a reload is another model), or bracket the forward with watch.begin_forward(...) and "
                           "watch.end_forward(output).")
def no_forward_seen(v: StepView) -> Iterator[Finding]:
    """Optimizer steps were audited but not one saw a training forward of the watched model (the loop trains a
    copy of it with the watched optimizer, say), so the checks of inputs, activations, the loss call and stale
    gradients never ran; gradients and the loss history were judged all the same. Also reported when backward
    ran three times or more but the watched model never ran and the watched optimizer never stepped: another
    model was trained in its place. A loop that calls the model's parts is audited through them instead.

    Example: ``twin = copy.deepcopy(model)`` trained in the loop after ``run.watch(model, opt)``. Fix: train the
    watched model, or watch the one trained.
    """
    h = v.history
    # Forwards under torch.func transforms (per-sample gradients) ran, but their tensors cannot be read.
    if h.counters.get("training_forwards") or h.notes.get("transformed_forwards"):
        return
    if h.audited:
        yield Finding.of("TW412", "model", f"no forward of the watched {type(v.watch.model).__name__} was seen in "
                         f"{h.audited} audited steps of {v.step}", step=v.step)
    elif v.step == 0 and v.watch.optimizer is not None and v.watch.backward_elsewhere >= 3:
        yield Finding.of("TW412", "model", f"{v.watch.backward_elsewhere} backward calls ran, but the watched "
                         f"{type(v.watch.model).__name__} never ran a training forward and the watched optimizer "
                         "never stepped: another model (a copy of this one?) was trained in its place", step=0)


@training_rule("TW450", when="init", name="cuda-unused", title="CUDA is available but the model is on CPU",
               severity=Severity.HINT, phase=Phase.INIT, obligations=(), category="performance",
               remediation="model.to('cuda') and move each batch with .to('cuda', non_blocking=True).")
def cuda_unused(v: StepView) -> Iterator[Finding]:
    """A GPU is present but every parameter is on the CPU."""
    params = list(v.watch._inner.parameters())
    if torch.cuda.is_available() and params and all(p.device.type == "cpu" for p in params):
        yield Finding.of("TW450", "model", "model is on CPU while CUDA is available")


@training_rule("TW451", when="init", name="tensor-core-alignment", title="Dimensions not multiples of 8",
               severity=Severity.HINT, phase=Phase.INIT, obligations=(), category="performance",
               remediation="Pad hidden sizes and vocabularies to multiples of 8 (64 is better) for tensor cores.")
def tensor_core_alignment(v: StepView) -> Iterator[Finding]:
    """On CUDA, Linear layers whose in/out features are not multiples of 8 cannot use tensor cores fully."""
    for name, m in v.watch._inner.named_modules():
        if isinstance(m, torch.nn.Linear) and getattr(stored_weight(m), "is_cuda", False) \
                and (m.in_features % 8 or m.out_features % 8) \
                and min(m.in_features, m.out_features) >= 64:
            yield Finding.of("TW451", name, f"{name} is {m.in_features}x{m.out_features}")


@training_rule("TW452", when="init", name="mixed-devices", title="Parameters on several devices",
               severity=Severity.INFO, phase=Phase.INIT, obligations=ART15,
               remediation="Move the whole model with model.to(device) unless the split is intentional (pipeline).")
def mixed_devices(v: StepView) -> Iterator[Finding]:
    """Parameters live on more than one device; usually a layer created after ``model.to(device)``."""
    devices = {str(p.device) for p in v.watch._inner.parameters()}
    if len(devices) > 1:
        yield Finding.of("TW452", "model", f"parameters on {', '.join(sorted(devices))}")
