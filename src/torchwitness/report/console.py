"""The console view: findings grouped by severity, then category, as a rich renderable.

``FindingsView`` follows rich's ``__rich__`` protocol, so the finding model never imports a console and the
CLI decides where it is printed. Performance hints (``HINT``) are left out unless ``show_hints``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from torchwitness.report._rules import rule_or_none
from torchwitness.rules.catalogue import Severity
from torchwitness.rules.findings import Finding

STYLE = {Severity.ERROR: "bold red", Severity.WARN: "yellow", Severity.INFO: "cyan", Severity.HINT: "dim"}


def steps_text(f: Finding) -> str:
    """``step 3`` / ``steps 3–90 (×12)`` / ``×2`` for findings without steps."""
    times = f"×{f.count}" if f.count > 1 else ""
    if f.first_step is None:
        return times
    span = f"step {f.first_step}" if f.first_step == f.last_step or f.last_step is None \
        else f"steps {f.first_step}–{f.last_step}"
    return f"{span} ({times})" if times else span


@dataclass
class FindingsView:
    """Renders findings for a terminal; ``suppressed`` and ``hidden_hints`` are only counted in the footer."""

    findings: Sequence[Finding]
    title: str | None = None
    suppressed: int = 0
    hidden_hints: int = 0

    def __rich__(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self.title:
            parts.append(Text(self.title, style="bold"))
        if not self.findings:
            parts.append(Text("no findings", style="green"))
        for sev in sorted(Severity, reverse=True):
            group = [f for f in self.findings if f.severity == sev]
            if group:
                parts.append(self._table(sev, group))
        parts.append(Text(self._footer(), style="dim"))
        return Group(*parts)

    def _table(self, sev: Severity, group: Sequence[Finding]) -> Table:
        table = Table(title=f"{sev.name} ({len(group)})", title_style=STYLE[sev], title_justify="left",
                      expand=True)
        table.add_column("rule", no_wrap=True, style=STYLE[sev])
        table.add_column("where", overflow="fold", ratio=2)
        table.add_column("what", overflow="fold", ratio=5)
        table.add_column("when", no_wrap=True)
        rows = sorted(((rule_or_none(f.rule_id), f) for f in group),
                      key=lambda rf: (rf[0].category if rf[0] else "", rf[1].rule_id, rf[1].location))
        category = None
        for r, f in rows:
            cat = r.category if r else "other"
            if category is not None and cat != category:
                table.add_section()  # categories are separated by a rule line within a severity
            category = cat
            what = Text(f.message)
            what.append(f"\n{r.name if r else 'rule not installed'} · {cat}", style="dim")
            table.add_row(f.rule_id, f.location, what, steps_text(f))
            for c in f.consequences:  # what this root cause set off, nested under it
                table.add_row(Text(f" ↳ {c.rule_id}", style="dim"), c.location,
                              Text(f"{c.message}\nconsequence of {f.rule_id}", style="dim"), steps_text(c))
        return table

    def _footer(self) -> str:
        counts = ", ".join(f"{sum(1 for f in self.findings if f.severity == s)} {s}"
                           for s in sorted(Severity, reverse=True) if s is not Severity.HINT or not self.hidden_hints)
        notes = [counts]
        if self.suppressed:
            notes.append(f"{self.suppressed} suppressed by the baseline")
        if self.hidden_hints:
            notes.append(f"{self.hidden_hints} performance hint(s) hidden (--hints shows them)")
        return "; ".join(notes)
