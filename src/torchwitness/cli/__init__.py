"""The ``torchwitness`` command line. Each module in this package registers one family of commands.

Only this package prints or sets exit codes: library errors (:mod:`torchwitness.errors`) become one line on
stderr and the error's exit code.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from torchwitness import __version__
from torchwitness.cli import _panels
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


# Every command family is a module named *_cmds (or demo_cmd) exposing register(app): adding a family never
# touches this file.
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.endswith(("_cmds", "_cmd")):
        importlib.import_module(f"{__name__}.{_info.name}").register(app)
_panels.assign(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning torchwitness errors into one line and an exit code."""
    try:
        app(args=argv, standalone_mode=True)
    except TorchWitnessError as e:
        verbose = "--verbose" in (argv if argv is not None else sys.argv)
        err_console.print(f"[bold red]error:[/] {e.diagnostics() if verbose else e}", highlight=False,
                          soft_wrap=True)
        sys.exit(e.exit_code)
