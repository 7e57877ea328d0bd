"""The ``torchwitness`` command line. Each module in this package registers one family of commands.

Only this package prints or sets exit codes: library errors (:mod:`torchwitness.errors`) become one line on
stderr and the error's exit code. Anything else a command raises is a bug or an input no reader foresaw; it too
becomes one line (``torchwitness: error: ...``, exit 2), never a traceback, unless ``TORCHWITNESS_DEBUG=1``.
"""

from __future__ import annotations

import gc
import importlib
import os
import pkgutil
import sys
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from torchwitness import __version__
from torchwitness.cli import _panels
from torchwitness.cli._output import err_console, one_line
from torchwitness.errors import InputError, TorchWitnessError

# The usage errors of the click that typer is built on (its own copy since typer 0.2x, click itself before).
_click = sys.modules[typer.BadParameter.__module__]


def _unexpected(e: BaseException) -> str:
    """One line for an exception no reader turned into a torchwitness error."""
    if isinstance(e, OSError) and e.filename is not None:
        text = f"{e.filename}: {e.strerror or e}"
    elif isinstance(e, RecursionError):
        text = f"an input is nested too deeply to read ({e})"
    else:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return " ".join(text.split())


class _Commands(TyperGroup):
    """Runs a command and turns what it raises into one line on stderr and an exit code."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        # Standalone, click would print a usage error as a usage line, a hint and a boxed message: one line here.
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _click.ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # the help itself, already printed by typer's rich help
                if e.format_message().strip():
                    typer.echo(e.format_message(), err=True)
                sys.exit(e.exit_code)
            hint = f" (see '{e.ctx.command_path} --help')" if isinstance(e, _click.UsageError) and e.ctx else ""
            err_console.print(f"[bold red]error:[/] {escape(one_line(' '.join(e.format_message().split())))}{hint}",
                              highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except typer.Abort:
            err_console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TorchWitnessError as e:
            verbose = "--verbose" in getattr(self, "_argv", ())
            # escape: a path like "runs[red]" is text, not a style
            err_console.print(f"[bold red]error:[/] {escape(one_line(str(e.diagnostics() if verbose else e)))}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # the reader stopped reading (`| head`): not the user's error, nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
            raise typer.Exit(1) from None
        except Exception as e:  # see the module docstring
            if os.environ.get("TORCHWITNESS_DEBUG") == "1":
                raise
            if isinstance(e, typer.BadParameter) or type(e).__module__.startswith(("click", "typer")):
                raise  # usage errors: click prints them itself (exit 2)
            err_console.print(f"torchwitness: error: {one_line(_unexpected(e))}", markup=False, highlight=False,
                              soft_wrap=True)
            raise typer.Exit(InputError.exit_code) from None


app = typer.Typer(name="torchwitness", help="A verifiable record of a PyTorch model's life.", cls=_Commands,
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
    """Run the app in this process (errors become one line and an exit code, see the module)."""
    app(args=argv, standalone_mode=True)


def console() -> None:
    """The ``torchwitness`` executable: :func:`main` in a process that ends with the command."""
    # The process's heap is mostly modules (torch, transformers): the cyclic collector walked it for ~0.6 s
    # during their imports and ~0.9 s at interpreter exit, with nothing to free. It collects rarely while the
    # command runs, and what is left is frozen before exit (atexit handlers still run).
    gc.set_threshold(100_000, 50, 100)
    try:
        main()
    finally:
        gc.freeze()
