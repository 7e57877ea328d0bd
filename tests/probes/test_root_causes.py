"""Root causes and their consequences, the sync-free sentinels between audits, and the loss tap."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from rich.console import Console

import torchwitness as tw
from torchwitness.probes import lossspy
from torchwitness.probes.sentinel import FIELDS, Sentinel, first_bad
from torchwitness.report import to_json, to_sarif
from torchwitness.report.console import FindingsView
from torchwitness.report.from_run import run_findings
from torchwitness.rules.catalogue import Severity
from torchwitness.rules.causes import ordered
from torchwitness.rules.findings import Finding, FindingSet


def _nan_late(run: tw.Run, at: int, steps: int, **watch: object) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    run.watch(model, opt, **watch)
    for step in range(steps):
        x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
        if step >= at:
            x[3, 2] = float("nan")
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def test_a_fault_between_sparse_audits_is_named_at_its_first_step(tmp_path):
    with tw.Run(tmp_path / "r") as run:
        _nan_late(run, at=37, steps=60)  # default sampling: audits at steps 0-4 only
    roots = run.findings()
    assert [f.rule_id for f in roots if f.severity >= Severity.WARN] == ["TW201"]
    (root,) = roots
    assert root.first_step == 37
    assert {c.rule_id for c in root.consequences} >= {"TW101", "TW108"}  # the NaN loss and "divergence"
    assert all(c.caused_by == "TW201@input:arg0" for c in root.consequences)


def test_the_nesting_survives_the_ledger_and_every_report(tmp_path):
    with tw.Run(tmp_path / "r") as run:
        _nan_late(run, at=3, steps=8, every_n_steps=1)
    (root,) = [f for f in run_findings(tmp_path / "r") if f.rule_id == "TW201"]
    assert root.first_step == 3 and {c.rule_id for c in root.consequences} >= {"TW101"}
    assert not [f for f in run_findings(tmp_path / "r") if f.rule_id == "TW101"]  # not a root of its own
    doc = json.loads(to_json([root]))
    assert doc["findings"][0]["consequences"][0]["caused_by"] == "TW201@input:arg0"
    sarif = to_sarif([root])
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == ["TW201"]
    assert "TW101" in {c["ruleId"] for c in sarif["runs"][0]["results"][0]["properties"]["consequences"]}
    console = Console(width=160, record=True)
    console.print(FindingsView([root]))
    assert "↳ TW101" in console.export_text()


def test_a_later_root_adopts_findings_it_explains():
    s = FindingSet()
    s.add(Finding.of("TW403", "fc1", "dead units", step=4))
    assert [f.rule_id for f in s] == ["TW403"]
    for f in ordered([Finding.of("TW204", "input:x", "blank", step=2)]):
        s.add(f)
    assert [(f.rule_id, [c.rule_id for c in f.consequences]) for f in s] == [("TW204", ["TW403"])]
    # A consequence never comes before its cause: a finding that started earlier is left alone.
    s.add(Finding.of("TW101", "loss", "nan", step=1))
    assert {f.rule_id for f in s} == {"TW204", "TW101"}


def test_dead_units_after_piled_up_token_ids_are_their_consequence_and_a_root_alone():
    # Ids clamped onto one id (TW212 from step 0): units that die later downstream are its consequence.
    s = FindingSet()
    for f in ordered([Finding.of("TW403", "head.1", "dead units", step=16),
                      Finding.of("TW212", "emb", "57% of the ids are id 119", step=0)]):
        s.add(f)
    assert [(f.rule_id, [c.rule_id for c in f.consequences]) for f in s] == [("TW212", ["TW403"])]
    # Dead units with no data problem stay a root of their own, and so do units dead before the ids piled up.
    alone = FindingSet()
    alone.add(Finding.of("TW403", "fc1", "dead units", step=3))
    assert [(f.rule_id, f.caused_by) for f in alone] == [("TW403", None)]
    earlier = FindingSet()
    for f in ordered([Finding.of("TW403", "fc1", "dead units", step=2), Finding.of("TW212", "emb", "ids", step=9)]):
        earlier.add(f)
    assert sorted((f.rule_id, f.caused_by) for f in earlier) == [("TW212", None), ("TW403", None)]


def _bag_with_dead_units(run: tw.Run, clamp: bool, **watch: object) -> None:
    """A bag of embeddings over 400 ids whose hidden layer starts with 36 of 48 units dead (bias -4)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 400, (1024, 10), generator=g)
    y = (torch.randn(400, generator=g)[ids].mean(1) > 0).long()

    class Bag(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(400, 16)
            self.head = torch.nn.Sequential(torch.nn.Linear(16, 48), torch.nn.ReLU(), torch.nn.Linear(48, 2))
            with torch.no_grad():
                self.head[0].bias[:36] = -4.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(x).mean(1))
    model = Bag()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run.watch(model, opt, **watch)
    for step in range(40):
        i = torch.arange(step * 32, step * 32 + 32) % len(ids)
        opt.zero_grad()
        F.cross_entropy(model(ids[i].clamp(max=159) if clamp else ids[i]), y[i]).backward()
        opt.step()


