"""The demo's last stage writes the dossier, model card, coverage table and an MLflow run (sqlite, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from torchwitness.demo.dossier import dossier_stage
from torchwitness.report.card import validate_card

pytestmark = pytest.mark.slow


def test_dossier_stage(evidence_run: Path, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    console = Console(file=(tmp_path / "console.txt").open("w"), width=200)
    paths = dossier_stage(evidence_run, tmp_path, console)
    console.file.close()
    assert paths["pdf"].read_bytes().startswith(b"%PDF") and "tw-evidence" in paths["html"].read_text()
    validate_card(paths["card"].read_text())
    assert "| EU-AI-Act Art. 72 | 9 | evidence |" in paths["coverage"].read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{paths['mlflow']}")
    runs = client.search_runs([client.get_experiment_by_name("torchwitness-demo").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["torchwitness.root"].startswith("sha256:")
    assert (tmp_path / "mlflow-artifacts").is_dir()
    printed = (tmp_path / "console.txt").read_text()
    for name in ("html", "pdf", "card", "coverage", "mlflow"):
        assert f"{name}:" in printed
