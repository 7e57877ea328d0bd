"""SIGKILL a writing process at random moments: reopening must recover and lose no checkpointed record."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from torchwitness.ledger import Ledger, verify_run
from torchwitness.ledger.layout import Layout
from torchwitness.ledger.merkle import leaf_hash
from torchwitness.ledger.note import parse

WRITER = """
import os, random, sys
from torchwitness.ledger import Ledger
rng = random.Random(int(sys.argv[2]))
ledger = Ledger.open(sys.argv[1], checkpoint_every=int(sys.argv[3]), checkpoint_seconds=0.05,
                     segment_records=700, fsync="never")
print("ready", flush=True)
i = 0
while True:
    ledger.append("train.step", {"i": i, "pad": "x" * rng.randrange(0, 3000), "f": rng.random()}, step=i)
    i += 1
"""


def _covered(root: Path) -> tuple[int, bytes | None]:
    files = Layout(root).checkpoint_files()
    if not files:
        return 0, None
    signed = parse(files[-1].read_text())
    return signed.checkpoint.size, signed.checkpoint.root


def _lines(root: Path) -> list[bytes]:
    out: list[bytes] = []
    for seg in Layout(root).segments():
        data = seg.read_bytes()
        out.extend(data[: data.rfind(b"\n") + 1].split(b"\n")[:-1])
    return out


@pytest.mark.parametrize("trial", range(24))
def test_sigkill_at_a_random_moment(tmp_path: Path, trial: int) -> None:
    rng = random.Random(trial)
    root = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(trial), str(rng.choice([7, 50, 400]))],
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": str(trial)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(rng.uniform(0.02, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    covered, _ = _covered(root)
    before = [leaf_hash(line) for line in _lines(root)[:covered]]
    assert len(before) == covered, "a checkpoint covers records that never reached the file"

    with Ledger.open(root) as ledger:  # recovery happens here
        recovery = ledger.recovery
        ledger.append("after.crash", {"trial": trial})
    assert recovery.torn_bytes >= 0 and recovery.index_removed == 0
    result = verify_run(root, deep=True)
    after = [leaf_hash(line) for line in _lines(root)]
    assert after[:covered] == before, "a checkpointed record changed or vanished"
    assert result.records >= covered + 1
    kinds = [line for line in _lines(root) if b'"kind":"ledger.recovered"' in line]
    assert bool(kinds) == recovery.needed


@pytest.mark.parametrize("torn", [b'{"data":{"i":', b"x" * 5000])
def test_torn_final_line_and_short_index_are_repaired(tmp_path: Path, torn: bytes) -> None:
    root = tmp_path / "run"
    with Ledger.open(root, checkpoint_every=10) as ledger:
        for i in range(25):
            ledger.append("x", {"i": i})
    layout = Layout(root)
    with open(layout.segments()[-1], "ab") as f:  # a write cut short by power loss
        f.write(torn)
    layout.index.write_bytes(layout.index.read_bytes()[:-45])  # one whole and one partial entry lost
    with Ledger.open(root) as ledger:
        assert ledger.recovery.torn_bytes == len(torn)
        assert ledger.recovery.index_added == 2
    records = _lines(root)
    assert len(records) == 26 and b'"kind":"ledger.recovered"' in records[-1]
    assert verify_run(root, deep=True).records == 26


def test_second_writer_is_refused_and_nothing_is_lost(tmp_path: Path) -> None:
    from torchwitness.errors import LedgerError

    root = tmp_path / "run"
    with Ledger.open(root) as first:
        first.append("x", {"i": 1})
        with pytest.raises(LedgerError, match="already open"):
            Ledger.open(root)
        first.append("x", {"i": 2})
    assert verify_run(root).records == 2
