"""The nine Annex IV sections, each built only from records of the kinds the evidence table
(``obligations.json``: ``annex_iv[].kinds``) assigns to it.

That one table decides what a section may cite and what it says when nothing was recorded: :func:`build_section`
states every assigned kind that is present (a count when its builder had nothing more specific to say), and a
section with no assigned record says "No evidence" and names the kinds that would have documented it. So a
section never claims "no evidence" next to a record of a kind it counts.
"""

from __future__ import annotations

from torchwitness.report.evidence import Evidence
from torchwitness.report.general import declaration, general, standards
from torchwitness.report.lifecycle import changes, post_market
from torchwitness.report.model import Section
from torchwitness.report.performance import functioning, risk
from torchwitness.report.statements import MAX_POINTS, NO_EVIDENCE, count, when
from torchwitness.report.training import TEST_LOGS, development, metrics

BUILDERS = {1: general, 2: development, 3: functioning, 4: metrics, 5: risk, 6: changes, 7: standards,
            8: declaration, 9: post_market}

__all__ = ["BUILDERS", "MAX_POINTS", "NO_EVIDENCE", "TEST_LOGS", "build_section", "development", "functioning",
           "risk", "when"]


def build_section(ev: Evidence, sec: Section, number: int, kinds: tuple[str, ...]) -> Section:
    """Run section ``number``'s builder, then state any assigned kind it left uncited; ``sec.missing`` lists the
    assigned kinds when the section cites nothing."""
    BUILDERS[number](ev, sec)
    complete(ev, sec, kinds)
    return sec


def complete(ev: Evidence, sec: Section, kinds: tuple[str, ...]) -> None:
    cited = set(sec.cited())
    for kind in kinds:
        records = ev.kind(kind)
        if records and not cited.intersection(r["seq"] for r in records):
            count(sec, records, f"{{n}} {kind} records.")
    if not sec.has_evidence:
        sec.missing = sorted(kinds)
