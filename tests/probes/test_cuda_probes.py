"""On CUDA: the watch never synchronises between audits (sentinels, loss tap, input bookkeeping included), and
an audited step costs one device-to-host transfer. Skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchwitness as tw
from torchwitness.probes import transfer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _batches(n: int, nan_at: int | None = None):
    g = torch.Generator(device="cuda").manual_seed(0)
    for step in range(n):
        x = torch.randn(64, 16, device="cuda", generator=g)
        if step == nan_at:
            x[5, 3] = float("nan")  # written on the device: no sync
        yield x, torch.randint(0, 4, (64,), device="cuda", generator=g)


def test_no_sync_between_audits_and_one_transfer_per_audit(tmp_path, monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    transfers = []
    to_host = transfer.to_host
    monkeypatch.setattr(transfer, "to_host", lambda *a: transfers.append(1) or to_host(*a))
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt, every_n_steps=10, first_steps=1)
        for step, (x, y) in enumerate(_batches(31, nan_at=14)):
            audited = step == 0 or step % 10 == 0
            torch.cuda.set_sync_debug_mode(0 if audited else "error")  # any sync on a quiet step raises
            try:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
            finally:
                torch.cuda.set_sync_debug_mode(0)
        assert not watch.errors
    assert len(transfers) == 4  # steps 0, 10, 20, 30: one batched copy each
    (root,) = [f for f in run.findings() if f.rule_id == "TW201"]
    assert root.first_step == 14  # the sentinel dated it between audits


def test_dense_audits_on_cuda_read_once_per_step_and_name_a_fault_at_its_step(tmp_path, monkeypatch):
    """Every step audited: the lean steps (see probes/lean.py) each cost one batched copy to the host, and NaN
    rows written on the device at a lean step are the root cause at that step."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    transfers = []
    to_host = transfer.to_host
    monkeypatch.setattr(transfer, "to_host", lambda *a: transfers.append(1) or to_host(*a))
    from torchwitness.probes import lean
    monkeypatch.setattr(lean, "to_host", transfer.to_host)
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(model, opt, every_n_steps=1, first_steps=0)
        for x, y in _batches(24, nan_at=17):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        assert not watch.errors
    assert len(transfers) == 24
    from torchwitness.rules import Severity
    roots = [f for f in run.findings() if f.severity >= Severity.WARN]
    assert roots[0].rule_id == "TW201" and roots[0].first_step == 17
