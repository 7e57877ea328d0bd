"""Launched by torchrun in tests: one healthy and three buggy DDP scenarios, each in its own run folder.

Usage: ddp_scenarios.py OUT  (writes OUT/<scenario>/ with one shard per rank)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _launch import finish  # torchrun puts this script's folder on sys.path
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import torchwitness as tw

STEPS = 6


def _data(n: int = 256) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _model(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(8, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [nn.ReLU(), nn.Linear(16, 2)]
    return nn.Sequential(*layers)


def scenario(out: Path, name: str) -> None:
    rank = dist.get_rank()
    ds = _data()
    distributed = name != "sampler_not_distributed"
    sampler = DistributedSampler(ds, shuffle=True, seed=0) if distributed else None
    loader = DataLoader(ds, batch_size=32, sampler=sampler, shuffle=False)
    model = nn.parallel.DistributedDataParallel(_model(bn=name == "buffer_divergence"),
                                                broadcast_buffers=name != "buffer_divergence")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    with tw.Run(out / name) as run:
        run.watch(model, opt, loss_fn=loss_fn, every_n_steps=1, first_steps=STEPS)
        for step, (x, y) in enumerate(loader):
            if step == STEPS:
                break
            if name == "buffer_divergence":
                x = x + rank  # ranks see different input statistics; unsynchronised BN stats drift apart
            if name == "nan_one_rank" and rank == 1 and step == 3:
                x = x.clone()
                x[0, 0] = float("nan")
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()


def fsdp(out: Path) -> None:
    """FSDP2 ``fully_shard`` on gloo: an audited run, and sharded statistics beside a gathered oracle."""
    import json

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from torchwitness.probes.sharded import sharded_stats

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))
    fully_shard(model, mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(100 + dist.get_rank())
    with tw.Run(out / "fsdp") as run:
        run.watch(model, opt, every_n_steps=2, first_steps=2)
        for _ in range(STEPS):
            x = torch.randn(32, 6, generator=gen)
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            grads = [p.grad for p in model.parameters()]
            opt.step()
    got = sharded_stats(grads + list(model.parameters()))
    full = [t.full_tensor().double() for t in grads + list(model.parameters())]  # the oracle gathers; we do not
    oracle = {"norm": [float(t.norm()) for t in full], "max_abs": [float(t.abs().max()) for t in full],
              "numel": [float(t.numel()) for t in full], "nonfinite": [0.0] * len(full)}
    (out / "fsdp" / f"stats-{dist.get_rank()}.json").write_text(json.dumps({"got": got, "oracle": oracle}))


def main(out: str) -> None:
    dist.init_process_group("gloo")
    for name in ("healthy", "sampler_not_distributed", "buffer_divergence", "nan_one_rank"):
        scenario(Path(out), name)
        dist.barrier()
    fsdp(Path(out))
    dist.barrier()
    finish()


if __name__ == "__main__":
    main(sys.argv[1])
