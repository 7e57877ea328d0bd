"""Lean audited steps (probes/lean.py): a fault on a step between statistical audits is named at its step, in
the order of the data flow, and a healthy lean step costs no rule call."""

from __future__ import annotations

import torch

import torchwitness as tw
from torchwitness.rules import Severity


def _train(tmp_path, model: torch.nn.Module, batches, lr: float = 0.05, loss=torch.nn.functional.cross_entropy):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with tw.Run(tmp_path / "r") as run:
        run.watch(model, opt, every_n_steps=1, first_steps=0)
        for x, y in batches:
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
        return run.findings()


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))


def test_nan_rows_arriving_on_a_lean_step_are_the_root_at_that_step(tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = []
    for step in range(20):
        x = torch.randn(32, 8, generator=g)
        if step == 13:  # a lean step: after the 8 warm-up steps, before the next statistical one
            x[5, 2] = float("nan")
        batches.append((x, torch.randint(0, 3, (32,), generator=g)))
    roots = _train(tmp_path, _mlp(), batches)
    loud = [f for f in roots if f.severity >= Severity.WARN]
    assert [f.rule_id for f in loud][:1] == ["TW201"], [(f.rule_id, f.first_step) for f in loud]
    assert loud[0].first_step == 13 and "between" not in loud[0].message
    explained = {c.rule_id for c in loud[0].consequences}
    assert "TW101" in explained and not {"TW101", "TW105", "TW102"} & {f.rule_id for f in loud[1:]}


def test_an_exploding_gradient_on_a_lean_step_is_named_at_its_step(tmp_path):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, 8, generator=g) * (1e5 if step == 12 else 1.0),
                torch.randint(0, 3, (32,), generator=g)) for step in range(16)]
    found = {f.rule_id: f for f in _train(tmp_path, _mlp(), batches, lr=1e-9)}
    assert found["TW103"].first_step == 12


def test_a_healthy_lean_step_calls_no_rule_and_leaves_no_hook(tmp_path, monkeypatch):
    from torchwitness.probes import watch as watch_module

    judged: list[int] = []
    original = watch_module.Watch._run_rules

    def noting(self, view):
        judged.append(view.step)
        return original(self, view)

    monkeypatch.setattr(watch_module.Watch, "_run_rules", noting)
    model = _mlp()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(20)]
    _train(tmp_path, model, batches)
    assert sorted(set(judged)) == [*range(8), 20]  # warm-up statistical steps, then the close
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_a_module_that_computes_after_its_children_is_named_not_the_next_layer(tmp_path):
    class Logs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(8, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(self.lin(x))  # NaN for every negative pre-activation, from the first step

    torch.manual_seed(0)
    model = torch.nn.Sequential(Logs(), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(12)]
    found = [f for f in _train(tmp_path, model, batches) if f.rule_id == "TW105"]
    assert found and found[0].location == "0"


def test_accumulated_micro_batches_and_an_evaluation_forward_in_between(tmp_path):
    """Two micro-batches per optimizer step and an evaluation forward (eval mode, gradients on) in between: a
    healthy run stays quiet; NaN rows in the second micro-batch of a lean step are named at that step."""
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    with tw.Run(tmp_path / "r") as run:
        run.watch(model, opt, every_n_steps=1, first_steps=0)
        for step in range(24):
            for micro in range(2):
                x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
                if step == 17 and micro == 1:
                    x[3] = float("nan")
                torch.nn.functional.cross_entropy(model(x), y).backward()
            model.eval()
            model(torch.randn(4, 8, generator=g))  # a probe of the model, gradients on, never backpropagated
            model.train()
            opt.step()
            opt.zero_grad()
        loud = [f for f in run.findings() if f.severity >= Severity.WARN]
    assert loud and loud[0].rule_id == "TW201" and loud[0].first_step == 17, [(f.rule_id, f.first_step) for f in loud]
