"""The Lightning callback, with real (tiny, CPU) ``Trainer.fit`` runs."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import torchwitness as tw
from torchwitness.ledger import iter_records
from torchwitness.rules import Severity

pl = pytest.importorskip("lightning.pytorch")
from torchwitness.integrations import lightning as tw_lightning  # noqa: E402


def _loaders() -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(320, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    train = torch.utils.data.TensorDataset(x[:256], y[:256])
    val = torch.utils.data.TensorDataset(x[256:], y[256:])
    return (torch.utils.data.DataLoader(train, batch_size=32, shuffle=True),
            torch.utils.data.DataLoader(val, batch_size=32))


class Classifier(pl.LightningModule):
    def __init__(self, *, softmax_into_ce: bool = False, optimise_first_layer_only: bool = False,
                 via_forward: bool = False) -> None:
        super().__init__()
        self.via_forward = via_forward
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))
        self.loss_fn = nn.CrossEntropyLoss()
        self.softmax_into_ce, self.first_only = softmax_into_ce, optimise_first_layer_only
        self.grad_norms: list[float] = []  # the oracle for what the watch records

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        out = self(x) if self.via_forward else self.net(x)
        return self.loss_fn(out.softmax(-1) if self.softmax_into_ce else out, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
        self.log("val_loss", self.loss_fn(self.net(batch[0]), batch[1]))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.net[0].parameters() if self.first_only else self.parameters()
        return torch.optim.AdamW(params, lr=1e-3)


def _fit(module: pl.LightningModule, callback: pl.Callback, steps: int = 12) -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                         val_check_interval=6, num_sanity_val_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, *_loaders())


@pytest.mark.parametrize("via_forward", [False, True])
def test_healthy_fit_is_quiet_and_records_true_gradients(tmp_path: Path, via_forward: bool) -> None:
    module = Classifier(via_forward=via_forward)
    with tw.Run(tmp_path / "run") as run:
        _fit(module, tw_lightning.WitnessCallback(run, every_n_steps=4, first_steps=2))
        loud = [f for f in run.findings() if f.severity >= Severity.WARN]
    assert loud == []
    audits = {a["step"]: a for r in iter_records(tmp_path / "run", kinds={"train.audit"})
              for a in r["data"]["steps"]}  # audited-step summaries, batched into records
    assert sorted(audits) == [0, 1, 4, 8]  # first 2 steps, then every 4th; validation is never a step
    for step, data in audits.items():  # gradients judged are this step's, not the previous one's
        assert data["grad_norm"] == pytest.approx(module.grad_norms[step], rel=1e-4)
        assert data["loss"] is not None
        assert data["forwards"] == 1  # a training_step calling self(x) is not counted twice


@pytest.mark.parametrize(("bug", "rule"), [({"softmax_into_ce": True}, "TW150"),
                                           ({"optimise_first_layer_only": True}, "TW301")])
def test_buggy_fit_is_caught_and_recorded(tmp_path: Path, bug: dict, rule: str) -> None:
    _fit(Classifier(**bug), tw_lightning.WitnessCallback(path=tmp_path / "run", every_n_steps=5), steps=6)
    found = {r["data"]["rule_id"]: r["data"]["severity"] for r in iter_records(tmp_path / "run", kinds={"finding"})}
    assert found.get(rule) == "error"
    assert [r["data"]["status"] for r in iter_records(tmp_path / "run", kinds={"run.end"})] == ["ok"]
    assert tw.verify_run(tmp_path / "run").uncovered == 0  # raises if the ledger does not verify


def test_missing_lightning_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(ImportError, match=r"pip install 'torchwitness\[lightning\]'"):
        tw_lightning._build()
