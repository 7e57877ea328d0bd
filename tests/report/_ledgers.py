"""Ledgers written the way users write them, for the dossier consistency tests: the README quick start (and
the same run resumed), a demo-like run using the whole public vocabulary, and tiny Lightning and HF Trainer
runs recorded by the callbacks alone."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import torchwitness as tw
from torchwitness.controls.fairness import FairnessAccumulator, FairnessGate, GroupEncoder


def _data(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(n, generator=g) > 0).long()
    sex = np.where(np.arange(n) % 3 == 0, "F", "M")
    return x, y, sex


def quick_start(path: Path, *, epochs: int = 2) -> Path:
    """The README's quick start: Run, watch, log_params, log_metrics, a fairness gate."""
    x, y, sex = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    enc = GroupEncoder.fit({"sex": sex})
    with tw.Run(path) as run:
        run.watch(model, opt)
        run.log_params({"lr": 1e-2, "epochs": epochs, "batch_size": 64})
        gate = FairnessGate(run, metric="demographic_parity_difference", threshold=0.2, attributes=["sex"])
        step = 0
        for epoch in range(epochs):
            for i in range(0, len(x), 64):
                loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                run.log_metrics({"loss": loss.detach()}, step=step)
            acc = FairnessAccumulator(enc, min_group_size=10, reps=100)
            with torch.no_grad():
                acc.update(model(x).argmax(1), y, torch.from_numpy(enc.encode({"sex": sex})))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gate.evaluate(acc, epoch=epoch, step=step)
    return path


def resumed(path: Path) -> Path:
    """The quick start, then a second session that goes on training (Run(path, resume=True))."""
    quick_start(path, epochs=1)
    x, y, _ = _data(seed=1)
    model = nn.Linear(6, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tw.Run(path, resume=True) as run:
        run.watch(model, opt)
        for step in range(4):
            loss = nn.functional.cross_entropy(model(x[:64]), y[:64])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log_metrics({"loss": loss.detach()}, step=step)
    return path


def demo_like(path: Path, tmp: Path) -> Path:
    """Every vocabulary kind, as the demo writes them: params, two data sets, metrics, an evaluation, the model
    with its saved file, a fairness gate, a retention declaration."""
    import pandas as pd

    from torchwitness.controls.retention import declare_retention

    x, y, sex = _data()
    frame = pd.DataFrame(x.numpy(), columns=[f"f{i}" for i in range(6)])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    enc = GroupEncoder.fit({"sex": sex})
    with tw.Run(path, seed=0) as run:
        declare_retention(run, logs_days=365, role="provider")
        run.log_params({"model": "mlp-8", "optimizer": {"name": "AdamW", "lr": 1e-2}})
        run.log_dataset("synthetic", data=frame[:384], split="train", source="generated in the test",
                        license="CC0-1.0", personal_data=False)
        run.log_dataset("synthetic", data=frame[384:], split="test", personal_data=False)
        run.watch(model, opt, every_n_steps=4)
        for epoch in range(2):
            for i in range(0, 384, 64):
                loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
                opt.zero_grad()
                loss.backward()
                opt.step()
            run.log_metrics({"train_loss": loss.detach()}, step=(epoch + 1) * 6, epoch=epoch)
        with torch.no_grad():
            pred = model(x[384:]).argmax(1)
        run.log_eval({"accuracy": (pred == y[384:]).float().mean(), "error_rate": (pred != y[384:]).float().mean()},
                     split="test", dataset="synthetic", rows=128)
        acc = FairnessAccumulator(enc, min_group_size=10, reps=100)
        acc.update(pred, y[384:], torch.from_numpy(enc.encode({"sex": sex[384:]})))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            FairnessGate(run, metric="demographic_parity_difference", threshold=0.2, attributes=["sex"]).evaluate(
                acc, split="test")
        torch.save(model.state_dict(), tmp / "model.pt")
        run.log_model("mlp-8", model=model, files=[tmp / "model.pt"], intended_use="Tests only.",
                      limitations="Synthetic data.")
    return path
