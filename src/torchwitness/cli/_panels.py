"""Help panels: ``torchwitness --help`` groups its commands by what they are about, in this order.

Panels are assigned here, by command name, so the command modules stay free of presentation; a command that
is not listed falls into the last panel (tests/cli/test_help.py asks for every command to be listed).
"""

from __future__ import annotations

import typer
from typer.core import TyperOption

PANELS: dict[str, tuple[str, ...]] = {
    "Ledger": ("verify", "prove", "verify-proof", "checkpoint", "consistency", "witness", "show", "erase", "schema"),
    "Training": ("audit", "findings", "rules", "explain", "scan", "scan-model", "replay-record", "replay-check"),
    "Data governance": ("provenance",),
    "Certification": ("certify", "verify-cert", "doctor", "cert-schema"),
    "Deployment": ("review", "explain-decision", "retention", "expire", "incident"),
    "LLM/agents": ("spans",),
    "Reports": ("report", "card", "coverage", "diff", "export"),
    "Demo": ("demo",),
}
OTHER = "Other commands"
_ORDER = {name: (i, j) for i, names in enumerate(PANELS.values()) for j, name in enumerate(names)}
_PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names}


def command_name(info: typer.models.CommandInfo | typer.models.TyperInfo) -> str:
    """The name a command is called by: its registered name, else its function's name with dashes."""
    if info.name:
        return info.name
    callback = info.callback if isinstance(info, typer.models.CommandInfo) else info.typer_instance.info.callback
    return callback.__name__.replace("_", "-") if callback else ""


def assign(app: typer.Typer) -> None:
    """Give every command and sub-app its panel and sort them so the panels appear in ``PANELS`` order."""
    for info in (*app.registered_commands, *app.registered_groups):
        info.rich_help_panel = _PANEL_OF.get(command_name(info), OTHER)
    last = (len(PANELS), 0)
    app.registered_commands.sort(key=lambda c: _ORDER.get(command_name(c), last))
    app.registered_groups.sort(key=lambda g: _ORDER.get(command_name(g), last))


def _flag_type(self: TyperOption, ctx: object) -> str | None:
    # typer 0.29 shows a flag's type as "<bool>"; a flag takes no value, so its help shows none.
    return None if self.is_flag else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]
