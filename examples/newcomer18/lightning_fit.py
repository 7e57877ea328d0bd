"""A real lightning.Trainer fit (with validation) under torchwitness' Lightning WitnessCallback.

    python examples/newcomer18/lightning_fit.py [--bug eval_mode | --train-acc] [--run runs/lit]

The bug: a callback that measures the training batch's accuracy in on_train_batch_end switches the module to
eval mode and never switches it back, so dropout is off for every later training step. --train-acc runs the
same callback done right (it switches back to train mode): a healthy run. Other bugs: lr_100x (AdamW at 0.1),
shuffled_labels (training labels permuted apart from their rows), nan_rows (a NaN feature in every row that the
unshuffled loader serves from step 40 on).
Written from docs/topics/frameworks.md and docs/guide/audits.md only.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

import torchwitness as tw
from torchwitness.integrations.lightning import WitnessCallback

BUGS = ("eval_mode", "lr_100x", "shuffled_labels", "nan_rows")


class Classifier(pl.LightningModule):
    def __init__(self, lr: float = 1e-3, dropout: float = 0.3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 4))
        self.loss_fn = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, idx):
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss_fn(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


class TrainAccuracy(pl.Callback):
    """Accuracy of each training batch, measured in eval mode; the bug forgets pl_module.train() after it."""

    def __init__(self, restore_train_mode: bool) -> None:
        self.restore_train_mode = restore_train_mode

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.eval()
        with torch.no_grad():
            x, y = batch
            pl_module.log("train_acc", (pl_module(x).argmax(1) == y).float().mean())
        if self.restore_train_mode:
            pl_module.train()


def make_loaders(seed: int = 0, bug: str | None = None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 16, generator=g)
    w = torch.randn(16, 4, generator=g)
    y = (x @ w + 0.5 * torch.randn(2048, 4, generator=g)).argmax(1)
    x_train, y_train = x[:1536].clone(), y[:1536].clone()
    if bug == "shuffled_labels":
        y_train = y_train[torch.randperm(len(y_train), generator=g)]
    if bug == "nan_rows":
        x_train[40 * 32 :, 3] = float("nan")
    train = torch.utils.data.TensorDataset(x_train, y_train)
    val = torch.utils.data.TensorDataset(x[1536:], y[1536:])
    return (
        torch.utils.data.DataLoader(train, batch_size=32, shuffle=bug != "nan_rows"),
        torch.utils.data.DataLoader(val, batch_size=128),
    )


def main(run_dir: str | Path, bug: str | None = None, epochs: int = 3, seed: int = 0, train_acc: bool = False):
    torch.manual_seed(seed)
    train_loader, val_loader = make_loaders(seed, bug)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    callbacks: list[pl.Callback] = []
    if bug == "eval_mode" or train_acc:
        callbacks.append(TrainAccuracy(restore_train_mode=bug != "eval_mode"))
    with warnings.catch_warnings(), tw.Run(run_dir) as run:
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=10,
            callbacks=[*callbacks, WitnessCallback(run)],
        )
        trainer.fit(Classifier(lr=1e-1 if bug == "lr_100x" else 1e-3), train_loader, val_loader)
        signer = run.ledger.public_key.fingerprint
    return run, signer


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", choices=BUGS)
    parser.add_argument("--train-acc", action="store_true")
    parser.add_argument("--run", default=None)
    args = parser.parse_args()
    run, signer = main(args.run or Path(tempfile.mkdtemp()) / "run", args.bug, train_acc=args.train_acc)
    for f in run.findings():
        print(
            f.rule_id, f.severity.name, f.first_step, f.location, f.message, "->", [c.rule_id for c in f.consequences]
        )
    print("signer:", signer)
