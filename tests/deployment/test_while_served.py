"""Commands that record into a run while another process serves it: the server's ledger performs them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from torchwitness.controls.incidents import run_incidents
from torchwitness.errors import InputError
from torchwitness.ledger import iter_records, verify_run
from torchwitness.probes.retained import RetainedInputs

SERVER = r"""
import sys, time
from pathlib import Path
import torch
import torchwitness as tw
from served_model import linear_model

root, ready, stop = map(Path, sys.argv[1:4])
model = linear_model()
rows = torch.arange(32, dtype=torch.float32).reshape(8, 4)
with tw.Run(root) as run:
    serve = run.serve(model, retain_inputs=True, window_seconds=0.2)
    _, ids = serve(rows, ids=True)
    serve.flush()
    ready.write_text("\n".join(ids))
    served = 0
    while not stop.exists():
        serve(rows[:1])
        served += 1
        time.sleep(0.02)
    print(served)
"""


HERE = Path(__file__).parent  # the server and the factory import served_model from here


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchwitness", *args], capture_output=True, text=True, timeout=120,
                          cwd=HERE)


def test_incidents_retention_and_erasures_reach_a_run_being_served(tmp_path: Path) -> None:
    root, ready, stop = tmp_path / "run", tmp_path / "ready", tmp_path / "stop"
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(ready), str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), server.communicate()[1]
        ids = ready.read_text().split("\n")

        added = _cli("incident", "add", str(root), "--id", "INC-1", "--category", "death",
                     "--description", "patient Jane Roe harmed")
        assert added.returncode == 0, added.stderr
        assert "as seq" in added.stdout and "by the process that holds the run open" in added.stdout
        kept = _cli("retention", str(root), "--days", "200", "--role", "deployer")
        assert kept.returncode == 0 and "by the process that holds the run open" in kept.stdout, kept.stderr
        erased = _cli("erase", str(root), "--decision", ids[1])
        assert erased.returncode == 0 and "erased 1" in erased.stdout, erased.stderr
        shredded = _cli("erase", str(root), "--subject", "patient Jane Roe harmed")
        assert shredded.returncode == 0 and "erased 1" in shredded.stdout, shredded.stderr
        nothing = _cli("erase", str(root), "--subject", "nobody")
        assert nothing.returncode == 1 and "nothing to erase" in nothing.stdout
        explained = _cli("explain-decision", str(root), "--decision", ids[2], "--factory",
                         "served_model:linear_model")
        assert explained.returncode == 0, explained.stderr
        assert "by the process that holds the run open" in explained.stdout
        # Its request's commitment covers all 8 rows, and row 1 was erased: explained, said to be unchecked.
        assert "another row of its request was erased since" in explained.stderr
        assert server.poll() is None  # serving all along
    finally:
        stop.touch()
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert int(out) > 0

    kinds = [r["kind"] for r in iter_records(root)]
    for kind in ("incident", "retention.policy", "inputs.erasure", "erasure", "explain.attribution"):
        assert kind in kinds
    assert kinds[-1] == "run.end"
    (incident,) = run_incidents(root)
    assert incident.category == "death"
    result = verify_run(root, deep=True)
    assert result.erased_payloads == 1
    store = RetainedInputs.for_run(root)
    with pytest.raises(InputError, match="no retained input"):
        store.get(ids[1])
    assert np.array_equal(store.get(ids[2]), np.arange(8, 12, dtype=np.float32))
    private = b"".join(p.read_bytes() for p in (root / "private").iterdir() if p.name.startswith("inbox"))
    assert b"Jane Roe" not in private
