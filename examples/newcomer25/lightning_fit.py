"""Step 3a: a LightningModule on MNIST crops, fitted with the documented WitnessCallback."""
import sys
import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from nc25_data import mnist
from torch import nn

import torchwitness as tw
from torchwitness.integrations.lightning import WitnessCallback


class LitDigits(pl.LightningModule):
    def __init__(self, lr=3e-3, freeze_wrong=False):
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU())
        self.classifier = nn.Linear(16 * 5 * 5, 10)
        if freeze_wrong:
            self.body.requires_grad = False          # planted: a no-op freeze

    def training_step(self, batch, idx):
        x, y = batch
        logits = self.classifier(self.body(x).flatten(1))
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, idx):
        x, y = batch
        acc = (self.classifier(self.body(x).flatten(1)).argmax(1) == y).float().mean()
        self.log("val_acc", acc)

    def test_step(self, batch, idx):
        x, y = batch
        self.log("test_acc", (self.classifier(self.body(x).flatten(1)).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def fit(run_dir, freeze_wrong=False, steps=40):
    torch.manual_seed(0)
    x, y = mnist(1536)
    ds = torch.utils.data.TensorDataset(x[:1280], y[:1280])
    val = torch.utils.data.TensorDataset(x[1280:], y[1280:])
    tl = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True)
    vl = torch.utils.data.DataLoader(val, batch_size=128)
    with warnings.catch_warnings(), tw.Run(run_dir) as run:
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", val_check_interval=20,
                             callbacks=[WitnessCallback(run)])
        trainer.fit(LitDigits(freeze_wrong=freeze_wrong), tl, vl)
    return run


def fit_then_evaluate(run_dir, steps=12):
    """fit, then trainer.validate and trainer.test on held-out digits, all in one Run."""
    torch.manual_seed(0)
    x, y = mnist(1024)
    tl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:768], y[:768]), batch_size=64, shuffle=True)
    held_out = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[768:], y[768:]), batch_size=128)
    with warnings.catch_warnings(), tw.Run(run_dir) as run:
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", callbacks=[WitnessCallback(run)])
        module = LitDigits()
        trainer.fit(module, tl)
        trainer.validate(module, held_out, verbose=False)
        trainer.test(module, held_out, verbose=False)
    return run


if __name__ == "__main__":
    run = fit(sys.argv[1] if len(sys.argv) > 1 else "runs/lit", freeze_wrong=len(sys.argv) > 2)
    for f in run.findings():
        print(f.rule_id, f.severity.name, f.first_step, f.location, "|", f.message)
