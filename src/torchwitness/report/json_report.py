"""The JSON findings report: every field of each finding, round-tripping through ``Finding.from_dict``.

>>> from torchwitness.rules.findings import Finding
>>> from torchwitness.rules.catalogue import Phase, Severity
>>> f = Finding("TW103", Severity.WARN, Phase.BACKWARD, "model.fc", "grad norm 1e5", count=4, first_step=2,
...             last_step=9)
>>> read_findings(to_json([f]))[0] == f
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from torchwitness import __version__
from torchwitness.errors import InputError
from torchwitness.jsonfile import parse_json
from torchwitness.rules.catalogue import Severity
from torchwitness.rules.findings import Finding

REPORT_FORMAT = "torchwitness.findings/v1"


def jsonable(value: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and arrays that rules may leave in ``details``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__float__"):
        return float(value)
    return str(value)


def to_json(findings: Sequence[Finding], *, suppressed: int = 0, hidden_hints: int = 0) -> str:
    """The report as indented JSON text: tool, summary counts per severity, findings."""
    summary = {str(s): sum(1 for f in findings if f.severity == s) for s in sorted(Severity, reverse=True)}
    doc = {"format": REPORT_FORMAT, "tool": {"name": "torchwitness", "version": __version__},
           "summary": {**summary, "suppressed_by_baseline": suppressed, "hidden_hints": hidden_hints},
           "findings": [f.to_dict() for f in findings]}
    return json.dumps(doc, indent=2, default=jsonable, ensure_ascii=False)


def read_findings(text: str) -> list[Finding]:
    """Findings from a JSON report (or a bare JSON list of finding dicts)."""
    doc = parse_json(text, "the findings report")
    items = doc.get("findings") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise InputError("not a JSON findings report: no 'findings' list")
    try:
        return [Finding.from_dict(d) for d in items]
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"malformed finding in JSON report: {e}") from None
