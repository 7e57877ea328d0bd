"""Consoles: data goes to stdout, diagnostics to stderr."""

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
