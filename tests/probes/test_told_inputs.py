"""What the watch learns from inputs and targets handed to it in unusual ways: targets told with ``observe`` before
the loss call, a label among a second input's features, a training batch measured again after its step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import torchwitness as tw
from torchwitness.rules import Severity


def _serious(run: tw.Run) -> set[str]:
    return {f.rule_id for f in run.findings() if f.severity >= Severity.WARN}


def test_targets_told_before_the_loss_call_are_counted_as_labels(tmp_path):
    # Lightning's callback tells the targets at batch start (observe, no class count): the loss call that follows
    # knows the classes, so shuffled labels are still judged against the label frequencies (TW109).
    torch.manual_seed(0)
    x = torch.randn(2048, 16)
    y = (x @ torch.randn(16, 4)).argmax(1)[torch.randperm(2048)]
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    with tw.Run(tmp_path / "run") as run:
        w = run.watch(model, opt)
        for i in range(150):
            xb, yb = x[i % 64 * 32:(i % 64 + 1) * 32], y[i % 64 * 32:(i % 64 + 1) * 32]
            w.begin_forward(xb)
            w.observe(targets=yb)
            loss = F.cross_entropy(model(xb), yb)
            w.end_forward(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert w.history.label_hist is not None
    assert "TW109" in _serious(run)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.codes = nn.Embedding(10, 4)
        self.body = nn.Sequential(nn.Linear(4 + 6, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, codes: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([self.codes(codes), numeric], 1))


def test_a_label_among_a_second_inputs_features_is_a_leak(tmp_path):
    torch.manual_seed(0)
    codes = torch.randint(0, 10, (1024,))
    numeric = torch.randn(1024, 6)
    y = (numeric[:, 0] + torch.randn(1024) > 0).long()
    numeric[:, 5] = y.float() * 2 - 1  # the label, left among the numeric columns
    model = _TwoInputs()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    with tw.Run(tmp_path / "run") as run:
        run.watch(model, opt)
        for i in range(40):
            s = slice(i % 32 * 32, (i % 32 + 1) * 32)
            opt.zero_grad()
            F.cross_entropy(model(codes[s], numeric[s]), y[s]).backward()
            opt.step()
    assert "TW209" in _serious(run)


def test_the_batch_just_trained_on_measured_again_is_no_evaluation(tmp_path):
    # A training-accuracy metric: eval(), a no-grad forward of the step's own batch, train() again. Not an
    # evaluation set that overlaps the training data (TW208); a real validation split stays judged.
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    with tw.Run(tmp_path / "run") as run:
        run.watch(model, opt, every_n_steps=1)
        for i in range(60):
            xb, yb = x[i % 12 * 32:(i % 12 + 1) * 32], y[i % 12 * 32:(i % 12 + 1) * 32]
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                (model(xb).argmax(1) == yb).float().mean()
                if i % 10 == 9:
                    model(x[384:])  # the held-out rows
            model.train()
    assert _serious(run) == set()
