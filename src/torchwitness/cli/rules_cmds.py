"""rules (the catalogue, with where each rule comes from) and explain ID (one rule's documentation)."""

from __future__ import annotations

import json

import typer
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from torchwitness.cli._output import console
from torchwitness.report.console import STYLE


def rules(as_json: bool = typer.Option(False, "--json", help="Print the catalogue as JSON."),
          phase: str | None = typer.Option(None, "--phase", help="Only rules of this phase (static, init, batch, "
                                           "forward, backward, step, eval, ...)."),
          source: str | None = typer.Option(None, "--source", help="Only rules from this package.")) -> None:
    """List every rule: ID, name, severity, phase, category and source (torchwitness or a plugin package)."""
    from torchwitness.errors import InputError
    from torchwitness.rules.catalogue import Phase, all_rules

    if phase is not None and phase.lower() not in {p.value for p in Phase}:
        raise InputError(f"unknown phase {phase!r}; use one of {', '.join(p.value for p in Phase)}")
    chosen = [r for r in all_rules() if (phase is None or r.phase.value == phase.lower())
              and (source is None or r.source == source)]
    if as_json:
        typer.echo(json.dumps([{"id": r.id, "name": r.name, "title": r.title, "severity": str(r.severity),
                                "phase": str(r.phase), "category": r.category, "source": r.source,
                                "obligations": list(r.obligations)} for r in chosen], indent=2))
        return
    table = Table(title=f"{len(chosen)} rules")
    for col in ("ID", "name", "severity", "phase", "category", "source"):
        # names and categories wrap on narrow terminals; IDs and sources stay whole to be searchable
        table.add_column(col, **({"overflow": "fold"} if col in ("name", "category") else {"no_wrap": True}))
    for r in chosen:
        table.add_row(r.id, r.name, Text(str(r.severity), style=STYLE[r.severity]), str(r.phase), r.category,
                      r.source)
    console.print(table)


def explain(rule_id: str = typer.Argument(..., help="A rule ID (TW101) or name (nonfinite-loss).",
                                          show_default=False)) -> None:
    """Print one rule's documentation: the problem, an example, the fix, and the obligations it bears on."""
    from torchwitness.rules.catalogue import get_rule

    r = get_rule(rule_id)
    lines = [f"# {r.id} {r.name}: {r.title}", "",
             f"**severity** {r.severity} · **phase** {r.phase} · **category** {r.category} · **source** {r.source}",
             "", r.doc or "(no documentation)", "", f"**Fix.** {r.remediation}" if r.remediation else ""]
    if r.obligations:
        lines += ["", "**Bears on** " + ", ".join(r.obligations)]
    if r.references:
        lines += ["", "**References**", *[f"- {ref}" for ref in r.references]]
    console.print(Markdown("\n".join(lines)))


def register(app: typer.Typer) -> None:
    app.command()(rules)
    app.command()(explain)
