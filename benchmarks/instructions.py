"""Instructions the watch adds to a training step, counted by valgrind: a steady check where timings are noisy.

On a shared machine step-time ratios swing by several percent between runs, more than most single changes to the
probes are worth. Instruction counts do not depend on the neighbours: this script runs the loop of
``benchmarks/overhead.py`` under ``valgrind --tool=cachegrind --cache-sim=no`` twice per mode, once with a few
steps and once with ``--steps`` more, and divides the difference by ``--steps``, so start-up (importing torch is
~10 G instructions) cancels out. What would otherwise land in one run and not the other is kept out of the
counted steps: the garbage collector is frozen and disabled, and the ledger writes no time-based checkpoints.
Instructions are not time (a cache miss costs more than an add, and the watch's Python runs with cold caches
after the step's own work), so use this to compare two versions of the watch, and ``overhead.py`` for the
ratios the README reports.

    python benchmarks/instructions.py                      # MLP, bare/thinned/statistical, ~15 minutes on 2 cores
    python benchmarks/instructions.py --model deep_mlp --steps 20
    PYTHONPATH=/path/to/other/src python benchmarks/instructions.py   # the same for another checkout

Modes: ``bare`` (no watch), ``thinned`` (every step audited, statistical probes spaced out: the steady state
of dense audits after its warm-up, which alternates steps with and without row fingerprints, so use an even
``--steps``) and ``statistical`` (every probe at every step).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

import torchwitness as tw

sys.path.insert(0, str(Path(__file__).parent))
from overhead import MODELS, _step  # the loop whose overhead this counts

STATISTICS_EVERY = {"bare": None, "thinned": 4, "statistical": 1}
_WARM = 12  # untimed steps of a new watch: its first 8 audits are complete, then the spacing settles


def child(model_name: str, mode: str, steps: int) -> None:
    """The counted loop: warm-up, then ``steps`` steps with the garbage collector out of the way."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, x, y = MODELS[model_name]()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    crit = nn.CrossEntropyLoss()
    # No time-based checkpoints: under valgrind a step takes a second, and a checkpoint (a Merkle root, a
    # signature) falling inside the counted steps in one run and not in the other was the largest variation.
    with tempfile.TemporaryDirectory() as d, tw.Run(Path(d) / "run", checkpoint_seconds=1e9,
                                                    checkpoint_every=10**9) as run:
        every = STATISTICS_EVERY[mode]
        if every is not None:
            run.watch(model, opt, loss_fn=crit, every_n_steps=1, first_steps=0, statistics_every=every)
        for _ in range(_WARM):
            _step(model, opt, crit, x, y)
        run.flush()
        gc.collect()
        gc.freeze()
        gc.disable()
        for _ in range(steps):
            _step(model, opt, crit, x, y)
        run.flush()


def count(model_name: str, mode: str, steps: int) -> int:
    """Instructions of a whole child process under cachegrind."""
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", sys.executable,
           __file__, "--child", model_name, mode, str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"valgrind run failed ({' '.join(cmd[-4:])}): {done.stderr.strip().splitlines()[-1:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--modes", default="bare,thinned,statistical")
    parser.add_argument("--steps", type=int, default=40, help="counted steps (the difference of two runs)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt install valgrind): this benchmark counts instructions with it")
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in STATISTICS_EVERY]
    if unknown or args.steps < 1:
        sys.exit(f"unknown mode(s) {unknown} (choose from {sorted(STATISTICS_EVERY)}) or --steps < 1")
    jobs = [(m, n) for m in modes for n in (2, 2 + args.steps)]
    print(f"torch {torch.__version__}, {args.model}, {len(jobs)} valgrind runs (two at a time), "
          f"{args.steps} counted steps each", flush=True)
    with ThreadPoolExecutor(max_workers=2) as pool:  # each valgrind run is single-threaded
        counts = dict(zip(jobs, pool.map(lambda job: count(args.model, *job), jobs), strict=True))
    per_step = {m: (counts[(m, 2 + args.steps)] - counts[(m, 2)]) / args.steps for m in modes}
    base = per_step.get("bare")
    print(f"{'mode':12s} {'M instructions/step':>20s} {'added by the watch':>20s}")
    for m in modes:
        added = f"{(per_step[m] - base) / 1e6:+.3f} M" if base is not None and m != "bare" else ""
        print(f"{m:12s} {per_step[m] / 1e6:20.3f} {added:>20s}")


if __name__ == "__main__":
    main()
