"""Step-time overhead of run.watch under 2-process DDP on CPU (gloo), and the collectives it adds.

Usage: python benchmarks/ddp_overhead.py [--steps N]   (launches itself under torchrun)

For an MLP, rank 0 prints the median step-time ratio audited/bare at every step and at every 100th step
(interleaved blocks, same process) and the all_gather calls the watch added per audited step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
from torch import nn


def _block(model, opt, loss_fn, xs, ys) -> float:
    t0 = time.perf_counter()
    for x, y in zip(xs, ys, strict=True):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / len(xs)


def worker(steps: int, repeats: int) -> None:
    from torchwitness.run import Run

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    xs, ys = [torch.randn(64, 64) for _ in range(steps)], [torch.randint(0, 10, (64,)) for _ in range(steps)]
    _block(model, opt, loss_fn, xs, ys)  # warm-up
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for every in (1, 100):
            bare, audited, exchanges, audited_steps = [], [], 0, 0
            for i in range(repeats):
                bare.append(_block(model, opt, loss_fn, xs, ys))
                with Run(f"{tmp}/run-{every}-{i}") as run:
                    watch = run.watch(model, opt, loss_fn=loss_fn, every_n_steps=every, first_steps=0)
                    audited.append(_block(model, opt, loss_fn, xs, ys))
                    exchanges += watch.cross_rank.collectives
                    audited_steps += sum(1 for s in range(steps) if s % every == 0)
                    watch.close()
            results[every] = (statistics.median(audited) / statistics.median(bare), exchanges / audited_steps)
    if dist.get_rank() == 0:
        for every, (ratio, per_step) in results.items():
            print(f"audit every {every:>3} step(s): step time {ratio:.3f}x bare; {per_step:.2f} all_gather per "
                  "audited step (plus DDP's own all-reduce)")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.repeats)
        return
    os.environ.setdefault("TORCHWITNESS_KEY_DIR", tempfile.mkdtemp(prefix="tw-bench-keys-"))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
                    "--rdzv_endpoint=127.0.0.1:0", __file__, "--worker", f"--steps={args.steps}",
                    f"--repeats={args.repeats}"], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


if __name__ == "__main__":
    main()
