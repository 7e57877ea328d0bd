"""Step 1: plain PyTorch CNN on an MNIST subsample, watched."""
import sys

import torch
from nc25_data import mnist
from torch import nn

import torchwitness as tw


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def train(run_dir, nan_at=None, epochs=2, seed=0):
    torch.manual_seed(seed)
    x, y = mnist(2048)
    xtr, ytr, xva, yva = x[:1536], y[:1536], x[1536:], y[1536:]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtr, ytr), batch_size=64, shuffle=True)
    model = SmallCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    crit = nn.CrossEntropyLoss()
    step = 0
    with tw.Run(run_dir) as run:
        run.log_params({"lr": 2e-3, "epochs": epochs, "batch_size": 64})
        run.watch(model, opt, loss_fn=crit)
        for epoch in range(epochs):
            model.train()
            for xb, yb in loader:
                if nan_at is not None and step >= nan_at:
                    xb = xb.clone()
                    xb[0, 0, 3, 3] = float("nan")   # planted: a corrupt image in the stream
                opt.zero_grad()
                loss = crit(model(xb), yb)
                loss.backward()
                opt.step()
                step += 1
            model.eval()
            with torch.no_grad():
                acc = (model(xva).argmax(1) == yva).float().mean().item()
            run.log_metrics({"train_loss": loss.item(), "val_acc": acc}, step=epoch)
        fingerprint = run.ledger.public_key.fingerprint
    return run, acc, fingerprint


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/cnn"
    nan_at = int(sys.argv[2]) if len(sys.argv) > 2 else None
    run, acc, fp = train(out, nan_at=nan_at)
    print("val_acc", round(acc, 3), "signer", fp)
    for f in run.findings():
        print(f.rule_id, f.severity.name, f.first_step, f.location, "|", f.message)
        for c in f.consequences:
            print("   ->", c.rule_id, c.message)
