"""Serious incidents (EU AI Act Art. 73): when the provider became aware, the deadline that follows, and the report.

A provider reports a serious incident to the market surveillance authority not later than 15 days after becoming
aware of it (Art. 73(2)); 2 days for a widespread infringement or a serious and irreversible disruption of critical
infrastructure (73(3)); 10 days for a person's death (73(4)). An ``incident`` record holds the awareness time and
the deadline its category sets; an ``incident.report`` record, when and to whom it was reported. Whether a report
was late, or a deadline has passed without one, is read from the two (:func:`incident_status`), so nothing needs
to be looked up while recording. The description may name people: it is stored as an erasable commitment.

Example::

    from torchwitness.controls.incidents import record_incident, record_report

    with tw.Run("runs/serve") as run:
        record_incident(run, "INC-7", category="death", description="...")
        record_report(run, "INC-7", authority="the national market surveillance authority")
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from torchwitness.errors import InputError
from torchwitness.ledger.encoding import Personal
from torchwitness.ledger.schema import register_kind
from torchwitness.ledger.writer import now_us

Category = Literal["serious", "widespread", "critical_infrastructure", "death"]
DEADLINE_DAYS: dict[str, int] = {"serious": 15, "widespread": 2, "critical_infrastructure": 2, "death": 10}


class IncidentRecord(msgspec.Struct):
    """``incident``: a serious incident the provider became aware of, and its reporting deadline."""

    incident: str  # the provider's own reference
    category: str  # serious (Art. 73(2)), widespread / critical_infrastructure (73(3)), death (73(4))
    aware_us: int  # when the provider became aware (microseconds since the Unix epoch, UTC)
    deadline_us: int  # aware_us + the category's days
    description: Any  # an erasable commitment ({"$personal": ...}) or null


class IncidentReport(msgspec.Struct):
    """``incident.report``: an incident reported to an authority."""

    incident: str
    reported_us: int
    authority: str


register_kind("incident", IncidentRecord)
register_kind("incident.report", IncidentReport)


def _us(when: dt.datetime | None, what: str) -> int:
    if when is None:
        return now_us()
    if when.tzinfo is None:
        raise InputError(f"{what} needs a timezone (a naive datetime could be any hour)")
    return int(when.timestamp() * 1e6)


def check_category(category: str) -> str:
    """``category``, or a one-line error naming the categories Art. 73 sets deadlines for."""
    if category not in DEADLINE_DAYS:
        raise InputError(f"incident category must be one of {', '.join(DEADLINE_DAYS)} (EU AI Act Art. 73(2)-(4)), "
                         f"not {category!r}")
    return category


def record_incident(run: Any, incident: str, *, category: Category = "serious", aware: dt.datetime | None = None,
                    description: str | None = None) -> int | None:
    """Record a serious incident the provider became aware of at ``aware`` (default: now)."""
    if not incident:
        raise InputError("an incident needs the provider's reference for it")
    check_category(category)
    aware_us = _us(aware, "aware")
    return run.record("incident", {
        "incident": incident, "category": category, "aware_us": aware_us,
        "deadline_us": aware_us + DEADLINE_DAYS[category] * 86_400_000_000,
        "description": Personal(description) if description else None})


def record_report(run: Any, incident: str, *, authority: str, reported: dt.datetime | None = None) -> int | None:
    """Record that ``incident`` was reported to ``authority`` at ``reported`` (default: now)."""
    if not incident or not authority:
        raise InputError("a report needs the incident's reference and the authority it went to")
    return run.record("incident.report", {"incident": incident, "reported_us": _us(reported, "reported"),
                                          "authority": authority})


@dataclass(frozen=True)
class IncidentStatus:
    incident: str
    category: str
    deadline: dt.datetime
    reported: dt.datetime | None
    seqs: tuple[int, ...]  # the incident record, then its report if any

    def overdue(self, now: dt.datetime) -> bool:
        """Reported after its deadline, or not reported and the deadline has passed."""
        return (self.reported or now) > self.deadline

    def status(self, now: dt.datetime) -> str:
        """``on time`` or ``late`` once reported; ``due`` or ``overdue`` before."""
        late = self.overdue(now)
        return ("late" if late else "on time") if self.reported else ("overdue" if late else "due")


def _time(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc)


def incident_status(records: list[dict[str, Any]]) -> list[IncidentStatus]:
    """Each recorded incident with its deadline and its first report (``records``: the run's records, any kinds)."""
    reports: dict[str, dict[str, Any]] = {}
    for r in records:  # records from other versions may lack fields: they are left out, never a crash
        if r["kind"] == "incident.report" and isinstance(r["data"], dict) and isinstance(
                r["data"].get("reported_us"), int):
            reports.setdefault(str(r["data"].get("incident")), r)
    out = []
    for r in records:
        d = r["data"]
        if r["kind"] != "incident" or not isinstance(d, dict) or not isinstance(d.get("deadline_us"), int):
            continue
        report = reports.get(str(d.get("incident")))
        out.append(IncidentStatus(str(d.get("incident")), str(d.get("category")), _time(d["deadline_us"]),
                                  _time(report["data"]["reported_us"]) if report else None,
                                  (r["seq"], report["seq"]) if report else (r["seq"],)))
    return out


def run_incidents(run_dir: str | Path) -> list[IncidentStatus]:
    """:func:`incident_status` of a run folder."""
    from torchwitness.ledger.reader import iter_records

    return incident_status(list(iter_records(run_dir, kinds={"incident", "incident.report"})))
