"""What ``make demo`` prints while it works: numbered stages with their timings, and a heartbeat.

The demo writes to stdout. Any stretch of more than ``heartbeat`` seconds without a line (loading a language
model, training) gets a line saying which stage is still running and for how long, so the job is never silent.
Third-party progress bars and INFO logs (tqdm, transformers, MLflow, alembic) are muted for the demo's duration.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

# INFO chatter of the libraries the demo drives, and torchao's notes on GPU kernels a CPU machine lacks
_NOISY_LOGGERS = ("mlflow", "alembic", "transformers", "lightning", "lightning.pytorch", "opacus", "urllib3",
                  "torchao", "torch.utils._pytree")


STAGES = ("starting: importing torch and the demo's libraries", "training on UCI Adult",
          "certifying int8 and int4 edits", "serving: drift, review, explanations", "code and model-file evidence",
          "data governance: consent, fairness gate, provenance, DP-SGD",
          "LLM agent: token statistics and GenAI spans", "dossier, model card, coverage and MLflow")


class DemoConsole(Console):
    """A console on stdout that remembers when it last printed (for the heartbeat)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("soft_wrap", True)
        kwargs.setdefault("highlight", False)
        super().__init__(**kwargs)
        self.last_print = time.monotonic()

    def print(self, *args: Any, **kwargs: Any) -> None:
        super().print(*args, **kwargs)
        self.last_print = time.monotonic()


class Stages:
    """Numbered stages: ``stages.begin(name)`` ends the running stage (printing its time) and starts the next."""

    def __init__(self, console: DemoConsole, total: int = len(STAGES), *, heartbeat: float = 4.0) -> None:
        self.console, self.total, self.heartbeat = console, total, heartbeat
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self._current: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="torchwitness-demo-heartbeat", daemon=True)

    def __enter__(self) -> Stages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.end()
            spent = ", ".join(f"{seconds:.1f} s" for seconds in self.timings.values())
            self.console.print(f"[bold]demo finished in {time.monotonic() - self.started:.1f} s[/] "
                               f"(stages: {spent})")

    def begin(self, name: str) -> None:
        self.end()
        self.console.rule(f"[bold][{len(self.timings) + 1}/{self.total}] {name}[/]", align="left")
        self._current = (name, time.monotonic())

    def end(self) -> None:
        if self._current is None:
            return
        name, t0 = self._current
        self._current = None
        self.timings[name] = time.monotonic() - t0
        self.console.print(f"[dim][{len(self.timings)}/{self.total}] {name}: done in {self.timings[name]:.1f} s[/]")

    def _beat(self) -> None:
        while not self._stop.wait(0.5):
            current = self._current
            now = time.monotonic()
            if current is not None and now - self.console.last_print >= self.heartbeat:
                self.console.print(f"[dim]  ... {current[0]}: still working ({now - current[1]:.0f} s)[/]")


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """Mute tqdm bars and INFO logs of the libraries the demo drives; restore them afterwards."""
    quiet = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "MLFLOW_LOGGING_LEVEL": "WARNING"}  # MLflow sets its loggers' level from this when it is imported
    saved_env = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
