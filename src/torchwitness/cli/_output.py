"""Consoles: data goes to stdout, diagnostics to stderr."""

from pathlib import Path

from rich.console import Console

from torchwitness.errors import InputError
from torchwitness.jsonfile import check_output

# soft_wrap: paths, digests and commands must stay on one line so they can be copied and grepped.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def output_file(path: Path | None) -> Path | None:
    """A typer callback for options that name a file to write: refused in one line before the command runs."""
    return None if path is None else check_output(path)


def output_folder(path: Path) -> Path:
    """A typer callback for options that name a folder to write into (made if missing): a file is refused."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file: name a folder to write into")
    return path
