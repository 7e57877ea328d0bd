"""Consoles: data goes to stdout, diagnostics to stderr."""

from rich.console import Console

# soft_wrap: paths, digests and commands must stay on one line so they can be copied and grepped.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
