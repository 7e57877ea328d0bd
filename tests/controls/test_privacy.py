"""DP-SGD budget: stops at or before epsilon 3 by Opacus' own accountant; a run without a budget is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import torchwitness as tw
from torchwitness.controls.privacy import DPTraining
from torchwitness.errors import PolicyError, PrivacyBudgetExhausted
from torchwitness.ledger import iter_records, verify_run


def _setup(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(2048, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.1), DataLoader(TensorDataset(x, y), batch_size=64)


@pytest.mark.parametrize("accountant", ["rdp", "gdp"])
def test_budget_3_stops_at_or_before_3(tmp_path, accountant):
    model, opt, loader = _setup()
    with tw.Run(tmp_path / "run") as run:
        dp = DPTraining(run, model, opt, loader, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5,
                        epsilon_budget=3.0, accountant=accountant)
        loss_fn = nn.CrossEntropyLoss()
        with pytest.raises(PrivacyBudgetExhausted):
            for _ in range(200):
                for x, y in dp.data_loader:
                    dp.optimizer.zero_grad()
                    loss_fn(dp.module(x), y).backward()
                    dp.step()
                dp.record()
        final = dp.engine.accountant.get_epsilon(1e-5)  # Opacus' own number
        assert 2.5 < final <= 3.0
        assert dp.projected_epsilon() > 3.0  # it stopped at the last step that fit, not earlier
        assert dp.steps > 100
    traj = [r["data"] for r in iter_records(tmp_path / "run", kinds={"privacy.epsilon"})]
    eps = [t["epsilon"] for t in traj]
    assert eps == sorted(eps) and max(eps) <= 3.0 and len(traj) >= 2
    assert traj[-1]["exhausted"] and traj[-1]["refused_epsilon"] > 3.0
    assert traj[-1]["epsilon"] == pytest.approx(final, rel=1e-12)
    config = next(iter_records(tmp_path / "run", kinds={"privacy.config"}))["data"]
    assert config["accountant"] == accountant and config["noise_multiplier"] == 1.0
    verify_run(tmp_path / "run", deep=True)


def test_run_without_budget_is_rejected_by_policy():
    model, opt, loader = _setup()
    with pytest.raises(PolicyError, match="requires an epsilon budget"):
        DPTraining(None, model, opt, loader, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    dp = DPTraining(None, model, opt, loader, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5,
                    require_budget=False)
    assert dp.epsilon() == 0.0
