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


def _loop(run, watch: dict, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          steps: int, after=None) -> None:
    """Minibatches of 32 in order, cross-entropy; ``after()`` runs after each optimizer step."""
    run.watch(model, opt, **watch)
    for step in range(steps):
        i = torch.arange(step * 32, step * 32 + 32) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
        if after is not None:
            after()


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
        _loop(run, watch, model, opt, x, y, 40, sched.step)
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

        def by_hand() -> None:
            if update:
                model.prior.data.sub_(0.1 * model.prior.grad)
            model.prior.grad = None
        _loop(run, watch, model, torch.optim.Adam(model.body.parameters(), lr=1e-2), x, y, 30, by_hand)
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


# ---- TW411: a layer whose weights are all zero -----------------------------------------------------------
class _ZeroResidual(nn.Module):
    """1-D conv residual blocks whose last conv starts at zero (SkipInit/Fixup style); ``chained`` puts a second
    zero conv before the block's (no gradient reaches the first until the second has moved); ``relu_after``
    puts a ReLU after the zero conv (its output 0 passes no gradient: it never moves)."""

    def __init__(self, chained: bool = False, relu_after: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv1d(2, 8, 3, padding=1)
        self.inner = nn.Conv1d(8, 8, 3, padding=1)
        self.gate = nn.Conv1d(8, 8, 1)
        self.pre = nn.Conv1d(8, 8, 1) if chained else nn.Identity()
        self.relu_after = relu_after
        zeroed = [self.gate, self.pre] if chained else [self.gate]
        for conv in zeroed:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        branch = self.gate(torch.tanh(self.inner(self.pre(h) + h)))
        h = h + (torch.relu(branch) if self.relu_after else branch)
        return self.head(h.mean(-1))


def _zero_branch(chained: bool = False, relu_after: bool = False, optimised: bool = True):
    def train(run, watch) -> None:
        g = torch.Generator().manual_seed(2)
        x = torch.randn(256, 2, 16, generator=g)
        y = (x[:, 0].mean(-1) > x[:, 1].mean(-1)).long() + (x[:, 0, 0] > 0).long()
        model = _ZeroResidual(chained, relu_after)
        params = model.parameters() if optimised else [p for n, p in model.named_parameters() if "gate" not in n]
        _loop(run, watch, model, torch.optim.Adam(params, lr=3e-3), x, y, 24)
    return train


def test_zero_initialised_convs_that_train_are_not_pruned(tmp_path) -> None:
    for chained in (False, True):
        for watch in (SPARSE, DENSE, ONCE):
            found = _findings(tmp_path / f"{chained}-{_label(watch)}", _zero_branch(chained), **watch)
            assert not [f for f in found if f.rule_id == "TW411"], found


def test_zero_convs_nothing_moves_are_found(tmp_path) -> None:
    # Behind a ReLU the zero conv gets no gradient (judged from step 2); left out of the optimizer it gets one
    # but never moves (judged at the end of the run). Either way dated from the start, as pruned filters are.
    for case in ({"relu_after": True}, {"optimised": False}):
        for watch in (SPARSE, DENSE, ONCE):
            found = _findings(tmp_path / f"{next(iter(case))}-{_label(watch)}", _zero_branch(**case), **watch)
            dead = [f for f in found if f.rule_id == "TW411"]
            assert [(f.location, f.first_step, f.severity) for f in dead] == [("gate", None, Severity.WARN)], found
            assert dead[0].message == "8 of 8 filters of gate are all zero"
