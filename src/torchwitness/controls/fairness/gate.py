"""``FairnessGate``: turn a fairness evaluation into an action inside the training loop, and record it."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Literal

import msgspec

from torchwitness.controls.fairness.accumulator import FairnessAccumulator
from torchwitness.controls.fairness.functional import DISPARITIES
from torchwitness.controls.fairness.report import FairnessEval, GateDecision, find_disparity, view_name
from torchwitness.errors import InputError

if TYPE_CHECKING:
    from torchwitness.run import Run

Policy = Literal["warn", "block_checkpoint", "stop"]
Bound = Literal["estimate", "ci_low", "ci_high"]


class FairnessWarning(UserWarning):
    """A fairness gate with policy ``warn`` found a violation."""


class FairnessGate:
    """Compare one disparity with a threshold every epoch; warn, block the checkpoint or stop training.

    ``bound`` chooses what is compared: the point ``estimate``, ``ci_high`` (act unless the data show the
    disparity is below the threshold: cautious) or ``ci_low`` (act only when the data show it is above).
    An undefined value (too few sufficient groups) counts as a violation: the gate fails closed.
    Ratio metrics (``demographic_parity_ratio``) violate when *below* the threshold.

    Example::

        gate = FairnessGate(run, metric="demographic_parity_difference", threshold=0.2,
                            attributes=["sex"], bound="ci_high", policy="block_checkpoint")
        decision = gate.evaluate(acc, epoch=epoch)   # records fairness.eval
        if decision.checkpoint_allowed: torch.save(...)
        if decision.stop: break
    """

    def __init__(self, run: Run | None, *, metric: str, threshold: float, attributes: list[str],
                 bound: Bound = "estimate", policy: Policy = "warn") -> None:
        if metric not in DISPARITIES:
            raise InputError(f"unknown fairness metric {metric!r}; known: {', '.join(DISPARITIES)}")
        if bound not in ("estimate", "ci_low", "ci_high"):
            raise InputError(f"bound must be 'estimate', 'ci_low' or 'ci_high', not {bound!r}")
        if policy not in ("warn", "block_checkpoint", "stop"):
            raise InputError(f"policy must be 'warn', 'block_checkpoint' or 'stop', not {policy!r}")
        self.run, self.metric, self.threshold = run, metric, float(threshold)
        self.view, self.bound, self.policy = view_name(attributes), bound, policy
        self.history: list[GateDecision] = []

    def __repr__(self) -> str:
        return (f"FairnessGate({self.metric}[{self.bound}] vs {self.threshold} on {self.view!r}, "
                f"policy={self.policy!r}, decisions={len(self.history)})")

    def decide(self, result: FairnessEval) -> GateDecision:
        d = find_disparity(result, self.view, self.metric)
        value = {"estimate": d.estimate, "ci_low": d.ci_low, "ci_high": d.ci_high}[self.bound]
        lower_is_worse = self.metric.endswith("_ratio")
        if value is None:
            violated, reason = True, "undefined: fewer than two sufficient groups (fails closed)"
        else:
            violated = value < self.threshold if lower_is_worse else value > self.threshold
            op = ("<" if violated else ">=") if lower_is_worse else (">" if violated else "<=")
            reason = f"{self.metric}[{self.bound}] = {value:.4f} {op} {self.threshold}"
        action = self.policy if violated else "none"
        return GateDecision(metric=self.metric, view=self.view, bound=self.bound, threshold=self.threshold,
                            value=value, violated=violated, policy=self.policy, action=action, reason=reason)

    def evaluate(self, source: FairnessAccumulator | FairnessEval, *, epoch: int | None = None,
                 step: int | None = None, split: str = "eval") -> GateResult:
        """Compute (if given an accumulator), decide, record ``fairness.eval`` with the decision, act."""
        result = source.compute(epoch=epoch, split=split) if isinstance(source, FairnessAccumulator) else source
        decision = self.decide(result)
        result = msgspec.structs.replace(result, gate=decision)
        if self.run is not None:
            self.run.record("fairness.eval", msgspec.to_builtins(result), step=step)
        self.history.append(decision)
        if decision.violated and self.policy == "warn":
            warnings.warn(f"fairness gate: {decision.reason}", FairnessWarning, stacklevel=2)
        return GateResult(result, decision)


class GateResult:
    """The evaluation and the decision, with the two questions a training loop asks."""

    def __init__(self, result: FairnessEval, decision: GateDecision) -> None:
        self.result, self.decision = result, decision

    def __repr__(self) -> str:
        d = self.decision
        return f"GateResult({d.view}: {d.reason}; action={d.action!r})"

    @property
    def checkpoint_allowed(self) -> bool:
        return self.decision.action not in ("block_checkpoint", "stop")

    @property
    def stop(self) -> bool:
        return self.decision.action == "stop"
