"""Correct loops whose model or loop handles what a rule looks for (NaN imputed in the forward, pixels scaled in
the forward, a per-batch conditioning level, an EMA teacher moved under no_grad) stay quiet, and each one's buggy
twin is still reported: each pair differs only in the one thing the rule judges."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchwitness as tw

# The library's default sampling (the first 5 steps, then every 100th) and every step audited.
SAMPLING = {"default": {"every_n_steps": 100, "first_steps": 5}, "every-step": {"every_n_steps": 1, "first_steps": 0}}


@pytest.fixture(params=list(SAMPLING))
def sampling(request) -> dict:
    return SAMPLING[request.param]


def _fired(tmp_path, loop, sampling: dict) -> set[str]:
    """The rules a watched ``loop(watch)`` makes fire, as roots or consequences."""
    torch.manual_seed(0)
    with tw.Run(tmp_path / "run") as run:
        loop(lambda model, opt: run.watch(model, opt, **sampling))
    roots = run.findings()
    return {f.rule_id for f in roots} | {c.rule_id for f in roots for c in f.consequences}


def _data(n: int = 640, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, :2].sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g))


# ---- TW204: a per-batch conditioning level is not a constant input ------------------------------------------
class _Denoiser(nn.Module):
    """Conditioned on a noise level given as its second input (one level per batch, broadcast over the rows)."""

    def __init__(self, d: int = 6) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, 32), nn.SiLU(), nn.Linear(32, d))

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([noisy, sigma], -1))


def _denoise(sigma_of_step):
    def loop(watch) -> None:
        x, _ = _data()
        model = _Denoiser()
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        watch(model, opt)
        for i in range(24):
            xb = x[(i * 32) % 640:(i * 32) % 640 + 32]
            sigma = sigma_of_step(i)
            noisy = xb + sigma * torch.randn_like(xb)
            opt.zero_grad()
            F.mse_loss(model(noisy, sigma.expand(32, 1)), xb).backward()
            opt.step()
    return loop


def test_a_noise_level_per_batch_is_not_a_constant_input(tmp_path, sampling) -> None:
    levels = torch.linspace(0.05, 1.0, 24)
    assert "TW204" not in _fired(tmp_path, _denoise(lambda i: levels[(7 * i) % 24].reshape(1, 1)), sampling)


def test_a_conditioning_input_that_never_changes_is_still_reported(tmp_path, sampling) -> None:
    # The level meant to be drawn per batch is the same zero every step: the model can learn nothing from it.
    assert "TW204" in _fired(tmp_path, _denoise(lambda i: torch.zeros(1, 1)), sampling)


# ---- TW201: missing values the model imputes itself ---------------------------------------------------------
class _Imputing(nn.Module):
    """Fills each missing value with a learned per-feature value (``torch.where``) before its first layer."""

    def __init__(self, d: int = 6, impute: bool = True) -> None:
        super().__init__()
        self.impute = impute
        self.fill = nn.Parameter(torch.zeros(d))
        self.net = nn.Sequential(nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.where(torch.isnan(x), self.fill, x) if self.impute else x)


def _gappy(impute: bool):
    def loop(watch) -> None:
        x, y = _data(seed=1)
        gaps = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.05
        x = x.masked_fill(gaps & (torch.arange(640)[:, None] >= 256), float("nan"))  # gaps from step 8 on
        model = _Imputing(impute=impute)
        opt = torch.optim.SGD(model.parameters(), 0.05)
        watch(model, opt)
        for i in range(20):
            xb, yb = x[i * 32:i * 32 + 32], y[i * 32:i * 32 + 32]
            opt.zero_grad()
            F.mse_loss(model(xb), yb).backward()
            opt.step()
    return loop


def test_missing_values_imputed_by_the_model_are_not_reported(tmp_path, sampling) -> None:
    assert "TW201" not in _fired(tmp_path, _gappy(impute=True), sampling)


def test_missing_values_that_reach_the_first_layer_are_still_reported(tmp_path, sampling) -> None:
    assert "TW201" in _fired(tmp_path, _gappy(impute=False), sampling)


# ---- TW203: raw units the model standardises itself ---------------------------------------------------------
class _Standardising(nn.Module):
    """Carries its training set's feature means and spreads as buffers and standardises raw units first."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(nn.Linear(mean.numel(), 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _incomes(fitted: bool):
    def loop(watch) -> None:
        x, y = _data(seed=3)
        raw = x * torch.tensor([2e4, 15.0, 300.0, 1.0, 5e3, 40.0]) + torch.tensor([5e4, 45.0, 900.0, 0.0, 1e4, 60.0])
        # The scaler's statistics, or (the bug) its buffers left at their defaults: the forward scales nothing.
        mean, std = (raw.mean(0), raw.std(0)) if fitted else (torch.zeros(6), torch.ones(6))
        model = _Standardising(mean, std)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        watch(model, opt)
        for i in range(20):
            opt.zero_grad()
            F.mse_loss(model(raw[i * 32:i * 32 + 32]), y[i * 32:i * 32 + 32]).backward()
            opt.step()
    return loop


