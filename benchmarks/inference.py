"""Serving overhead of InferenceRecorder against the bare model, in one process with interleaved repeats.

Usage: python benchmarks/inference.py [--requests N] [--repeats K]

Prints, for batch 32 and batch 1, the median over K interleaved repeats of the time per request with and without
the recorder, as wall-clock time and as the process's CPU time (all threads, the ledger's writer included). On a
loaded machine the wall clock mostly measures waiting for a core (each microsecond of work takes several), while
CPU time is what the work itself costs: on an idle machine the two agree. Target: batch 1 within +15 us per
request with every input committed (the default); at batch 32 that commits 13 KB per request (HMAC ~9 us).
The bare path is ``softmax(model(x))`` under inference mode, the same arithmetic the recorder returns.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from torch import nn

from torchwitness.probes.inference import InferenceRecorder
from torchwitness.run import Run


def _demo_model(d: int = 104) -> nn.Module:
    return nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2)).eval()


def _time(fn, x: torch.Tensor, n: int, drain=None) -> tuple[float, float]:
    """(wall, CPU) seconds per call; ``drain`` (the recorder's) is timed too, so deferred work counts against the
    recorder."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn(x)
    if drain is not None:
        drain()
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sample-every", type=int, default=1,
                        help="commit every k-th request's input (every decision is recorded regardless)")
    parser.add_argument("--fingerprint", choices=("request", "row", "none"), default="request",
                        help="input evidence per committed request")
    parser.add_argument("--no-outputs", action="store_true", help="leave predictions and confidences out")
    args = parser.parse_args()
    os.environ.setdefault("TORCHWITNESS_KEY_DIR", tempfile.mkdtemp(prefix="tw-bench-keys-"))
    torch.set_num_threads(1)
    model = _demo_model()

    def bare(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(model(x), dim=-1)

    with tempfile.TemporaryDirectory() as tmp, Run(f"{tmp}/run", queue_size=1_000_000) as run:
        serve = InferenceRecorder(model, run, sample_every=args.sample_every, fingerprint=args.fingerprint,
                                  outputs=not args.no_outputs)

        def drain() -> None:  # record the open window and wait for the writer thread to finish it
            serve.flush()
            run.flush()
        results = {}
        n = args.requests // args.repeats or 1
        for batch in (32, 1):
            x = torch.randn(batch, 104)
            for fn in (bare, serve):  # warm-up
                _time(fn, x, 200)
            b, r = [], []
            for _ in range(args.repeats):  # interleaved so drift in machine load hits both alike
                b.append(_time(bare, x, n))
                r.append(_time(serve, x, n, drain))
            results[batch] = [(statistics.median(t[k] for t in b), statistics.median(t[k] for t in r))
                              for k in (0, 1)]
            run.flush()
    print(f"every decision recorded ({'with' if not args.no_outputs else 'without'} outputs), input evidence: "
          f"{args.fingerprint}" + (f", every {args.sample_every} request(s)" if args.fingerprint != "none" else "")
          + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; medians of {args.repeats} "
          f"interleaved repeats of {n} requests")
    for name, k in (("wall", 0), ("CPU ", 1)):
        (b32, r32), (b1, r1) = results[32][k], results[1][k]
        print(f"{name}: batch 32 bare {b32 * 1e6:7.1f} us, recorded {r32 * 1e6:7.1f} us, {r32 / b32:.3f}x "
              f"| batch 1 bare {b1 * 1e6:6.1f} us, recorded {r1 * 1e6:6.1f} us, "
              f"+{(r1 - b1) * 1e6:.1f} us per request (target <= +15 us)")


if __name__ == "__main__":
    main()
