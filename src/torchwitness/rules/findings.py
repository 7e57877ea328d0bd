"""Findings: what a rule reports, de-duplicated by (rule, location) with a count and first/last step.

Every first occurrence of a finding is also a ``finding`` record in the ledger; :meth:`FindingSet.summarise`
records the final counts when a run closes, so reports can show both when a problem started and how often it
recurred.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from torchwitness.ledger.schema import register_kind
from torchwitness.rules.catalogue import Phase, Severity, get_rule


@dataclass
class Finding:
    """One de-duplicated finding."""

    rule_id: str
    severity: Severity
    phase: Phase
    location: str
    message: str
    count: int = 1
    first_step: int | None = None
    last_step: int | None = None
    ranks: tuple[int, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule_id, self.location)

    @property
    def fingerprint(self) -> str:
        """Stable across runs for baselines: rule and location, not the message's numbers."""
        return "sha256:" + hashlib.sha256(f"{self.rule_id}\x00{self.location}".encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "severity": str(self.severity), "phase": str(self.phase),
                "location": self.location, "message": self.message, "count": self.count,
                "first_step": self.first_step, "last_step": self.last_step, "ranks": list(self.ranks),
                "fingerprint": self.fingerprint, "details": self.details}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(rule_id=d["rule_id"], severity=Severity.parse(d["severity"]), phase=Phase(d["phase"]),
                   location=d["location"], message=d["message"], count=d.get("count", 1),
                   first_step=d.get("first_step"), last_step=d.get("last_step"), ranks=tuple(d.get("ranks", ())),
                   details=d.get("details", {}))

    @classmethod
    def of(cls, rule_id: str, location: str, message: str, *, step: int | None = None,
           details: dict[str, Any] | None = None, severity: Severity | None = None) -> Finding:
        """A new finding with severity and phase taken from the catalogue entry of ``rule_id``."""
        r = get_rule(rule_id)
        return cls(rule_id=r.id, severity=severity or r.severity, phase=r.phase, location=location, message=message,
                   first_step=step, last_step=step, details=details or {})


class FindingRecord(msgspec.Struct):
    """A ``finding`` record: the first occurrence (``final=False``) or the run's final tally (``final=True``)."""

    rule_id: str
    severity: str
    phase: str
    location: str
    message: str
    count: int
    first_step: int | None
    last_step: int | None
    ranks: list[int]
    fingerprint: str
    details: dict[str, Any]
    final: bool = False


register_kind("finding", FindingRecord)


class FindingSet:
    """De-duplicating collection. ``record`` is called with each new finding (e.g. ``run.record``)."""

    def __init__(self, record: Any = None) -> None:
        self._by_key: dict[tuple[str, str], Finding] = {}
        self._record = record

    def add(self, finding: Finding) -> Finding:
        existing = self._by_key.get(finding.key)
        if existing is None:
            self._by_key[finding.key] = finding
            if self._record is not None:
                self._record("finding", {**finding.to_dict(), "final": False}, finding.first_step)
            return finding
        existing.count += finding.count
        steps = [s for s in (existing.first_step, finding.first_step) if s is not None]
        existing.first_step = min(steps) if steps else None
        steps = [s for s in (existing.last_step, finding.last_step) if s is not None]
        existing.last_step = max(steps) if steps else None
        existing.ranks = tuple(sorted(set(existing.ranks) | set(finding.ranks)))
        if finding.severity > existing.severity:
            existing.severity = finding.severity
        return existing

    def extend(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            self.add(f)

    def __iter__(self) -> Iterator[Finding]:
        return iter(sorted(self._by_key.values(), key=lambda f: (-f.severity, f.rule_id, f.location)))

    def __len__(self) -> int:
        return len(self._by_key)

    def snapshot(self) -> list[Finding]:
        return [replace(f) for f in self]

    def summarise(self) -> None:
        """Record the final tally (count, first and last step, ranks) of every finding."""
        if self._record is None:
            return
        for f in self:
            self._record("finding", {**f.to_dict(), "final": True}, f.last_step)
