"""Launched by torchrun in tests: a tiny DDP training loop recorded through Run on every rank."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from _launch import finish  # torchrun puts this script's folder on sys.path
from torch import nn

import torchwitness as tw


def main(out: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with tw.Run(out, config={"world": dist.get_world_size()}) as run:
        for step in range(20):
            x = torch.randn(8, 4)
            loss = model(x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.record("train.step", {"loss": loss.detach()}, step=step)
            if step == 9:
                run.sync()
    finish()


if __name__ == "__main__":
    main(sys.argv[1])
