"""Ledger speed: caller-side cost of run.record, append throughput, verify throughput vs raw SHA-256.

Usage: python benchmarks/ledger.py [--records N] [--million]

Prints, for 200-byte and 2 KB records: the median cost of ``run.record`` in the caller's thread, end-to-end append
throughput (first append to everything on disk and signed), verify throughput, and verify as a percentage of a
raw ``hashlib.sha256`` loop over the same record bytes in the same process (a fresh process without torch, as
``torchwitness verify`` runs). The ``+witness`` row records 200-byte records with a witness configured: a
``torchwitness witness serve`` process on 127.0.0.1 asked to cosign every checkpoint (one per 1000 records) from
the ledger's background thread; it also reports how many checkpoints were cosigned. ``--million`` also writes and
verifies one million 200-byte records.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torchwitness.run import Run


def _payload(target_bytes: int) -> dict:
    # The envelope (v, seq, run, rank, ts, kind, step) is about 120 bytes; the rest is data.
    return {"loss": 0.123456, "grad_norm": 1.5, "lr": 0.001, "note": "x" * max(0, target_bytes - 190)}


VERIFY_TIMING = """
import hashlib, json, sys, time
from pathlib import Path
from torchwitness.ledger import verify_run
from torchwitness.ledger.layout import Layout
lines = [line for seg in Layout(Path(sys.argv[1])).segments() for line in seg.read_bytes().split(b"\\n")[:-1]]
sha = hashlib.sha256
raw = verify = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    for line in lines:
        sha(line).digest()
    raw = min(raw, time.perf_counter() - t0)
    t0 = time.perf_counter()
    verify_run(sys.argv[1])
    verify = min(verify, time.perf_counter() - t0)
assert "torch" not in sys.modules
print(json.dumps({"raw": raw, "verify": verify, "records": len(lines),
                  "bytes": sum(map(len, lines)) / len(lines)}))
"""


def _verify_timing(root: Path) -> dict:
    """Time verification the way an auditor runs it: in a fresh process without torch."""
    proc = subprocess.run([sys.executable, "-c", VERIFY_TIMING, str(root)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"verification timing failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


class _Witness:
    """A real witness process trusting this benchmark's signing key."""

    def __init__(self, tmp: Path) -> None:
        from torchwitness.ledger.keys import SigningKey
        from torchwitness.witness.server import WitnessState

        state = WitnessState(tmp / "witness")
        key = state.keygen("bench.witness/w1")
        state.add_log(SigningKey.load_or_create().public.to_vkey())
        self.proc = subprocess.Popen([sys.executable, "-m", "torchwitness", "witness", "serve", "--state",
                                      str(state.root), "--port", "0"], stdout=subprocess.PIPE, text=True)
        self.spec = f"{key.public.to_vkey()} {self.proc.stdout.readline().split()[-1]}"
        self.key = key.public

    def cosigned(self, root: Path) -> tuple[int, int]:
        from torchwitness.ledger.checkpoints import read_note

        notes = [read_note(p) for p in sorted((root / "checkpoints").glob("*.note"))]
        return sum(self.key.find(n) is not None for n in notes), len(notes)


def measure(size: int, n: int, tmp: Path, witness: _Witness | None = None) -> dict:
    payload = _payload(size)
    root = tmp / f"run-{size}-{n}{'-witnessed' if witness else ''}"
    run = Run(root, checkpoint_every=1000, witnesses=[witness.spec] if witness else ())
    costs = []
    perf = time.perf_counter_ns
    t_start = time.perf_counter()
    for i in range(n):
        t0 = perf()
        run.record("train.step", payload, step=i)
        costs.append(perf() - t0)
    run.close()
    append_s = time.perf_counter() - t_start

    timing = _verify_timing(root)
    raw_s, best_verify = timing["raw"], timing["verify"]
    return {
        "label": f"{round(timing['bytes'])}B" + ("+witness" if witness else ""),
        "cosigned": witness.cosigned(root) if witness else None,
        "bytes": round(timing["bytes"]),
        "records": timing["records"],
        "record_median_us": statistics.median(costs) / 1000,
        "record_p99_us": sorted(costs)[int(0.99 * len(costs))] / 1000,
        "append_per_s": n / append_s,
        "verify_per_s": timing["records"] / best_verify,
        "verify_s": best_verify,
        "raw_per_s": timing["records"] / raw_s,
        "verify_vs_raw": raw_s / best_verify,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help="also write and verify 1,000,000 records")
    args = parser.parse_args()
    os.environ.setdefault("TORCHWITNESS_KEY_DIR", tempfile.mkdtemp(prefix="tw-bench-keys-"))
    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp:
        rows = [measure(size, args.records, Path(tmp)) for size in (200, 2048)]
        witness = _Witness(Path(tmp))
        try:
            rows.append(measure(200, args.records, Path(tmp), witness))
        finally:
            witness.proc.terminate()
        if args.million:
            rows.append(measure(200, 1_000_000, Path(tmp)))
    print(f"{'record':>14} {'records':>9} {'record() median':>16} {'p99':>8} {'append/s':>10} {'verify/s':>10} "
          f"{'raw sha/s':>10} {'verify/raw':>10} {'verify s':>9}")
    for r in rows:
        print(f"{r['label']:>14} {r['records']:>9,} {r['record_median_us']:>14.2f}us {r['record_p99_us']:>6.1f}us "
              f"{r['append_per_s']:>10,.0f} {r['verify_per_s']:>10,.0f} {r['raw_per_s']:>10,.0f} "
              f"{r['verify_vs_raw']:>9.0%} {r['verify_s']:>9.2f}")
        if r["cosigned"]:
            print(f"{'':>14} witness cosigned {r['cosigned'][0]} of {r['cosigned'][1]} checkpoints (a checkpoint "
                  "overtaken while a request is in flight is skipped; the newest always is asked)")


if __name__ == "__main__":
    main()
