"""Scenario kit: tiny CPU data, models and a plain training loop, plus the registry the tests iterate.

A scenario is a function ``(run) -> None`` that trains with ``run.watch``; ``@bug("TW...")`` names the rules
that must fire, ``@healthy`` marks a control that must get no WARN or ERROR.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import torchwitness as tw


@dataclass(frozen=True)
class Scenario:
    name: str
    fn: Callable[[tw.Run], None]
    expected: frozenset[str]
    tolerated: frozenset[str] = frozenset()  # other WARN roots this scenario may also get (a second, real problem)


BUGGY: list[Scenario] = []
HEALTHY: list[Scenario] = []
WATCH = {"every_n_steps": 10, "first_steps": 3}


def bug(*ids: str, tolerated: tuple[str, ...] = ()) -> Callable[[Callable[[tw.Run], None]], Callable[[tw.Run], None]]:
    """``ids``: the rules naming the root cause (all must fire, one as a root; the others may be its
    consequences)."""
    def register(fn: Callable[[tw.Run], None]) -> Callable[[tw.Run], None]:
        BUGGY.append(Scenario(fn.__name__, fn, frozenset(ids), frozenset(tolerated)))
        return fn
    return register


def healthy(fn: Callable[[tw.Run], None]) -> Callable[[tw.Run], None]:
    HEALTHY.append(Scenario(fn.__name__, fn, frozenset()))
    return fn


def blobs(n: int = 512, d: int = 10, c: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised features and labels from a random linear rule: easy to learn."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, c, generator=g)
    return x, (x @ w).argmax(1)


def regression(n: int = 512, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x @ torch.randn(d, generator=g) + 0.1 * torch.randn(n, generator=g)


def mlp(d: int = 10, h: int = 32, c: int = 3, act: type[nn.Module] = nn.ReLU, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d, h), act()]
    for _ in range(depth - 2):
        layers += [nn.Linear(h, h), act()]
    return nn.Sequential(*layers, nn.Linear(h, c))


def fit(run: tw.Run, model: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, x: torch.Tensor,
        y: torch.Tensor, *, steps: int = 30, batch: int = 32, seed: int = 0, **watch: object) -> None:
    """The textbook loop: shuffled minibatches, zero_grad, forward, loss, backward, step."""
    run.watch(model, opt, loss_fn=loss_fn, **{**WATCH, **watch})
    g = torch.Generator().manual_seed(seed)
    per_epoch = max(len(x) // batch, 1)
    for step in range(steps):
        if step % per_epoch == 0:
            order = torch.randperm(len(x), generator=g)
        start = (step % per_epoch) * batch
        idx = order[start:start + batch]
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
