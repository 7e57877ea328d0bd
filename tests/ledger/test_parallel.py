"""The multi-process root computation agrees with the single-process tree and never hides tampering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchwitness.ledger import Ledger
from torchwitness.ledger.layout import Layout

CHECK = """
import json, sys
from pathlib import Path
import torchwitness.ledger.parallel as parallel
from torchwitness.errors import VerificationError
from torchwitness.ledger import verify_run
from torchwitness.ledger.layout import Layout
from torchwitness.ledger.merkle import MerkleTree, leaf_hashes
parallel.MIN_BYTES = 0
parallel._idle_cores = lambda: 4  # use the workers even on a busy test machine
root = Path(sys.argv[1])
layout = Layout(root)
lines = [l for s in layout.segments() for l in s.read_bytes().split(b"\\n")[:-1]]
sizes = [1, 63, 64, 65, 128, 500, 999, len(lines)]
fast = parallel.parallel_roots(layout.segments(), 64, sizes, (b'"kind":"erasure"',))
tree = MerkleTree(leaf_hashes(lines))
out = {"used": fast is not None, "agree": fast is not None and all(fast.roots[s] == tree.root(s) for s in sizes)}
try:
    out["records"] = verify_run(root).records
except VerificationError as e:
    out["seq"] = e.seq
assert "torch" not in sys.modules
print(json.dumps(out))
"""


def _check(root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHECK, str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    with Ledger.open(root, segment_records=64, checkpoint_every=50) as ledger:
        for i in range(1000):
            ledger.append("x", {"i": i})
    return root


def test_parallel_roots_equal_the_sequential_tree(run: Path) -> None:
    assert _check(run) == {"used": True, "agree": True, "records": 1000}


def test_tampering_falls_back_and_is_named(run: Path) -> None:
    seg = Layout(run).segment(5)  # records 320..383
    lines = seg.read_bytes().split(b"\n")
    lines[7] = lines[7].replace(b'"i":327', b'"i":328')
    seg.write_bytes(b"\n".join(lines))
    result = _check(run)
    assert result["used"] and result["agree"]  # both paths hash what is on disk; the signed roots disagree
    assert result["seq"] == 327
