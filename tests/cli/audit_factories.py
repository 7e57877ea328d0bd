"""Factories for the ``audit`` CLI tests (imported by path or as a module, as users would)."""

from __future__ import annotations

import torch
from torch import nn


def _data(n: int = 256, d: int = 8, c: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, (x @ torch.randn(d, c, generator=g)).argmax(1)


def healthy() -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    return {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-3),
            "loss_fn": nn.CrossEntropyLoss(), "batches": loader}


def left_in_eval() -> dict:
    parts = healthy()
    parts["model"].eval()
    return parts


def adam_l2() -> tuple:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-2)


def callable_batches_with_training_step() -> dict:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = _data()
    state = {"i": 0}

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        i = state["i"] = (state["i"] + 32) % len(x)
        return x[i:i + 32], y[i:i + 32]

    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.05), "batches": next_batch,
            "loss": lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])}


def model_only() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 4), nn.ReLU())


def raises() -> nn.Module:
    raise RuntimeError("the dataset path is not configured")


not_callable = 3
