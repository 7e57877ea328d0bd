"""The options every findings-producing command shares, and the call that renders and exits.

Use in a command::

    from torchwitness.cli import _findings_options as fo

    def scan(path: Path, fmt: str = fo.FORMAT, output: Path | None = fo.OUTPUT, baseline: Path | None = fo.BASELINE,
             select: list[str] | None = fo.SELECT, ignore: list[str] | None = fo.IGNORE,
             fail_level: str = fo.FAIL_LEVEL, hints: bool = fo.HINTS, write_baseline: Path | None = fo.WRITE_BASELINE):
        opts = fo.FindingsOptions(fmt, output, baseline, select, ignore, fail_level, hints, write_baseline)
        opts.check()                  # bad format / level / rule ID: one line, before any long work
        findings = ...
        fo.report(findings, opts, title="...")   # renders, then exits with the fail-level exit code
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import typer

from torchwitness.cli._output import output_file
from torchwitness.report.emit import FORMATS, check_format, emit, parse_fail_level
from torchwitness.rules.catalogue import select_rules
from torchwitness.rules.findings import Finding

FORMAT = typer.Option("console", "-f", "--format", help=f"Output format: {', '.join(FORMATS)}.")
OUTPUT = typer.Option(None, "-o", "--output", help="Write the report to this file instead of stdout.",
                      callback=output_file)
BASELINE = typer.Option(None, "--baseline", help="Suppress findings whose fingerprints are in this file (a "
                        "baseline, JSON or SARIF report).")
SELECT = typer.Option(None, "--select", help="Only these rule IDs or ID prefixes (repeatable).")
IGNORE = typer.Option(None, "--ignore", help="Leave out these rule IDs or ID prefixes (repeatable).")
FAIL_LEVEL = typer.Option("error", "--fail-level", help="Exit 1 if a reported finding is at least this severity "
                          "(error, warn, info, hint); 'never' always exits 0.")
HINTS = typer.Option(False, "--hints", help="Also show performance hints.")
WRITE_BASELINE = typer.Option(None, "--write-baseline", help="Write the fingerprints of these findings to this "
                              "file, for a later --baseline.", callback=output_file)


@dataclass
class FindingsOptions:
    fmt: str = "console"
    output: Path | None = None
    baseline: Path | None = None
    select: list[str] | None = None
    ignore: list[str] | None = None
    fail_level: str = "error"
    hints: bool = False
    write_baseline: Path | None = None

    def check(self) -> FindingsOptions:
        """Refuse a bad format, fail level or rule ID up front (one readable line, non-zero exit)."""
        check_format(self.fmt)
        parse_fail_level(self.fail_level)
        select_rules(self.select or (), self.ignore or ())
        return self


def report(findings: Iterable[Finding], opts: FindingsOptions, *, title: str | None = None,
           source_root: Path | None = None, anchor: tuple[str, int] | None = None, incomplete: int = 0) -> None:
    """Render ``findings`` as ``opts`` say and exit with the fail-level exit code (0 when nothing fails), or 2
    when ``incomplete`` inputs could not be checked (the command did not do its job on them)."""
    outcome = emit(findings, opts.fmt, opts.output, baseline=opts.baseline, select=opts.select or (),
                   ignore=opts.ignore or (), fail_level=opts.fail_level, show_hints=opts.hints,
                   write_baseline_to=opts.write_baseline, title=title, source_root=source_root, anchor=anchor)
    if opts.output is not None:
        typer.echo(f"wrote {opts.fmt} report of {len(outcome.shown)} finding(s) to {opts.output}", err=True)
    exit_if_incomplete(incomplete)
    raise typer.Exit(outcome.exit_code)


def exit_if_incomplete(incomplete: int) -> None:
    """Exit 2 when ``incomplete`` inputs could not be checked: a partial scan is never a pass."""
    if incomplete:
        typer.echo(f"{incomplete} input(s) could not be checked (see above): exit 2", err=True)
        raise typer.Exit(2)
