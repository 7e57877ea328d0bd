"""Adult and COMPAS from ../shared/data with a fixed rule as the 'model', so fairlearn sees the same predictions."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the repo, or $TORCHWITNESS_SHARED_DATA (for a git worktree placed elsewhere)."""
    for path in (SHARED_DATA, Path(os.environ.get("TORCHWITNESS_SHARED_DATA", SHARED_DATA))):
        if path.is_dir():
            return path
    pytest.skip(f"../shared/data not found at {SHARED_DATA}")

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "income"]


@pytest.fixture
def adult_frame(request: pytest.FixtureRequest) -> pd.DataFrame:
    shared = request.getfixturevalue("shared_data")
    df = pd.read_csv(shared / "adult" / "adult.data", names=ADULT_COLUMNS, skipinitialspace=True)
    df["y_true"] = (df["income"] == ">50K").astype(int)
    df["y_pred"] = ((df["education-num"] >= 13) | (df["capital-gain"] > 5000)).astype(int)
    return df


@pytest.fixture
def compas_frame(request: pytest.FixtureRequest) -> pd.DataFrame:
    shared = request.getfixturevalue("shared_data")
    df = pd.read_csv(shared / "compas" / "compas-scores-two-years.csv")
    df["y_true"] = df["two_year_recid"].astype(int)
    df["y_pred"] = (df["decile_score"] >= 5).astype(int)
    return df



@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run faster on one intra-op thread, and much faster when CI shares its cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
