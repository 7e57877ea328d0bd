"""MkDocs hook: the command-line reference is rendered from the typer app at build time, so it cannot go stale.

``docs/reference/cli.md`` holds the marker ``<!-- cli-reference -->``; it is replaced by every command's
``--help`` (as ``torchwitness CMD --help`` prints it at 100 columns), grouped by the help panels.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# the worktree's own package, whichever torchwitness is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

MARKER = "<!-- cli-reference -->"


def _help(args: list[str]) -> str:
    from typer.testing import CliRunner

    from torchwitness.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    if result.exit_code != 0:
        raise RuntimeError(f"torchwitness {' '.join(args)} --help exited {result.exit_code}: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())


def _commands(cmd: Any, path: list[str]) -> list[list[str]]:
    """``path`` and, for a command group, each of its sub-commands in the order ``--help`` lists them."""
    found = [path]
    for name, sub in getattr(cmd, "commands", {}).items():
        found += _commands(sub, [*path, name])
    return found


def render_cli_reference() -> str:
    import typer

    from torchwitness.cli import _panels, app

    group = typer.main.get_command(app)
    by_panel: dict[str, list[str]] = {}
    for name in group.commands:
        by_panel.setdefault(_panels._PANEL_OF.get(name, _panels.OTHER), []).append(name)
    parts = ["```text", _help([]), "```"]
    for panel in [*_panels.PANELS, _panels.OTHER]:
        if panel not in by_panel:
            continue
        parts.append(f"\n## {panel}")
        for name in by_panel[panel]:
            for path in _commands(group.commands[name], [name]):
                parts += [f"\n### `torchwitness {' '.join(path)}`", "", "```text", _help(path), "```"]
    return "\n".join(parts) + "\n"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render_cli_reference())
    return markdown
