"""Findings that only the rest of the run can confirm: a param group held at lr=0 (TW308), a parameter outside
the optimizer (TW301), a layer whose weights are all zero (TW411). Each correct pattern stays quiet; its twin,
the real bug, is still found."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import torchwitness as tw
from torchwitness.rules import Severity

SPARSE = {"every_n_steps": 100, "first_steps": 5}
DENSE = {"every_n_steps": 1, "first_steps": 0}
ONCE = {"every_n_steps": 1000, "first_steps": 1}  # one audited step: the end of the run judges what it saw


def _label(watch: dict) -> str:
    return f"n{watch['every_n_steps']}-f{watch['first_steps']}"


def _findings(tmp_path, train, **watch: object) -> list:
    torch.manual_seed(0)
    with tw.Run(tmp_path / "r") as run:
        train(run, watch)
    found = run.findings()
    return [f for root in found for f in (root, *root.consequences)]


def _data(n: int = 512, d: int = 10, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g)
    return x, (x @ torch.randn(d, c, generator=g)).argmax(1)


# ---- TW308: a param group at lr=0 -------------------------------------------------------------------------
def _body_rate_from_scheduler(unfreeze_at: int | None):
    """The body's group is scaled to 0 by a LambdaLR until ``unfreeze_at`` (None: for the whole run)."""
    def train(run, watch) -> None:
        x, y = _data()
        model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))
        opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[2].parameters()}], lr=0.05,
                              momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, [lambda s: 0.0 if unfreeze_at is None or s < unfreeze_at else 1.0, lambda s: 1.0])
        run.watch(model, opt, **watch)
        for step in range(40):
            i = torch.arange(step * 32, step * 32 + 32) % len(x)
            opt.zero_grad()
            F.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
            sched.step()
    return train


def test_a_group_given_its_rate_after_a_warm_up_is_not_idle(tmp_path) -> None:
    for watch in (SPARSE, DENSE):  # sparse: every audit saw lr=0, but the run ends with the group training
        found = _findings(tmp_path / _label(watch), _body_rate_from_scheduler(12), **watch)
        assert not [f for f in found if f.rule_id == "TW308"], found


def test_a_group_at_lr_zero_for_the_whole_run_is_found(tmp_path) -> None:
    for watch in (SPARSE, DENSE):
        found = _findings(tmp_path / _label(watch), _body_rate_from_scheduler(None), **watch)
        idle = [f for f in found if f.rule_id == "TW308" and "param group 0" in f.message]
        assert idle and idle[0].severity >= Severity.WARN and idle[0].first_step == 0, found


# ---- TW301: a parameter outside the optimizer ------------------------------------------------------------
class _Scaled(nn.Module):
    """An MLP whose logits are shifted by a learnable per-class prior kept out of the optimizer."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
        self.prior = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.prior


def _prior_by_hand(update: bool):
    """The prior follows its own rule through ``.data`` (no version counter moves); ``update=False`` forgets it."""
    def train(run, watch) -> None:
        x, y = _data()
        model = _Scaled()
        opt = torch.optim.Adam(model.body.parameters(), lr=1e-2)
        run.watch(model, opt, **watch)
        for step in range(30):
            i = torch.arange(step * 32, step * 32 + 32) % len(x)
            opt.zero_grad()
            model.prior.grad = None
            F.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
            if update:
                model.prior.data.sub_(0.1 * model.prior.grad)
    return train


def test_a_parameter_updated_by_hand_is_not_missing(tmp_path) -> None:
    for watch in (SPARSE, DENSE, ONCE):
        found = _findings(tmp_path / _label(watch), _prior_by_hand(update=True), **watch)
        assert not [f for f in found if f.rule_id == "TW301"], found


def test_a_parameter_no_one_updates_is_missing(tmp_path) -> None:
    for watch in (SPARSE, DENSE, ONCE):
        found = _findings(tmp_path / _label(watch), _prior_by_hand(update=False), **watch)
        missing = [f for f in found if f.rule_id == "TW301"]
        assert [(f.location, f.severity, f.first_step) for f in missing] == [("model", Severity.ERROR, 0)], found
        assert "prior" in missing[0].message
