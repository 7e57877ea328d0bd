"""A dossier never contradicts its ledger: rendered for different ledgers, each statement is checked against
the records it cites (see _consistency.py). The Lightning and Trainer ledgers are checked in
tests/integrations (they need those frameworks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _consistency import check_card, check_dossier
from _ledgers import demo_like, quick_start, resumed

from torchwitness.report.build import build_document
from torchwitness.report.evidence import Evidence
from torchwitness.report.obligations import coverage


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory, rich_run: Path, plain_run: Path) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ledgers")
    return {"quick start": quick_start(tmp / "quick"), "resumed": resumed(tmp / "resumed"),
            "demo-like": demo_like(tmp / "demo", tmp), "every capability": rich_run, "plain": plain_run}


@pytest.mark.parametrize("name", ["quick start", "resumed", "demo-like", "every capability", "plain"])
def test_each_statement_holds_against_the_records_it_cites(ledgers: dict[str, Path], name: str) -> None:
    checked = check_dossier(ledgers[name])
    assert checked["statements"] >= 3
    check_card(ledgers[name])


def test_a_clean_watch_is_evidence_of_monitoring_and_a_loss_is_not_declared_accuracy(
        ledgers: dict[str, Path]) -> None:
    ev = Evidence.load(ledgers["resumed"])
    assert ev.kind("train.audit") and ev.kind("metrics") and not ev.kind("eval")
    cov = {c.obligation.id: c for c in coverage(ev)}
    audit = {r["seq"] for r in ev.kind("train.audit")}
    art9 = {n.need.label: n for n in cov["EU-AI-Act:Art.9"].needs}
    assert audit <= set(art9["training audit (run.watch) or audit findings"].seqs)
    art15 = {n.need.label: n for n in cov["EU-AI-Act:Art.15"].needs}
    assert not art15["declared accuracy"].met  # a recorded loss is not a declared accuracy
    assert audit <= set(art15["training audit (run.watch) or its findings"].seqs)
    risk = [b.text for b in build_document(ledgers["resumed"], proofs=0).sections[4].blocks if hasattr(b, "text")]
    said = "raised the findings below" if ev.kind("finding") else "raised no finding"
    assert any(t.startswith("run.watch audited") and said in t for t in risk), risk


def test_sessions_of_a_resumed_run_are_listed_and_never_summed(ledgers: dict[str, Path]) -> None:
    ev = Evidence.load(ledgers["resumed"])
    sessions = ev.sessions()
    assert len(sessions) == 2 and ev.seq(sessions[1].first)["data"]["resumed"] is True
    doc = build_document(ledgers["resumed"], proofs=0)
    texts = [s.text for s in doc.statements()]
    assert "The ledger holds 2 sessions of this run" in " ".join(texts)
    for s in sessions:
        n = sum(1 for r in ev.kind("metrics") if s.holds(r["seq"]))
        assert any(t.startswith(f"Session {s.number} recorded {n} metrics records") for t in texts), texts
    assert not any(t.startswith("Training recorded") for t in texts)  # no run-wide total across sessions
