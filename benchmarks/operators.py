"""Cost of an audited step under the operator inventory, against the same step bare (same process).

    python benchmarks/operators.py               # MLP, batch 256, 50 steps each
    python benchmarks/operators.py --width 1024 --steps 100
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

import torchwitness as tw
from torchwitness.probes.operators import OperatorInventory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, args.width), nn.ReLU(), nn.Dropout(0.1), nn.Linear(args.width, args.width),
                          nn.ReLU(), nn.Linear(args.width, 10))
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.randn(args.batch, 64), torch.randint(0, 10, (args.batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    bare = (time.perf_counter() - start) / args.steps
    with tempfile.TemporaryDirectory() as d, tw.Run(d, seed=0) as run:
        inventory = OperatorInventory(run)
        start = time.perf_counter()
        for i in range(args.steps):
            with inventory.step(i):
                step()
        audited = (time.perf_counter() - start) / args.steps
        ops = inventory.summary()["total"]
    print(f"bare step {bare * 1e3:.2f} ms; audited step {audited * 1e3:.2f} ms ({ops} aten ops); "
          f"audited/bare = {audited / bare:.2f} (only audited steps pay this; every=N spreads it)")


if __name__ == "__main__":
    main()
