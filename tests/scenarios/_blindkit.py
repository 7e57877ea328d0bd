"""Data, models and loops shared by the blind scenario modules (scenarios_blind*.py): small, learnable CPU data
(tables, smooth-blob images, token sequences, noisy series), the model kinds the held-out suite uses (MLP, CNN,
GRU/LSTM, transformer encoder) and bare training loops with only ``run.watch(model, opt)`` added.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from _kit import WATCH
from torch import nn
from torch.utils.data import DataLoader


def watch(run, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    run.watch(model, opt, **WATCH)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- data ------------------------------------------------------------------------------------------------------
def tabular(n: int = 512, d: int = 12, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x @ torch.randn(d, c, generator=g)).argmax(1)


def images(n: int = 256, c: int = 3, hw: int = 12, classes: int = 4, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """NCHW images: each class is a smooth blob at its own place, plus a little pixel noise."""
    g = gen(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(hw).float(), torch.arange(hw).float(), indexing="ij")
    centres = torch.rand(classes, 2, generator=g) * (hw - 1)
    blobs = torch.stack([torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / hw) for cy, cx in centres])
    tint = 0.5 + torch.rand(n, c, 1, 1, generator=g)
    x = blobs[y].unsqueeze(1) * tint + 0.1 * torch.randn(n, c, hw, hw, generator=g)
    return (x - x.mean()) / x.std(), y


def zipf(n: int, vocab: int, g: torch.Generator, s: float = 1.1) -> torch.Tensor:
    p = 1.0 / torch.arange(1, vocab + 1).float() ** s
    return torch.multinomial(p, n, replacement=True, generator=g)


def tokens(n: int = 256, length: int = 12, vocab: int = 200, seed: int = 0, heavy_tail: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences labelled by the mean of a hidden per-token score (learnable by a bag of embeddings)."""
    g = gen(seed)
    ids = zipf(n * length, vocab, g).view(n, length) if heavy_tail else torch.randint(0, vocab, (n, length),
                                                                                    generator=g)
    score = torch.randn(vocab, generator=g)[ids].mean(1)
    return ids, (score > score.median()).long()


# ---- models ----------------------------------------------------------------------------------------------------
class CNN(nn.Module):
    def __init__(self, c: int = 3, classes: int = 4, bn: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        norm = (lambda k: nn.BatchNorm2d(k)) if bn else (lambda k: nn.Identity())
        self.features = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), norm(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1), norm(16), nn.ReLU(), nn.MaxPool2d(2))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x).mean((2, 3))))


class GRUClassifier(nn.Module):
    def __init__(self, vocab: int = 200, dim: int = 32, classes: int = 2, lstm: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.rnn = (nn.LSTM if lstm else nn.GRU)(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(ids))
        return self.head(out.mean(1))


class Encoder(nn.Module):
    def __init__(self, vocab: int = 200, dim: int = 32, classes: int = 2, layers: int = 1) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, 64, dim))
        layer = nn.TransformerEncoderLayer(dim, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.emb(ids) + self.pos[:, :ids.shape[1]])
        return self.head(self.norm(h).mean(1))


def mlp(d: int = 12, h: int = 32, c: int = 4, depth: int = 2, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d, h), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(h, h), act()]
    return nn.Sequential(*layers, nn.Linear(h, c))


def batches(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, seed: int = 1, shuffle: bool = True
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A hand-written minibatch iterator (the plain loops' data path)."""
    g = gen(seed)
    per_epoch = max(len(x) // batch, 1)
    order = torch.arange(len(x))
    for step in range(steps):
        if step % per_epoch == 0 and shuffle:
            order = torch.randperm(len(x), generator=g)
        idx = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        yield x[idx], y[idx]


def ce_loop(run, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
            steps: int = 30, batch: int = 32, shuffle: bool = True, loss_fn=F.cross_entropy,
            sched: torch.optim.lr_scheduler.LRScheduler | None = None, full_batch: bool = False,
            val: torch.Tensor | None = None) -> None:
    """zero_grad, forward, loss, backward, step (and ``sched.step()`` per batch); ``full_batch``: the same
    ``x`` every step; ``val``: evaluated under eval()/no_grad every 10 steps, then back to train()."""
    watch(run, model, opt)
    data = (((x, y) for _ in range(steps)) if full_batch else batches(x, y, steps, batch, shuffle=shuffle))
    for i, (xb, yb) in enumerate(data):
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
        if sched is not None:
            sched.step()
        if val is not None and i % 10 == 9:
            model.eval()
            with torch.no_grad():
                model(val)
            model.train()


def loader_loop(run, model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader, *, steps: int = 30,
                loss_fn: nn.Module | None = None, zero_grad: bool = True) -> None:
    """The DataLoader form, epoch after epoch until ``steps``; ``zero_grad=False``: the call is forgotten."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    watch(run, model, opt)
    step = 0
    while step < steps:
        for xb, yb in loader:
            if zero_grad:
                opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
            step += 1
            if step == steps:
                return


def two_views_loop(run, model: nn.Module, opt: torch.optim.Optimizer, data: torch.Tensor, loss_of, *,
                   noise: float, steps: int = 40, batch: int = 64) -> None:
    """Self-supervised: two noisy views of each batch, ``loss_of(model, view1, view2)``."""
    watch(run, model, opt)
    for step in range(steps):
        start = (step * batch) % len(data)
        xb = data[start:start + batch]
        loss = loss_of(model, xb + noise * torch.randn_like(xb), xb + noise * torch.randn_like(xb))
        opt.zero_grad()
        loss.backward()
        opt.step()


class SeqRegressor(nn.Module):
    def __init__(self, d: int = 4, h: int = 24, lstm: bool = True) -> None:
        super().__init__()
        self.rnn = (nn.LSTM if lstm else nn.GRU)(d, h, batch_first=True)
        self.head = nn.Linear(h, 1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(s)[0][:, -1])


def sequences(n: int = 320, length: int = 10, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    s = torch.randn(n, length, d, generator=g)
    return s, (s[:, :, 0].mean(1, keepdim=True) * 2 + s[:, -1, 1:2])


def mse_loop(run, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int = 30,
             batch: int = 32, full_batch: bool = False) -> None:
    ce_loop(run, model, opt, x, y, steps=steps, batch=batch, loss_fn=F.mse_loss, full_batch=full_batch)
