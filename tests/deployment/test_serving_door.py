"""The every-request commitment made at the door: same HMAC-SHA256 bytes, same record, whatever the tensor."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from torchwitness.ledger import iter_records
from torchwitness.ledger.personal import FINGERPRINT_PREFIX
from torchwitness.run import Run


def test_fingerprint_is_hmac_sha256_truncated(tmp_path) -> None:
    with Run(tmp_path / "run") as run:
        personal = run.ledger.personal

        @settings(max_examples=60, deadline=None)
        @given(st.binary(max_size=5000))
        def check(data: bytes) -> None:
            expected = FINGERPRINT_PREFIX + hmac.digest(personal._fingerprint_key, data, hashlib.sha256)[:16].hex()
            assert personal.fingerprint(data) == personal.fingerprint(memoryview(data)) == expected
            assert personal.fingerprint(np.frombuffer(data, dtype=np.uint8)) == expected

        check()


def test_every_kind_of_request_tensor_gets_the_commitment_of_its_bytes(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)).eval()
    base = torch.randn(4, 6)
    requests = [
        base,  # contiguous CPU: hashed in place at the door
        base.t().contiguous().t(),  # non-contiguous: the general path
        base.clone().requires_grad_(True),  # needs grad: numpy() refuses, the general path
        base.to(torch.float64).to(torch.float32),  # an equal copy: the same commitment
    ]
    with Run(tmp_path / "run") as run:
        serve = run.serve(model)
        for x in requests:
            serve(x)
        serve.flush()
        expected = run.ledger.personal.fingerprint(base.numpy().tobytes())
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"inference"})]
    assert record["inputs"] == [expected] * 4
    assert record["committed"] is not None and record["fingerprint"] == "request"


def test_sampled_requests_are_still_committed_in_order(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(6, 3)).eval()
    xs = [torch.full((1, 6), float(i)) for i in range(7)]
    with Run(tmp_path / "run") as run:
        serve = run.serve(model, sample_every=3)
        for x in xs:
            serve(x)
        serve.flush()
        expected = [run.ledger.personal.fingerprint(xs[i].numpy().tobytes()) for i in (0, 3, 6)]
    (record,) = [r["data"] for r in iter_records(tmp_path / "run", kinds={"inference"})]
    assert record["inputs"] == expected