def test_dead_units_stand_alone_as_a_root_and_are_kept_under_piled_up_ids(tmp_path):
    for i, watch in enumerate(({"every_n_steps": 100, "first_steps": 5}, {"every_n_steps": 1, "first_steps": 0})):
        with tw.Run(tmp_path / f"alone{i}") as run:
            _bag_with_dead_units(run, clamp=False, **watch)
        assert [(f.rule_id, f.location, f.severity) for f in run.findings()] == [("TW403", "head.1", Severity.WARN)]
        with tw.Run(tmp_path / f"clamped{i}") as run:
            _bag_with_dead_units(run, clamp=True, **watch)
        roots = run.findings()
        assert [f.rule_id for f in roots if f.severity >= Severity.WARN] == ["TW212"]
        assert "TW403" in {c.rule_id for c in roots[0].consequences}


def test_sentinel_names_the_first_bad_step_of_each_field():
    s = Sentinel(capacity=3)
    for step in range(40):  # past capacity, later steps accumulate into each field's last sum
        s.note("input", step, torch.tensor([1.0, float("inf") if step == 37 else 0.0]))
        s.note("grad", step, torch.ones(2, dtype=torch.bfloat16))
    values, where = s.drain()
    assert len(where) <= 2 * 3 * len(FIELDS)  # held and summed: bounded however long the gap between audits
    first = first_bad(values.tolist(), where)
    assert list(first) == ["input"] and first["input"] <= 37  # folded: dated at the first step of the tail
    assert s.drain() is None and not s.pending


def test_sentinel_judges_held_tensors_as_they_were_when_noted():
    s = Sentinel(capacity=64)
    fresh = [torch.ones(3) for _ in range(5)] + [torch.ones(2)]  # a short last batch
    fresh[4][1] = float("nan")
    reused = torch.zeros(3)  # one buffer refilled in place every step, as zero_grad(set_to_none=False) leaves it
    for step, t in enumerate(fresh):
        s.note("input", step, t)
        reused.fill_(float("inf") if step == 2 else 1.0)
        s.note("grad", step, reused)
    fresh[1][0] = float("inf")  # changed after it was noted: not judged as step 1's input
    values, where = s.drain()
    assert first_bad(values.tolist(), where) == {"input": 4, "grad": 2}
    s.note("input", 7, torch.tensor([float("nan")]))  # the field's tensors changed in place: summed when noted
    values, where = s.drain()
    assert s._held == [] and first_bad(values.tolist(), where) == {"input": 7}


def test_loss_tap_is_removed_with_the_last_watch(tmp_path):
    backward, ce = torch.Tensor.backward, F.cross_entropy
    with tw.Run(tmp_path / "r") as run:
        model = torch.nn.Linear(4, 2)
        run.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), every_n_steps=100)
        assert torch.Tensor.backward is not backward and F.cross_entropy is not ce
        assert F.cross_entropy.__name__ == "cross_entropy"
    assert torch.Tensor.backward is backward and F.cross_entropy is ce
    assert not lossspy._LISTENERS
