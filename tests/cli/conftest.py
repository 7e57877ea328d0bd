"""``cli``: run the ``torchwitness`` entry point in process, returning (exit code, stdout, stderr)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from torchwitness.cli import main


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
