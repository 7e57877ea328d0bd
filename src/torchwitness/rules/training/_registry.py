"""The registry of training rules: which event of the watch calls each check."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple

from torchwitness.rules.catalogue import Phase, Severity, rule

When = Literal["init", "step", "eval", "close"]


class TrainingRule(NamedTuple):
    """A registered check: its ID, the events that call it, and whether it needs the statistical probes."""

    id: str
    when: tuple[When, ...]
    check: Callable[..., Any]
    statistical: bool = False


_TRAINING: dict[str, TrainingRule] = {}


def training_rule(id: str, *, when: When | tuple[When, ...], name: str, title: str, severity: Severity | str,
                  phase: Phase | str,
                  remediation: str, obligations: Iterable[str] = ("EU-AI-Act:Art.15",),
                  category: str = "correctness", source: str = "torchwitness",
                  references: Iterable[str] = (),
                  statistical: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a training rule in the catalogue and with the watch (third-party rules may use this too).

    ``statistical=True`` says the check judges only what the statistical probes collect (unit statistics, update
    ratios, label counts, what the loss is fed) or facts that persist from step to step (shapes, structure):
    when audits are dense and the statistical probes are thinned out (see ``Watch(statistics_every=...)``), the
    watch calls it on the audited steps that take them, and at its other events as usual.
    """
    register = rule(id, name=name, title=title, severity=severity, phase=phase, remediation=remediation,
                    obligations=obligations, category=category, source=source, references=references)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(fn)
        _TRAINING[id] = TrainingRule(id, (when,) if isinstance(when, str) else tuple(when), fn, statistical)
        return fn

    return decorate


def training_rules() -> list[TrainingRule]:
    """Every registered training rule, by ID."""
    return [r for _, r in sorted(_TRAINING.items())]
