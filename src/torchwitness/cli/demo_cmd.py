"""demo: the end-to-end job behind ``make demo``."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(out: Path = typer.Option(Path("evidence"), "--out", "-o", help="Where to write the evidence folder."),
         epochs: int = typer.Option(5, "--epochs", min=1), seed: int = typer.Option(0, "--seed")) -> None:
    """Train a classifier on UCI Adult with every step recorded, verify it, print where the evidence is."""
    import os

    # tqdm reads its settings from the environment when it is imported, which the demo's imports do
    os.environ.setdefault("TQDM_DISABLE", "1")
    from torchwitness.demo import run_demo

    run_demo(out, epochs=epochs, seed=seed)


def register(app: typer.Typer) -> None:
    app.command()(demo)
