"""The ``torchwitness`` command line. Each module in this package registers one family of commands.

Only this package prints or sets exit codes: library errors (:mod:`torchwitness.errors`) become one line on
stderr and the error's exit code.
"""

from __future__ import annotations

import sys

import typer

from torchwitness import __version__
from torchwitness.cli import demo_cmd, ledger_cmds, llm_cmds
from torchwitness.cli._output import err_console
from torchwitness.errors import TorchWitnessError

app = typer.Typer(name="torchwitness", help="A verifiable record of a PyTorch model's life.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"torchwitness {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Record, verify and report the evidence of a model's life."""


for _module in (ledger_cmds, demo_cmd, llm_cmds):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning torchwitness errors into one line and an exit code."""
    try:
        app(args=argv, standalone_mode=True)
    except TorchWitnessError as e:
        verbose = "--verbose" in (argv if argv is not None else sys.argv)
        err_console.print(f"[bold red]error:[/] {e.diagnostics() if verbose else e}", highlight=False,
                          soft_wrap=True)
        sys.exit(e.exit_code)
