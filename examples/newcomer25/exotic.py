"""Step 5: healthy but less common loops: gradient accumulation, dict outputs, loss inside the model (labels=),
bf16 autocast on CPU. None of them has a bug; a WARN or ERROR here is a false alarm."""
import sys

import torch
import torch.nn.functional as F
from nc25_data import mnist
from torch import nn

import torchwitness as tw


class DigitNet(nn.Module):
    """Returns a dict like many research codebases; computes its own loss when given labels (HF style)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(16 * 16, 10)

    def forward(self, pixel_values, labels=None):
        logits = self.fc(self.conv(pixel_values).flatten(1))
        out = {"logits": logits, "embedding": logits.detach()}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits, labels)
        return out


def loop(run_dir, mode, steps=60, seed=0, bug=None):
    """bug: None, "nan" (a NaN pixel from step 30 on), "no_zero_grad", or "probs" (softmax into the loss)."""
    torch.manual_seed(seed)
    x, y = mnist(4096)
    model = DigitNet()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    accum = 4 if mode == "accum" else 1
    micro = 32
    with tw.Run(run_dir) as run:
        run.watch(model, opt)
        i = 0
        for step in range(steps):
            if bug != "no_zero_grad":
                opt.zero_grad(set_to_none=True)
            for _ in range(accum):
                xb, yb = x[i:i + micro], y[i:i + micro]
                i = (i + micro) % (len(x) - micro)
                if bug == "nan" and step >= 30:
                    xb = xb.clone()
                    xb[1, 0, 5, 5] = float("nan")
                if mode == "bf16":
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        out = model(xb, labels=yb)
                    loss = out["loss"]
                elif mode == "dict":
                    out = model(xb)
                    logits = out["logits"].softmax(-1) if bug == "probs" else out["logits"]
                    loss = F.cross_entropy(logits, yb)
                else:   # "labels" and "accum": the model computes its loss
                    loss = model(pixel_values=xb, labels=yb)["loss"]
                (loss / accum).backward()
            opt.step()
    return run


if __name__ == "__main__":
    for mode in sys.argv[2:] or ["accum", "dict", "labels", "bf16"]:
        run = loop(f"{sys.argv[1]}_{mode}", mode)
        print(mode, [(f.rule_id, f.severity.name, f.first_step, f.location, f.message) for f in run.findings()])
