"""Records serialise canonically, explicitly and identically in every process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import rfc8785
import torch

from torchwitness.errors import RecordEncodingError
from torchwitness.ledger import Ledger, iter_records, verify_run
from torchwitness.ledger.encoding import Personal, decode_float, finalize, snapshot

ENCODE = """
import sys, math, numpy as np, torch, rfc8785
from torchwitness.ledger.encoding import snapshot, finalize
value = {
    "tensor": torch.tensor([[1.5, float("nan")], [float("inf"), -0.0]]),
    "scalar_tensor": torch.tensor(3, dtype=torch.int64),
    "bf16": torch.tensor([0.1, 2.5], dtype=torch.bfloat16),
    "np": [np.float32(0.1), np.int64(2**60), np.bool_(True), np.arange(6, dtype=np.int16).reshape(2, 3)],
    "floats": [float("nan"), float("-inf"), 1e-300, 1e21, 0.1 + 0.2],
    "nested": {"z": {"ä": "Grüße, 世界 \\u2028 \\U0001F600", "a": [None, True, 2**53 + 1]}},
    "bytes": b"\\x00\\xff",
}
data, deferred = snapshot(value)
sys.stdout.write(rfc8785.dumps(finalize(data, lambda v: "unused")).hex())
"""


def _encode_in_subprocess(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run([sys.executable, "-c", ENCODE], capture_output=True, text=True, check=True,
                          env=env).stdout


def test_identical_bytes_across_processes() -> None:
    a, b = _encode_in_subprocess("1"), _encode_in_subprocess("2")
    assert a == b
    decoded = json.loads(bytes.fromhex(a))
    assert decoded["tensor"] == {"$array": {"dtype": "float32", "shape": [2, 2],
                                            "data": [1.5, {"$float": "NaN"}, {"$float": "Infinity"}, 0]}}
    assert decoded["scalar_tensor"] == 3
    assert decoded["bf16"]["$array"]["dtype"] == "bfloat16"
    assert decoded["np"][1] == {"$int": str(2**60)} and decoded["np"][2] is True
    assert decoded["np"][3]["$array"]["shape"] == [2, 3]
    assert decoded["floats"][:2] == [{"$float": "NaN"}, {"$float": "-Infinity"}]
    assert decoded["nested"]["z"]["a"][2] == {"$int": str(2**53 + 1)}
    assert decoded["bytes"] == {"$bytes": "AP8="}
    # Canonical: re-serialising the parsed object gives the same bytes.
    assert rfc8785.dumps(decoded).hex() == a


def test_decode_float_round_trips() -> None:
    from torchwitness.ledger.encoding import encode_float

    for x in (0.5, float("inf"), float("-inf")):
        assert decode_float(encode_float(x)) == x
    assert np.isnan(decode_float(encode_float(float("nan"))))


def test_snapshot_copies_so_later_mutation_cannot_change_evidence() -> None:
    t = torch.ones(3)
    payload = {"t": t, "items": [1, 2]}
    data, deferred = snapshot(payload)
    t.add_(1)
    payload["items"].append(3)
    out = finalize(data, lambda v: "x")
    assert deferred and out["t"]["$array"]["data"] == [1.0, 1.0, 1.0] and out["items"] == [1, 2]


@pytest.mark.parametrize("bad, where", [
    ({"s": {1, 2}}, "data.s"),
    ({"k": {1: "x"}}, "data.k"),
    ({"obj": object()}, "data.obj"),
    ({"c": [torch.tensor([1 + 2j])]}, "data.c[0]"),
    ({"a": np.array(["x"])}, "data.a"),
])
def test_unsupported_values_raise_with_their_path(bad: dict, where: str) -> None:
    with pytest.raises(RecordEncodingError, match=rf"^{re.escape(where)}:"):
        snapshot(bad)


def test_personal_values_never_reach_the_records(tmp_path) -> None:
    secret = "jane.doe@example.org"
    with Ledger.open(tmp_path / "run") as ledger:
        ledger.append("subject.seen", {"subject": Personal(secret), "purpose": "training"})
        ledger.append("subject.seen", {"subject": Personal(secret), "purpose": "eval"})
        ledger.flush()
        opening = ledger.personal.opening(secret)
    records = list(iter_records(tmp_path / "run"))
    commitments = [r["data"]["subject"]["$personal"] for r in records]
    assert commitments[0] == commitments[1] == opening[0]  # stable within the run
    from torchwitness.ledger.personal import commitment

    assert commitment(opening[1], secret) == commitments[0]  # the data subject can check it
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert verify_run(tmp_path / "run", deep=True).records == 2


def test_erasure_keeps_verification_and_is_counted(tmp_path) -> None:
    root = tmp_path / "run"
    with Ledger.open(root, retain_personal=True) as ledger:
        for i in range(10):
            ledger.append("data.access", {"subject": Personal(f"user-{i % 3}")})
    assert b"user-1" in (root / "private" / "personal.sqlite").read_bytes()  # retention on: cleartext kept
    proc = subprocess.run([sys.executable, "-m", "torchwitness", "erase", str(root), "--subject", "user-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = verify_run(root, deep=True)
    assert result.erasures == 1 and result.erased_payloads == 3
    assert b"user-1" not in (root / "private" / "personal.sqlite").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "torchwitness", "erase", str(root), "--subject", "nobody"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "nothing to erase" in proc.stdout
