"""What ``make demo`` prints: numbered stages with their timings, a heartbeat when a stage is silent, and no
third-party INFO logs while it runs."""

from __future__ import annotations

import io
import logging
import os
import re
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
        deadline = time.monotonic() + 20
        while buffer.getvalue().count("still working") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # silent: the heartbeat speaks up
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("[1/2] first") and lines[1] == "working"
    assert re.fullmatch(r"\[1/2\] first: done in \d+\.\d s", lines[2])
    assert lines[3].startswith("[2/2] second")
    beats = [line for line in lines[4:-2]]
    assert len(beats) >= 2 and all(re.fullmatch(r"  \.\.\. second: still working \(\d+ s\)", b) for b in beats)
    assert re.fullmatch(r"\[2/2\] second: done in \d+\.\d s", lines[-2])
    assert re.fullmatch(r"demo finished in \d+\.\d s \(stages: \d+\.\d s, \d+\.\d s\)", lines[-1])


def test_heartbeat_is_quiet_while_the_stage_prints() -> None:
    console, buffer = _console()
    with Stages(console, total=1, heartbeat=3.0) as stages:
        stages.begin("busy")
        for _ in range(40):  # 4 s of work that prints every 0.1 s: longer than the heartbeat, never silent
            console.print("step")
            time.sleep(0.1)
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

