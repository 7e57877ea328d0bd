"""demo: the end-to-end job behind ``make demo``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from torchwitness.cli._output import output_folder


def _is_the_process() -> bool:
    """Whether this command is the whole process (``torchwitness demo`` or ``python -m torchwitness demo``), not a
    call into the CLI from other Python code (a test, a notebook)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return Path(sys.argv[0]).name == "torchwitness" or getattr(spec, "name", None) == "torchwitness.__main__"


def demo(out: Path = typer.Option(Path("evidence"), "--out", "-o", help="Where to write the evidence folder.",
                                     callback=output_folder),
         epochs: int = typer.Option(5, "--epochs", min=1), seed: int = typer.Option(0, "--seed")) -> None:
    """Train a classifier on UCI Adult with every step recorded, verify it, print where the evidence is."""
    from torchwitness.demo.progress import STAGES, DemoConsole, Stages, quiet_third_party

    # tqdm reads its settings from the environment when it is imported, which the demo's imports do
    os.environ.setdefault("TQDM_DISABLE", "1")
    with quiet_third_party(), Stages(DemoConsole()) as stages:
        stages.begin(STAGES[0])  # importing torch and the rest takes seconds: a stage of its own, with a heartbeat
        from torchwitness.demo import run_demo

        run_demo(out, epochs=epochs, seed=seed, stages=stages)
    if _is_the_process():
        # Every run is closed and verified and every file written by now. Tearing down torch, transformers
        # (which imports torchao), MLflow and the rest takes another 3-9 s on a loaded 2-core machine, silently,
        # after "demo finished": end the process here instead.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def register(app: typer.Typer) -> None:
    app.command()(demo)
