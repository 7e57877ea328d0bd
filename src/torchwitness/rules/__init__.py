"""Rules turn signals into findings. See :mod:`torchwitness.rules.catalogue` and :mod:`.findings`."""

from torchwitness.rules.catalogue import Phase, Rule, Severity, all_rules, get_rule, register_rule, rule, select_rules
from torchwitness.rules.findings import Finding, FindingSet

__all__ = ["Finding", "FindingSet", "Phase", "Rule", "Severity", "all_rules", "get_rule", "register_rule", "rule",
           "select_rules"]
