from __future__ import annotations

from pathlib import Path

import pytest
from _report_runs import make_plain_run, make_rich_run


@pytest.fixture(scope="session")
def report_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("report-keys")


@pytest.fixture(scope="session")
def rich_run(tmp_path_factory: pytest.TempPathFactory, report_keys: Path) -> Path:
    return make_rich_run(tmp_path_factory.mktemp("rich") / "run", report_keys)


@pytest.fixture(scope="session")
def worse_run(tmp_path_factory: pytest.TempPathFactory, report_keys: Path) -> Path:
    return make_rich_run(tmp_path_factory.mktemp("worse") / "run", report_keys, worse=True, seed=1)


@pytest.fixture(scope="session")
def plain_run(tmp_path_factory: pytest.TempPathFactory, report_keys: Path) -> Path:
    return make_plain_run(tmp_path_factory.mktemp("plain") / "run", report_keys)
