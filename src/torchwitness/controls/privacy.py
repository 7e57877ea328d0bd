"""DP-SGD through Opacus with an epsilon budget enforced *before* it is exceeded (GDPR Art. 25, 32).

Before each optimizer step the guard asks a copy of Opacus' own accountant what epsilon would be after that
step; if it would cross the budget the step is not taken and :class:`PrivacyBudgetExhausted` is raised, so the
model never holds a privacy loss above the budget. Configuration (accountant, noise multiplier, clipping norm,
sample rate, delta, budget) is one ``privacy.config`` record; the (epsilon, delta) trajectory is
``privacy.epsilon`` records.

Example::

    dp = DPTraining(run, model, optimizer, loader, noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-5,
                    epsilon_budget=3.0)
    try:
        for epoch in range(epochs):
            for x, y in dp.data_loader:
                dp.optimizer.zero_grad(); loss_fn(dp.module(x), y).backward()
                dp.step()
            dp.record(step=...)
    except PrivacyBudgetExhausted:
        dp.record(step=...)       # the last trajectory point, at or below the budget
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import msgspec

from torchwitness.errors import InputError, PolicyError, PrivacyBudgetExhausted
from torchwitness.ledger.schema import register_kind

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader

    from torchwitness.run import Run


class PrivacyConfig(msgspec.Struct):
    mechanism: str
    accountant: str
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    delta: float
    epsilon_budget: float | None
    poisson_sampling: bool
    opacus: str


class PrivacyEpsilon(msgspec.Struct):
    """One trajectory point: the accountant's epsilon at ``delta`` after ``steps`` noisy steps."""

    epsilon: float
    delta: float
    steps: int
    accountant: str
    noise_multiplier: float
    epsilon_budget: float | None
    exhausted: bool = False
    refused_epsilon: float | None = None


register_kind("privacy.config", PrivacyConfig)
register_kind("privacy.epsilon", PrivacyEpsilon)


class DPTraining:
    """Wrap a model, optimizer and loader with Opacus' ``PrivacyEngine`` and guard the epsilon budget.

    ``require_budget`` is the policy switch: when true (the default) a run without ``epsilon_budget`` is
    rejected before any data is touched.
    """

    def __init__(self, run: Run | None, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 data_loader: DataLoader, *, noise_multiplier: float, max_grad_norm: float, delta: float,
                 epsilon_budget: float | None = None, accountant: str = "rdp", require_budget: bool = True,
                 poisson_sampling: bool = True, secure_mode: bool = False) -> None:
        if epsilon_budget is None and require_budget:
            raise PolicyError("privacy policy requires an epsilon budget; pass epsilon_budget= "
                              "(or require_budget=False to run without one)")
        if epsilon_budget is not None and epsilon_budget <= 0:
            raise InputError(f"epsilon_budget must be positive, not {epsilon_budget}")
        if not 0 < delta < 1:
            raise InputError(f"delta must lie in (0, 1), not {delta}")
        try:
            import opacus
            from opacus import PrivacyEngine
        except ImportError as e:
            raise ImportError("DP-SGD needs Opacus: pip install 'torchwitness[privacy]'") from e
        self.run, self.delta, self.budget = run, float(delta), epsilon_budget
        self.engine = PrivacyEngine(accountant=accountant, secure_mode=secure_mode)
        self.module, self.optimizer, self.data_loader = self.engine.make_private(
            module=module, optimizer=optimizer, data_loader=data_loader, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, poisson_sampling=poisson_sampling)
        self.sample_rate = 1 / len(data_loader)
        self.accountant_name = self.engine.accountant.mechanism()
        self.steps = 0
        self._allowed: tuple[tuple[float, float], int] | None = None  # ((noise, rate), last step within budget)
        if run is not None:
            run.record("privacy.config", {
                "mechanism": "dp-sgd", "accountant": self.accountant_name,
                "noise_multiplier": float(noise_multiplier), "max_grad_norm": float(max_grad_norm),
                "sample_rate": self.sample_rate, "delta": self.delta, "epsilon_budget": epsilon_budget,
                "poisson_sampling": poisson_sampling, "opacus": opacus.__version__})

    def epsilon(self) -> float:
        """Epsilon spent so far, as Opacus' accountant reports it (0 before the first step)."""
        return float(self.engine.accountant.get_epsilon(self.delta)) if self.steps else 0.0

    def projected_epsilon(self, steps: int = 1) -> float:
        """Epsilon after ``steps`` more steps, from a copy of the accountant (the live one is untouched)."""
        probe = copy.deepcopy(self.engine.accountant)
        for _ in range(steps):
            probe.step(noise_multiplier=self.optimizer.noise_multiplier, sample_rate=self.sample_rate)
        return float(probe.get_epsilon(self.delta))

    def _last_allowed_step(self) -> int:
        """The largest step count whose projected epsilon stays within budget, for the current noise and rate.

        Epsilon grows with the step count at fixed noise and rate, so one exponential-plus-bisection search
        over the accountant's projections serves every step until the noise or rate changes.
        """
        key = (float(self.optimizer.noise_multiplier), self.sample_rate)
        if self._allowed is None or self._allowed[0] != key:
            assert self.budget is not None
            hi = 1
            while self.projected_epsilon(hi) <= self.budget:
                hi *= 2
            lo = hi // 2  # projected(lo) fits (or lo == 0), projected(hi) does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if self.projected_epsilon(mid) <= self.budget else (lo, mid)
            self._allowed = (key, self.steps + lo)
        return self._allowed[1]

    def step(self) -> Any:
        """Take one DP-SGD step, unless it would cross the budget: then raise and leave the model as it is."""
        if self.budget is not None and self.steps + 1 > self._last_allowed_step():
            projected = self.projected_epsilon()
            if projected > self.budget:
                self.optimizer.zero_grad(set_to_none=True)
                self._record(exhausted=True, refused=projected)
                raise PrivacyBudgetExhausted(f"the next step would spend epsilon {projected:.4f} > budget "
                                             f"{self.budget} (delta {self.delta}); stopped at {self.epsilon():.4f}")
        out = self.optimizer.step()
        self.steps += 1
        return out

    def _record(self, *, exhausted: bool = False, refused: float | None = None, step: int | None = None) -> None:
        if self.run is not None:
            self.run.record("privacy.epsilon", {
                "epsilon": self.epsilon(), "delta": self.delta, "steps": self.steps,
                "accountant": self.accountant_name, "noise_multiplier": float(self.optimizer.noise_multiplier),
                "epsilon_budget": self.budget, "exhausted": exhausted, "refused_epsilon": refused},
                step=self.steps if step is None else step)

    def record(self, step: int | None = None) -> float:
        """Record the current trajectory point (call at each epoch end); returns epsilon."""
        self._record(step=step)
        return self.epsilon()
