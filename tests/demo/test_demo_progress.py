"""What ``make demo`` prints: numbered stages with their timings, a heartbeat when a stage is silent, and no
third-party INFO logs while it runs."""

from __future__ import annotations

import io
import logging
import os
import time

from torchwitness.demo.progress import DemoConsole, Stages, quiet_third_party


def _console() -> tuple[DemoConsole, io.StringIO]:
    buffer = io.StringIO()
    return DemoConsole(file=buffer, width=120), buffer


def test_stages_print_their_names_timings_and_a_heartbeat() -> None:
    console, buffer = _console()
    with Stages(console, total=2, heartbeat=0.4) as stages:
        stages.begin("first")
        console.print("working")
        stages.begin("second")
        time.sleep(1.6)  # silent: the heartbeat speaks up
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("[1/2] first") and lines[1] == "working"
    assert lines[2].startswith("[1/2] first: done in 0.")
    assert lines[3].startswith("[2/2] second")
    beats = [line for line in lines if "second: still working" in line]
    assert 2 <= len(beats) <= 4
    assert lines[-2].startswith("[2/2] second: done in 1.")
    assert lines[-1].startswith("demo finished in 1.") and "stages: 0.0 s, 1." in lines[-1]


def test_heartbeat_is_quiet_while_the_stage_prints() -> None:
    console, buffer = _console()
    with Stages(console, total=1, heartbeat=0.5) as stages:
        stages.begin("busy")
        for _ in range(8):
            console.print("step")
            time.sleep(0.15)
    assert "still working" not in buffer.getvalue()


def test_third_party_logs_are_muted_and_restored() -> None:
    mlflow = logging.getLogger("mlflow")
    mlflow.setLevel(logging.INFO)
    before = os.environ.get("MLFLOW_LOGGING_LEVEL")
    with quiet_third_party():
        assert not mlflow.isEnabledFor(logging.INFO) and not logging.getLogger("transformers").isEnabledFor(
            logging.WARNING)
        assert os.environ["TQDM_DISABLE"] == "1" and os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    assert mlflow.level == logging.INFO
    assert os.environ.get("MLFLOW_LOGGING_LEVEL") == before

