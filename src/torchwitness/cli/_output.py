"""Consoles: data goes to stdout, diagnostics to stderr."""

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from torchwitness.errors import InputError
from torchwitness.jsonfile import check_output

# soft_wrap: paths, digests and commands must stay on one line so they can be copied and grepped.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def one_line(text: str) -> str:
    """``text`` as one line of a terminal: control and bidirectional-override characters (a newline in a path)
    shown escaped, never acted on."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def output_file(path: Path | None) -> Path | None:
    """A typer callback for options that name a file to write: refused in one line before the command runs."""
    return None if path is None else check_output(path)


def output_folder(path: Path) -> Path:
    """A typer callback for options that name a folder to write into (made if missing): a file is refused."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file: name a folder to write into")
    return path


def require_verified(run: Path, *, key: str | None = None, draft: bool = False) -> None:
    """A view that states what a run holds proves the run first: exit 3 on a ledger that does not verify (a CI
    gate must not pass a tampered run), unless ``--draft``, which goes on with a NOT VERIFIED line on stderr."""
    from torchwitness.errors import VerificationError
    from torchwitness.ledger.verify import verify_run

    try:
        verify_run(run, key=key)
    except VerificationError as e:
        if not draft:
            raise VerificationError(f"{run}: {e}; nothing reported (--draft reports it, marked NOT VERIFIED)") \
                from None
        err_console.print(f"[bold red]NOT VERIFIED[/]: {escape(one_line(f'{run}: {e}'))}", highlight=False)
