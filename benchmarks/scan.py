"""Static scan of the installed torch package: wall time, files/s, findings per rule.

The bare baseline, measured in the same process, is ``ast.parse`` of every file (no rules, one process): the
ratio shows what indexing plus ten rules cost on top of parsing, and what parallel workers win back.

    python benchmarks/scan.py                 # the whole torch package (acceptance: < 60 s)
    python benchmarks/scan.py --path torch/nn --jobs 1
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import resource
import time
from pathlib import Path

import torch

from torchwitness.rules.static import scan_paths


def parse_only(root: Path) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    for p in root.rglob("*.py"):
        with contextlib.suppress(SyntaxError):
            ast.parse(p.read_bytes())
        n += 1
    return time.perf_counter() - start, n


def _cpu_seconds() -> float:
    # CPU time of this process and its finished workers: stable when other jobs share the machine, unlike wall time
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default=None, help="folder to scan (default: the installed torch package); a path "
                    "starting with 'torch/' is taken inside the installed package")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes (0: one per CPU)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the parse-only baseline")
    args = ap.parse_args()
    torch_dir = Path(torch.__file__).parent
    root = torch_dir if args.path is None else (
        torch_dir.parent / args.path if args.path.startswith("torch/") else Path(args.path))
    cpu_before = _cpu_seconds()
    result = scan_paths([root], jobs=args.jobs or None)
    cpu = _cpu_seconds() - cpu_before
    print(f"scanned {root}: {len(result.files)} files in {result.duration_s:.1f} s wall, {cpu:.1f} s CPU "
          f"({len(result.files) / result.duration_s:.0f} files/s, {args.jobs or os.cpu_count()} jobs), "
          f"{result.summary()['parsed']} parsed (the others hold no rule's trigger text), "
          f"{len(result.errors)} unparseable")
    print("findings per rule:", json.dumps(result.counts))
    if not args.no_baseline:
        cpu_before = _cpu_seconds()
        base, n = parse_only(root)
        print(f"baseline ast.parse only, 1 process: {n} files in {base:.1f} s wall, "
              f"{_cpu_seconds() - cpu_before:.1f} s CPU; "
              f"scan/baseline = {result.duration_s / base:.2f}")


if __name__ == "__main__":
    main()
