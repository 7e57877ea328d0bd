"""The watch keeps torch.compile, DDP and AMP (GradScaler) working, and reads gradients after unscaling."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

import torchwitness as tw
from torchwitness.ledger import iter_records
from torchwitness.rules import Severity


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    return x, (x[:, 0] > 0).long()


def _audits(path) -> list[dict]:
    return [s for r in iter_records(path, kinds={"train.audit"}) for s in r["data"]["steps"]]


def test_torch_compile_keeps_working(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=0.1)
    crit = nn.CrossEntropyLoss()
    with tw.Run(tmp_path / "r") as run:
        watch = run.watch(compiled, opt, loss_fn=crit, every_n_steps=2, first_steps=2)
        losses = []
        for _ in range(8):
            opt.zero_grad()
            loss = crit(compiled(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        assert watch.compiled
        assert "TW302" in {f.rule_id for f in run.findings()}
    assert losses[-1] < losses[0]
    audits = _audits(tmp_path / "r")
    assert [a["step"] for a in audits] == [0, 1, 2, 4, 6] and all(a["grad_norm"] for a in audits)


def test_ddp_single_process_gloo(tmp_path) -> None:
    torch.manual_seed(0)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        x, y = _data()
        model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)))
        opt = torch.optim.SGD(model.parameters(), 0.1)
        crit = nn.CrossEntropyLoss()
        with tw.Run(tmp_path / "r") as run:
            run.watch(model, opt, loss_fn=crit, every_n_steps=3, first_steps=2)
            for _ in range(6):
                opt.zero_grad()
                crit(model(x), y).backward()
                opt.step()
            assert not [f for f in run.findings() if f.severity >= Severity.WARN]
        assert [a["step"] for a in _audits(tmp_path / "r")] == [0, 1, 3]
    finally:
        dist.destroy_process_group()


def test_grad_scaler_gradients_are_judged_unscaled(tmp_path) -> None:
    x, y = _data()

    def train(scaled: bool) -> list[dict]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), 0.1)
        crit = nn.CrossEntropyLoss()
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=scaled)
        path = tmp_path / ("scaled" if scaled else "plain")
        with tw.Run(path) as run:
            run.watch(model, opt, loss_fn=crit, every_n_steps=1, first_steps=3)
            for _ in range(3):
                opt.zero_grad()
                scaler.scale(crit(model(x), y)).backward()
                scaler.step(opt)
                scaler.update()
            assert "TW103" not in {f.rule_id for f in run.findings()}
        return _audits(path)

    plain, scaled = train(False), train(True)
    for a, b in zip(plain, scaled, strict=True):
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4 * a["grad_norm"]
