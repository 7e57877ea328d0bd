"""Infinities by design and gradients an adaptive optimizer rescales are not faults; their buggy twins still are.

The healthy forms differ from the trial's (tests/scenarios/scenarios_healthy22.py): a mask inside the model's
attention, not on its output; a summed loss on a convolutional net.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchwitness as tw
from torchwitness.rules import Severity

SAMPLING = ({"every_n_steps": 1, "first_steps": 0}, {})


class _MaskedPointer(nn.Module):
    """Scores each of 6 slots against a query and masks unavailable slots with -inf before the softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(8, 16), nn.Linear(8, 16)

    def forward(self, x: torch.Tensor, slots: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bd,bsd->bs", self.q(x), self.k(slots))
        return F.log_softmax(scores.masked_fill(~free, float("-inf")), dim=1)


def _pointer_run(tmp_path, watch: dict, *, target_masked: bool) -> list:
    g = torch.Generator().manual_seed(0)
    x, slots = torch.randn(512, 8, generator=g), torch.randn(512, 6, 8, generator=g)
    y = (slots @ x.unsqueeze(2)).squeeze(2).argmax(1)
    free = torch.rand(512, 6, generator=g) < 0.6
    free[torch.arange(512), y] = not target_masked  # the twin's target sits on a masked slot: its loss is inf
    model = _MaskedPointer()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with tw.Run(tmp_path / "run") as run:
        run.watch(model, opt, **watch)
        for i in range(30):
            idx = torch.arange(i * 16, i * 16 + 16) % 512
            opt.zero_grad()
            F.nll_loss(model(x[idx], slots[idx], free[idx]), y[idx]).backward()
            opt.step()
    return run.findings()


@pytest.mark.parametrize("watch", SAMPLING)
def test_minus_inf_mask_before_a_softmax_is_quiet(tmp_path, watch):
    loud = [f for f in _pointer_run(tmp_path, watch, target_masked=False) if f.severity >= Severity.WARN]
    assert not loud, loud


@pytest.mark.parametrize("watch", SAMPLING)
def test_a_mask_that_reaches_the_loss_is_still_named(tmp_path, watch):
    found = {f.rule_id for f in _pointer_run(tmp_path, watch, target_masked=True) if f.severity >= Severity.WARN}
    assert found & {"TW101", "TW105"}, found


def _summed_cnn_run(tmp_path, watch: dict, optimizer: type[torch.optim.Optimizer], lr: float) -> list:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 1, 12, 12, generator=g)
    y = x.mean(dim=(1, 2, 3), keepdim=False).unsqueeze(1).repeat(1, 4) * 300
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 4))
    opt = optimizer(model.parameters(), lr=lr)
    with tw.Run(tmp_path / "run") as run:
        run.watch(model, opt, **watch)
        for i in range(30):
            idx = torch.arange(i * 64, i * 64 + 64) % 256
            opt.zero_grad()
            F.mse_loss(model(x[idx]), y[idx], reduction="sum").backward()  # summed over 64x4 targets and scaled
            opt.step()
    return run.findings()


@pytest.mark.parametrize("watch", SAMPLING)
def test_adam_on_a_summed_loss_is_not_exploding(tmp_path, watch):
    found = _summed_cnn_run(tmp_path, watch, torch.optim.Adam, 1e-3)
    assert "TW103" not in {f.rule_id for f in found} | {c.rule_id for f in found for c in f.consequences}, found


@pytest.mark.parametrize("watch", SAMPLING)
def test_sgd_on_the_same_gradients_is_still_exploding(tmp_path, watch):
    found = _summed_cnn_run(tmp_path, watch, torch.optim.SGD, 1e-2)
    assert "TW103" in {f.rule_id for f in found} | {c.rule_id for f in found for c in f.consequences}, found
