"""The registry of training rules: which event of the watch calls each check."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from torchwitness.rules.catalogue import Phase, Severity, rule

When = Literal["init", "step", "eval", "close"]
_TRAINING: dict[str, tuple[tuple[When, ...], Callable[..., Any]]] = {}


def training_rule(id: str, *, when: When | tuple[When, ...], name: str, title: str, severity: Severity | str,
                  phase: Phase | str,
                  remediation: str, obligations: Iterable[str] = ("EU-AI-Act:Art.15",),
                  category: str = "correctness", source: str = "torchwitness",
                  references: Iterable[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a training rule in the catalogue and with the watch (third-party rules may use this too)."""
    register = rule(id, name=name, title=title, severity=severity, phase=phase, remediation=remediation,
                    obligations=obligations, category=category, source=source, references=references)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        register(fn)
        _TRAINING[id] = ((when,) if isinstance(when, str) else tuple(when), fn)
        return fn

    return decorate


def training_rules() -> list[tuple[str, tuple[When, ...], Callable[..., Any]]]:
    """``(rule ID, event, check)`` for every registered training rule."""
    return [(rid, when, fn) for rid, (when, fn) in sorted(_TRAINING.items())]