def test_raw_units_the_model_standardises_itself_are_not_reported(tmp_path, sampling) -> None:
    assert "TW203" not in _fired(tmp_path, _incomes(fitted=True), sampling)


def test_raw_units_the_models_own_scaling_leaves_raw_are_still_reported(tmp_path, sampling) -> None:
    assert "TW203" in _fired(tmp_path, _incomes(fitted=False), sampling)


# ---- TW306: a frozen target network moved towards its online twin -------------------------------------------
class _QNets(nn.Module):
    """DQN layout: an online Q-network and its frozen target copy, both inside the watched model."""

    def __init__(self) -> None:
        super().__init__()
        self.online = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
        self.target = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3)).requires_grad_(False)
        self.target.load_state_dict(self.online.state_dict())

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.online(s)


def _td_learning(after_step):
    """Fitted Q-iteration on random transitions; ``after_step(model, opt)`` runs after each optimizer step."""
    def loop(watch) -> None:
        g = torch.Generator().manual_seed(4)
        s, s2 = torch.randn(640, 6, generator=g), torch.randn(640, 6, generator=g)
        a, r = torch.randint(0, 3, (640,), generator=g), torch.randn(640, generator=g)
        model = _QNets()
        opt = torch.optim.Adam(model.online.parameters(), 1e-3)
        watch(model, opt)
        for i in range(24):
            b = slice((i * 32) % 640, (i * 32) % 640 + 32)
            with torch.no_grad():
                bootstrap = r[b] + 0.9 * model.target(s2[b]).amax(1)
            opt.zero_grad()
            F.smooth_l1_loss(model(s[b]).gather(1, a[b, None])[:, 0], bootstrap).backward()
            opt.step()
            after_step(model, opt)
    return loop


def _polyak(model: _QNets, opt) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(list(model.target.parameters()), list(model.online.parameters()), 0.05)


def _decay_everything(model: _QNets, opt) -> None:
    with torch.no_grad():  # meant for the trained weights, applied to every parameter: the frozen target shrinks
        for p in model.parameters():
            p.mul_(1 - 1e-2)


def test_a_target_network_moved_towards_its_online_twin_is_not_reported(tmp_path, sampling) -> None:
    assert "TW306" not in _fired(tmp_path, _td_learning(_polyak), sampling)


def test_a_frozen_target_moved_away_from_its_twin_is_still_reported(tmp_path, sampling) -> None:
    assert "TW306" in _fired(tmp_path, _td_learning(_decay_everything), sampling)


def test_a_frozen_tower_the_optimizer_still_moves_is_reported_though_it_has_a_twin(tmp_path, sampling) -> None:
    def loop(watch) -> None:
        x, y = _data(seed=5)
        model = nn.ModuleDict({"left": nn.Linear(6, 8), "right": nn.Linear(6, 8)})
        opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
        watch(model, opt)
        for i in range(20):
            if i == 6:
                model["left"].requires_grad_(False)  # zero_grad(set_to_none=False) keeps its zeroed .grad
            xb = x[i * 32:i * 32 + 32]
            opt.zero_grad(set_to_none=False)
            F.mse_loss((model["left"](xb) * model["right"](xb)).sum(1, keepdim=True), y[i * 32:i * 32 + 32]).backward()
            opt.step()
    assert "TW306" in _fired(tmp_path, loop, sampling)
