"""Training set-ups for the replay tests: one deterministic, one with a dropout that ignores the seed."""

from __future__ import annotations

import os

import torch
from torch import nn


class UnseededDropout(nn.Module):
    """Dropout whose mask comes from a generator seeded by the OS, from its ``start``-th call on."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.start, self.calls = start, 0
        self.gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls <= self.start:
            return x
        return x * (torch.rand(x.shape, generator=self.gen) > 0.5) * 2


def _setup(noise: nn.Module) -> dict:
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), noise, nn.Linear(16, 3))
    data = torch.utils.data.TensorDataset(torch.randn(48, 6), torch.randint(0, 3, (48,)))
    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            "batches": torch.utils.data.DataLoader(data, batch_size=8, shuffle=True),
            "loss": lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])}


def deterministic():
    return _setup(nn.Identity())


def unseeded_dropout():
    return _setup(UnseededDropout(start=2))


def unseeded_from_start():
    return _setup(UnseededDropout(start=0))


def audit_style():
    """The tuple form ``torchwitness audit`` also takes: (model, optimizer, loss_fn, batches)."""
    s = _setup(nn.Identity())
    return s["model"], s["optimizer"], nn.CrossEntropyLoss(), s["batches"]
