"""Factories for the CLI tests: the Adult MLP trained briefly with a fixed seed, and a token classifier (identical
weights every call)."""

from __future__ import annotations

import torch
from torch import nn

from torchwitness.demo.adult import load_adult


def trained_model() -> nn.Module:
    torch.manual_seed(0)
    data = load_adult()
    x, y = torch.from_numpy(data.train.features[:4000]), torch.from_numpy(data.train.labels[:4000])
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


class _TokenClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(ids)).mean(1))


def token_model() -> nn.Module:
    """A token classifier with fixed weights (for explaining served token-id decisions)."""
    torch.manual_seed(0)
    return _TokenClassifier().eval()


def linear_model() -> nn.Module:
    """A four-feature linear classifier with fixed weights (served in a separate process, explained beside it)."""
    torch.manual_seed(0)
    return nn.Linear(4, 2).eval()
