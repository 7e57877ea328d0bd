"""``make demo-ddp``: the Adult classifier trained with DDP on 2 CPU processes (gloo), watched on every rank.

Run with ``torchrun --nproc_per_node=2 -m torchwitness.demo.ddp --out evidence``; then
``torchwitness verify evidence/adult-ddp`` checks every shard and the run-level checkpoints.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from torchwitness.demo.adult import load_adult
from torchwitness.report.from_run import run_findings
from torchwitness.run import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="evidence")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    run_dir = Path(args.out) / "adult-ddp"
    if rank == 0 and run_dir.exists():
        shutil.rmtree(run_dir)
    dist.barrier()
    data = load_adult()
    ds = TensorDataset(torch.from_numpy(data.train.features), torch.from_numpy(data.train.labels))
    sampler = DistributedSampler(ds, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=256, sampler=sampler)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(ds.tensors[0].shape[1], 64), nn.ReLU(), nn.Linear(64, 2)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    with Run(run_dir, seed=0) as run:
        run.log_params({"world_size": dist.get_world_size(), "epochs": args.epochs})
        watch = run.watch(model, opt, loss_fn=loss_fn, every_n_steps=20)
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            total = torch.zeros(())
            for x, y in loader:
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                total += loss.detach()
            run.log_metrics({"mean_batch_loss": total / len(loader)}, step=watch.step, epoch=epoch)
            run.sync()  # a run-level checkpoint over every rank's shard
            if rank == 0:
                print(f"epoch {epoch}: mean batch loss {float(total / len(loader)):.4f} (rank 0)", flush=True)
        collectives = watch.cross_rank.collectives if watch.cross_rank else 0
    dist.barrier()
    if rank == 0:
        findings = run_findings(run_dir)
        print(f"{len(findings)} finding(s) across ranks; {collectives} cross-rank exchanges added by the watch")
        print(f"run folder: {run_dir.resolve()}  (torchwitness verify {run_dir})")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
