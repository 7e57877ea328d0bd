"""``torchwitness --help`` groups commands in panels, and no flag's help shows a ``<bool>`` type."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from torchwitness.cli import _panels, app

runner = CliRunner()


def _commands() -> dict:
    # typer ships its own copy of click, so the group is recognised by its commands, not its class
    return dict(typer.main.get_command(app).commands)


def test_every_command_has_a_panel() -> None:
    listed = {name for names in _panels.PANELS.values() for name in names}
    missing = sorted(set(_commands()) - listed)
    assert not missing, f"add {missing} to a panel in torchwitness/cli/_panels.py"


def test_panels_appear_in_order_with_their_commands() -> None:
    out = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    positions = [out.index(f"─ {panel} ") for panel in _panels.PANELS]
    assert positions == sorted(positions), out
    assert _panels.OTHER not in out
    ledger = out[positions[0]:positions[1]]
    for name in _panels.PANELS["Ledger"]:
        assert f"│ {name} " in ledger


def test_flags_show_no_bool_type() -> None:
    def walk(cmd, path: list[str]):
        yield path
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])

    for path in walk(typer.main.get_command(app), []):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
    assert "--deep " in runner.invoke(app, ["verify", "--help"], env={"COLUMNS": "120"}).output
