"""Step 1b: the same CNN handed to `torchwitness audit` as a factory (docs/guide/audits.md)."""
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnn_loop import SmallCNN
from nc25_data import mnist


def setup():
    torch.manual_seed(0)
    x, y = mnist(1024)
    model = SmallCNN()
    return {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=2e-3),
            "loss_fn": nn.CrossEntropyLoss(),
            "batches": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64,
                                                   shuffle=True)}


def setup_decay():
    """Planted: weight decay 0.1 on BatchNorm scales and biases too."""
    parts = setup()
    parts["optimizer"] = torch.optim.AdamW(parts["model"].parameters(), lr=2e-3, weight_decay=0.1)
    return parts


def setup_labels():
    """A model computing its own loss from labels= and returning a dict; batches are dicts (HF style)."""
    from exotic import DigitNet
    torch.manual_seed(0)
    x, y = mnist(1024)
    model = DigitNet()
    batches = [{"pixel_values": x[i:i + 32], "labels": y[i:i + 32]} for i in range(0, 1024, 32)]
    return {"model": model, "optimizer": torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0),
            "batches": batches}
