from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))

from _report_runs import make_rich_run


@pytest.fixture(scope="session")
def evidence_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rich_run(tmp_path_factory.mktemp("export") / "run", tmp_path_factory.mktemp("export-keys"),
                         worse=True)
