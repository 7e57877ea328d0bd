"""Provenance for erasure at 100k subjects: per-step cost, per-epoch hashing, query time, storage overhead.

    python benchmarks/provenance.py                    # 100k subjects, 3 epochs, batch 256 (~30 s)
    python benchmarks/provenance.py --subjects 1000000

The per-step cost is compared with one training step of the demo MLP (batch 256) timed in the same process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import torchwitness as tw
from torchwitness.controls.provenance import ProvenanceRecorder, side_index
from torchwitness.controls.provenance_query import query


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _train_step(batch: int) -> float:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(104, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 104), torch.randint(0, 2, (batch,))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(100):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        best = min(best, (time.perf_counter() - t0) / 100)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("TORCHWITNESS_KEY_DIR", tempfile.mkdtemp())
    torch.set_num_threads(1)  # the small MLP step is fastest and steadiest on one thread
    n = args.subjects
    subjects = [f"subject-{i:07d}" for i in range(n)]
    rng = np.random.default_rng(0)
    epochs = [torch.from_numpy(rng.permutation(n)).split(args.batch) for _ in range(args.epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        t_train = _train_step(args.batch)
        with tw.Run(root) as run:
            t0 = time.perf_counter()
            prov = ProvenanceRecorder(run, subjects)
            t_setup = time.perf_counter() - t0
            t_steps = t_epochs = 0.0
            step = 0
            for epoch, batches in enumerate(epochs):
                t0 = time.perf_counter()
                for rows in batches:
                    prov.record_batch(step, rows)
                    step += 1
                t_steps += time.perf_counter() - t0
                t0 = time.perf_counter()
                prov.end_epoch(epoch)
                t_epochs += time.perf_counter() - t0
            run.flush()
            records = sum(len(line) for seg in sorted((root / "records").glob("*.jsonl"))
                          for line in seg.read_bytes().splitlines() if b'"kind":"data.provenance"' in line)
        times = []
        for i in (0, n // 2, n - 1):
            t0 = time.perf_counter()
            answer = query(root, subjects[i])
            times.append(time.perf_counter() - t0)
            assert len(answer.epochs) == args.epochs and answer.verified_steps == args.epochs
        index = _size(side_index(root))
        personal = _size(root / "private" / "personal.sqlite")
    print(f"subjects {n:,}, epochs {args.epochs}, batch {args.batch}, steps {step:,}")
    print(f"set-up (commit every subject once): {t_setup:.2f} s")
    print(f"per step: record_batch {1e6 * t_steps / step:.1f} us = {100 * t_steps / step / t_train:.2f} % of a "
          f"demo MLP training step ({t_train * 1e3:.2f} ms)")
    print(f"per epoch: hashing {step // args.epochs:,} subject-set roots {t_epochs / args.epochs:.2f} s")
    print(f"query (verify included): max {max(times) * 1e3:.0f} ms over 3 subjects")
    print(f"storage: ledger data.provenance {records / 1e6:.2f} MB ({records / step:.0f} B/step), "
          f"side index {index / 1e6:.2f} MB ({index / n:.1f} B/subject incl. {args.epochs} epochs), "
          f"personal store {personal / 1e6:.2f} MB (shared with every other personal record)")


if __name__ == "__main__":
    main()
