"""demo: the end-to-end job behind ``make demo``."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(out: Path = typer.Option(Path("evidence"), "--out", "-o", help="Where to write the evidence folder."),
         epochs: int = typer.Option(5, "--epochs", min=1), seed: int = typer.Option(0, "--seed")) -> None:
    """Train a classifier on UCI Adult with every step recorded, verify it, print where the evidence is."""
    import os

    from torchwitness.demo.progress import STAGES, DemoConsole, Stages, quiet_third_party

    # tqdm reads its settings from the environment when it is imported, which the demo's imports do
    os.environ.setdefault("TQDM_DISABLE", "1")
    with quiet_third_party(), Stages(DemoConsole()) as stages:
        stages.begin(STAGES[0])  # importing torch and the rest takes seconds: a stage of its own, with a heartbeat
        from torchwitness.demo import run_demo

        run_demo(out, epochs=epochs, seed=seed, stages=stages)


def register(app: typer.Typer) -> None:
    app.command()(demo)
