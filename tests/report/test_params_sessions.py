"""A resumed run that changes a setting: the dossier lists every value with the session that used it."""

from __future__ import annotations

import torchwitness as tw
from torchwitness.report.build import build_document


def test_a_changed_hyperparameter_keeps_its_earlier_value_and_session(tmp_path):
    with tw.Run(tmp_path / "run") as run:
        run.log_params({"lr": 0.003, "batch": 64})
    with tw.Run(tmp_path / "run", resume=True) as run:
        run.log_params({"lr": 0.001, "batch": 64})
    doc = build_document(tmp_path / "run")
    table = next(b for s in doc.sections for b in s.blocks if getattr(b, "title", "").startswith("Hyperparameters"))
    rows = [tuple(r) for r in table.rows]
    assert ("lr", "0.003", "1") in rows and ("lr", "0.001", "2") in rows
    assert [r for r in rows if r[0] == "batch"] == [("batch", "64", "1")]  # unchanged: listed once
