"""TW15x: the loss call: what the loss function is fed and whether it matches what it expects."""

from __future__ import annotations

from collections.abc import Iterator

from torchwitness.probes.view import StepView
from torchwitness.rules.catalogue import Phase, Severity
from torchwitness.rules.findings import Finding
from torchwitness.rules.training._registry import training_rule

ART15 = ("EU-AI-Act:Art.15",)
_LOGIT_LOSSES = ("CrossEntropyLoss", "BCEWithLogitsLoss")
_ELEMENTWISE = ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "BCELoss", "BCEWithLogitsLoss", "KLDivLoss",
                "PoissonNLLLoss", "GaussianNLLLoss", "SoftMarginLoss")


_SQUASHING = frozenset({"SigmoidBackward0", "SoftmaxBackward0", "HardsigmoidBackward0"})


@training_rule("TW150", when="step", name="probabilities-into-logit-loss",
               title="Probabilities fed to a loss that expects logits", severity=Severity.ERROR,
               phase=Phase.FORWARD, obligations=ART15,
               remediation="Remove the softmax/sigmoid at the end of the model (CrossEntropyLoss and "
                           "BCEWithLogitsLoss apply it themselves), or use NLLLoss on log_softmax / BCELoss.",
               statistical=True)
def probabilities_into_logit_loss(v: StepView) -> Iterator[Finding]:
    """``CrossEntropyLoss`` got rows that already sum to 1 within [0, 1], or ``BCEWithLogitsLoss`` got values
    all within [0, 1] made by a sigmoid or softmax: a squashing function is applied twice, gradients shrink and
    training stalls. (Values within [0, 1] alone are no evidence for a binary loss: an untrained model's logits
    often all lie near 0.5.)

    Example: ``nn.Sequential(..., nn.Softmax(-1))`` trained with ``nn.CrossEntropyLoss()``. Fix: drop the
    Softmax from the model and apply it only at inference.
    """
    lo = v.loss
    if lo is None or lo.kind not in _LOGIT_LOSSES or lo.input is None or lo.input.stats is None:
        return
    s = lo.input.stats
    if lo.input.numel < 8 or lo.input.nonfinite or s["min"] < 0 or s["max"] > 1:
        return
    if lo.kind == "CrossEntropyLoss":
        if lo.row_sums is None or len(lo.input.shape) < 2 or not (lo.row_sums[0] >= 0.99 and lo.row_sums[1] <= 1.01):
            return
        what = "rows summing to 1 (softmax output)"
    elif lo.producer in _SQUASHING:
        what = f"values all within [0, 1] made by {lo.producer.removesuffix('Backward0').lower()}"
    else:
        return
    yield Finding.of("TW150", "loss", f"{lo.kind} received {what}; it expects raw logits", step=v.step)


@training_rule("TW151", when="step", name="nll-input-not-log-probabilities",
               title="NLLLoss input is not log-probabilities", severity=Severity.ERROR, phase=Phase.FORWARD,
               obligations=ART15,
               remediation="Feed NLLLoss with log_softmax(logits), or use CrossEntropyLoss on raw logits.",
               statistical=True)
def nll_input(v: StepView) -> Iterator[Finding]:
    """``NLLLoss`` expects log-probabilities (all <= 0); positive inputs mean probabilities or raw logits, so
    the loss is unbounded below and minimising it does not fit the labels.

    Example: ``F.nll_loss(F.softmax(z, -1), y)``. Fix: ``F.log_softmax``.
    """
    lo = v.loss
    if lo is None or lo.kind != "NLLLoss" or lo.input is None or lo.input.stats is None or lo.input.nonfinite:
        return
    if lo.input.stats["max"] > 0:
        yield Finding.of("TW151", "loss", f"NLLLoss input reaches {lo.input.stats['max']:.3g} > 0", step=v.step)


@training_rule("TW152", when="step", name="broadcasting-loss-shapes", title="Loss input and target shapes broadcast",
               severity=Severity.ERROR, phase=Phase.FORWARD, obligations=ART15,
               remediation="Make output and target the same shape: out.squeeze(-1) or y.unsqueeze(-1), "
                           "(B, 1) vs (B,) broadcasts to (B, B).", statistical=True)
def broadcasting_shapes(v: StepView) -> Iterator[Finding]:
    """An element-wise loss got input and target of different shapes that broadcast; the loss compares every
    output with every target and the model learns the mean.

    Example: ``nn.MSELoss()(model(x), y)`` with output ``(64, 1)`` and ``y`` of shape ``(64,)``. Fix: squeeze.
    """
    lo = v.loss
    if lo is None or lo.kind not in _ELEMENTWISE or lo.input is None or lo.target is None:
        return
    if lo.input.shape != lo.target.shape:
        yield Finding.of("TW152", "loss", f"{lo.kind} input {list(lo.input.shape)} vs target "
                         f"{list(lo.target.shape)} broadcast", step=v.step)


@training_rule("TW153", when="step", name="binary-targets-out-of-range", title="Binary targets outside [0, 1]",
               severity=Severity.ERROR, phase=Phase.BATCH, obligations=ART15,
               remediation="Map labels to {0, 1} (e.g. (y == positive_label).float()); for several classes use "
                           "CrossEntropyLoss.")
def binary_targets(v: StepView) -> Iterator[Finding]:
    """``BCEWithLogitsLoss``/``BCELoss`` targets must be probabilities in [0, 1]; labels like {-1, 1} or
    {1, 2} or class ids are silently accepted and train the wrong objective.

    Example: SVM-style labels ``y in {-1, +1}`` with BCEWithLogitsLoss. Fix: ``(y + 1) / 2``.
    """
    lo = v.loss
    if lo is None or lo.kind not in ("BCEWithLogitsLoss", "BCELoss") or v.targets is None:
        return
    s = v.targets.stats
    if s is not None and not v.targets.nonfinite and (s["min"] < 0 or s["max"] > 1):
        yield Finding.of("TW153", "target", f"binary targets span [{s['min']:.3g}, {s['max']:.3g}]", step=v.step)
