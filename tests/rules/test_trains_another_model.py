"""The watched optimizer stepping while the loop trains another model (reloaded into a new instance, a copy) is
TW308; a loop that keeps training the watched model is not. A recurrent model here, unlike blind24's MLP."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import torchwitness as tw

SAMPLING = ({"every_n_steps": 1, "first_steps": 0}, {})


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.head = nn.GRU(6, 16, batch_first=True), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def _fit(tmp_path, watch: dict, *, reload_at: int | None) -> set[str]:
    torch.manual_seed(0)
    x = torch.randn(256, 5, 6)
    y = (x.sum(dim=(1, 2)) > 0).long() + (x[:, -1, 0] > 1).long()
    model = _Tagger()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with tw.Run(tmp_path / "run") as run:
        run.watch(model, opt, **watch)
        for step in range(80):
            if step == reload_at:  # "resume": the saved state loaded into a fresh copy, the old optimizer kept
                model = copy.deepcopy(model)
            idx = torch.arange(step * 32, step * 32 + 32) % 256
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return {f.rule_id for f in run.findings()}


@pytest.mark.parametrize("watch", SAMPLING)
def test_optimizer_left_on_a_replaced_model_is_named(tmp_path, watch):
    assert "TW308" in _fit(tmp_path, watch, reload_at=10)


@pytest.mark.parametrize("watch", SAMPLING)
def test_the_same_loop_training_its_watched_model_is_quiet(tmp_path, watch):
    assert "TW308" not in _fit(tmp_path, watch, reload_at=None)
