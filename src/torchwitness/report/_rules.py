"""Catalogue look-ups that tolerate findings whose rule is not installed here (a report read elsewhere)."""

from __future__ import annotations

from torchwitness.errors import InputError
from torchwitness.rules.catalogue import Rule, get_rule


def rule_or_none(rule_id: str) -> Rule | None:
    try:
        return get_rule(rule_id)
    except InputError:
        return None
