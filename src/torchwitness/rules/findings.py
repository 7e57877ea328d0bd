"""Findings: what a rule reports, de-duplicated by (rule, location) with a count and first/last step.

Every first occurrence of a finding is also a ``finding`` record in the ledger; :meth:`FindingSet.summarise`
records the final counts when a run closes, so reports can show both when a problem started and how often it
recurred. A finding that an earlier one explains (see :mod:`torchwitness.rules.causes`) is attached to it as a
consequence (``caused_by`` names the root's ``RULE@location``): it is listed under its root, not on its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from torchwitness.ledger.schema import register_kind
from torchwitness.rules.catalogue import Phase, Severity, get_rule
from torchwitness.rules.causes import is_cause, sort_key


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
    caused_by: str | None = None  # "RULE@location" of the root cause this finding is a consequence of
    consequences: list[Finding] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule_id, self.location)

    @property
    def ref(self) -> str:
        """``RULE@location``: how a consequence names its root."""
        return f"{self.rule_id}@{self.location}"

    @property
    def fingerprint(self) -> str:
        """Stable across runs for baselines: rule and location, not the message's numbers."""
        return "sha256:" + hashlib.sha256(f"{self.rule_id}\x00{self.location}".encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "severity": str(self.severity), "phase": str(self.phase),
                "location": self.location, "message": self.message, "count": self.count,
                "first_step": self.first_step, "last_step": self.last_step, "ranks": list(self.ranks),
                "fingerprint": self.fingerprint, "details": self.details, "caused_by": self.caused_by,
                "consequences": [c.to_dict() for c in self.consequences]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(rule_id=d["rule_id"], severity=Severity.parse(d["severity"]), phase=Phase(d["phase"]),
                   location=d["location"], message=d["message"], count=d.get("count", 1),
                   first_step=d.get("first_step"), last_step=d.get("last_step"), ranks=tuple(d.get("ranks", ())),
                   details=d.get("details", {}), caused_by=d.get("caused_by"),
                   consequences=[cls.from_dict(c) for c in d.get("consequences", ())])

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
    caused_by: str | None = None
    consequences: list[dict[str, Any]] = msgspec.field(default_factory=list)


register_kind("finding", FindingRecord)


class FindingSet:
    """De-duplicating collection. ``record`` is called with each new finding (e.g. ``run.record``).

    Iterating gives the root findings; each holds the findings it explains in ``consequences``. Add the findings
    of one event in :func:`~torchwitness.rules.causes.ordered` order so that a step's root comes first.
    """

    def __init__(self, record: Any = None) -> None:
        self._by_key: dict[tuple[str, str], Finding] = {}
        self._record = record

    def add(self, finding: Finding) -> Finding:
        existing = self._by_key.get(finding.key)
        if existing is None:
            self._by_key[finding.key] = finding
            root = self._root_for(finding)
            if root is not None:
                self._attach(root, finding)
            else:
                self._adopt(finding)
            self._emit(finding, final=False)
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

    def _roots(self) -> list[Finding]:
        return [f for f in self._by_key.values() if f.caused_by is None]

    def _root_for(self, finding: Finding) -> Finding | None:
        causes = [r for r in self._roots() if r is not finding and is_cause(r, finding)]
        return min(causes, key=sort_key) if causes else None

    def _attach(self, root: Finding, finding: Finding) -> None:
        finding.caused_by = root.ref
        root.consequences.append(finding)
        for c in finding.consequences:  # what the consequence explained belongs to the root now
            c.caused_by = root.ref
            root.consequences.append(c)
        finding.consequences = []
        # A root is as severe as what it caused: a WARN whose consequence is an ERROR must not be hidden.
        root.severity = max(root.severity, finding.severity)

    def _adopt(self, root: Finding) -> None:
        """A new root that explains findings already reported: they become its consequences."""
        for f in self._roots():
            if f is not root and is_cause(root, f):
                self._attach(root, f)

    def _emit(self, f: Finding, *, final: bool) -> None:
        if self._record is not None:  # consequences are their own records: the tree is rebuilt from caused_by
            self._record("finding", {**f.to_dict(), "consequences": [], "final": final},
                         f.last_step if final else f.first_step)

    def extend(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            self.add(f)

    def __iter__(self) -> Iterator[Finding]:
        return iter(sorted(self._roots(), key=lambda f: (-f.severity, f.rule_id, f.location)))

    def __len__(self) -> int:
        return len(self._roots())

    def all(self) -> list[Finding]:
        """Every finding, consequences included."""
        return list(self._by_key.values())

    def snapshot(self) -> list[Finding]:
        return [replace(f, consequences=[replace(c) for c in f.consequences]) for f in self]

    def summarise(self) -> None:
        """Record the final tally (count, first and last step, ranks, root cause) of every finding."""
        for f in self._by_key.values():
            self._emit(f, final=True)


def nest(findings: Iterable[Finding]) -> list[Finding]:
    """Flat findings (as recorded, each naming its root in ``caused_by``) back into roots with consequences; a
    consequence whose root is missing stays a root."""
    flat = list(findings)
    by_ref = {f.ref: f for f in flat}
    roots = []
    for f in flat:
        root = by_ref.get(f.caused_by) if f.caused_by else None
        if root is None or root is f:
            f.caused_by = None
            roots.append(f)
        elif all(c.key != f.key for c in root.consequences):
            root.consequences.append(f)
    return roots
