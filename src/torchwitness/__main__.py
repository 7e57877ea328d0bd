"""``python -m torchwitness`` is the CLI."""

from torchwitness.cli import main

main()
