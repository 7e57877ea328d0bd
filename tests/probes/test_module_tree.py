"""Layers added to a model after ``watch()`` are hooked from the next audited step on."""

from __future__ import annotations

import torch
from torch import nn

import torchwitness as tw


class Growing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.head: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def _train(run: tw.Run, every: int, first: int) -> list:
    torch.manual_seed(0)
    model = Growing()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 8), torch.randint(0, 8, (32,))
    watch = run.watch(model, opt, every_n_steps=every, first_steps=first)
    for step in range(30):
        if step == 10:  # a head added mid-run whose ReLU never fires (its bias loaded far negative)
            model.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
            with torch.no_grad():
                model.head[0].bias.fill_(-100.0)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    watch.close()
    return run.findings()


def _named(findings: list) -> set[tuple[str, str]]:
    return {(f.rule_id, f.location) for f in findings} | {(c.rule_id, c.location) for f in findings
                                                          for c in f.consequences}


def test_a_head_added_after_watch_is_named(tmp_path) -> None:
    for every, first in ((1, 0), (4, 2)):  # lean audited steps and full ones
        with tw.Run(tmp_path / f"run-{every}") as run:
            found = _train(run, every, first)
        # Dead units are read from the module's output: only a hook on the new ReLU sees them.
        assert ("TW403", "head.1") in _named(found), (every, _named(found))


def test_modules_built_elsewhere_do_not_replan(tmp_path) -> None:
    model = Growing()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with tw.Run(tmp_path / "run") as run:
        watch = run.watch(model, opt)
        nn.Sequential(nn.Linear(2, 2))  # another model, not the watched one
        assert not watch._tree_changed
        model.head = nn.Linear(8, 8)
        assert watch._tree_changed
        watch.close()


class TwoParts(nn.Module):
    """A model whose loop calls its parts (a SimSiam-style encoder and head), never the model itself."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def test_a_loop_that_calls_the_parts_is_audited_through_them(tmp_path) -> None:
    torch.manual_seed(0)
    model = TwoParts()
    with torch.no_grad():
        model.head[0].bias.fill_(-100.0)  # the head's hidden ReLU never fires
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    with tw.Run(tmp_path / "run") as run:
        watch = run.watch(model, opt, every_n_steps=1, first_steps=0)
        for _ in range(12):
            opt.zero_grad()
            nn.functional.cross_entropy(model.head(model.encoder(x)), y).backward()
            opt.step()
        assert watch._parts is not None and watch.history.counters.get("training_forwards")
        watch.close()
        found = _named(run.findings())
    assert ("TW403", "head.1") in found and not any(rule == "TW412" for rule, _ in found), found
    assert "forward" not in model.encoder.__dict__  # the taps on the parts go with the watch


def test_a_loop_that_calls_the_model_leaves_its_parts_alone(tmp_path) -> None:
    model = Growing()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with tw.Run(tmp_path / "run") as run, run.watch(model, opt) as watch:
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(4, 8)).sum().backward()
            opt.step()
        assert watch._parts is None and "forward" not in model.body.__dict__


def test_parts_taps_go_once_the_model_itself_is_called(tmp_path) -> None:
    # A first step with no forward (opt.step() before the loop) takes the loop for one that calls the parts; the
    # next forward of the model itself undoes that, so its children are not opened as forwards of their own.
    model = Growing()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with tw.Run(tmp_path / "run") as run, run.watch(model, opt, every_n_steps=1) as watch:
        opt.step()
        assert watch._parts is not None
        for _ in range(4):
            opt.zero_grad()
            model(torch.randn(4, 8)).sum().backward()
            opt.step()
        assert watch._parts is None and "forward" not in model.body.__dict__ and not watch.errors
