"""Consoles: data goes to stdout, diagnostics to stderr."""

from pathlib import Path

from rich.console import Console

from torchwitness.jsonfile import check_output

# soft_wrap: paths, digests and commands must stay on one line so they can be copied and grepped.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def output_file(path: Path | None) -> Path | None:
    """A typer callback for options that name a file to write: refused in one line before the command runs."""
    return None if path is None else check_output(path)
