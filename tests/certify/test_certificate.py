"""Certificates verify end to end, and every kind of tampering fails with a reason naming what changed."""

from __future__ import annotations

import copy
import json

import pytest

from torchwitness.certify import certificate_schema, certify, verify_certificate
from torchwitness.certify.sources import Source
from torchwitness.errors import CertificateError


@pytest.fixture(scope="module")
def int4(tiny_lm):
    return certify(tiny_lm.model, edit="quant-int4", tokens=tiny_lm.held_out, policy="balanced")


@pytest.fixture
def cert(int4):
    return copy.deepcopy(int4.certificate)


def test_untouched_certificate_verifies(cert):
    check = verify_certificate(cert)
    assert check.checks == ["schema", "merkle root", "policy digest", "statistics", "verdict", "signature"]
    assert check.verdict == cert["decision"]["verdict"] and check.windows == 200


def test_edited_per_window_value(cert):
    cert["statistics"]["rows"][17]["nll_subject"] += 0.5
    with pytest.raises(CertificateError, match="do not match the committed Merkle root"):
        verify_certificate(cert)


def test_edited_window_with_a_recomputed_root_is_caught_by_the_statistics(cert):
    from torchwitness.certify.certificate import rows_root

    cert["statistics"]["rows"][17]["nll_subject"] += 5.0
    cert["statistics"]["merkle_root"] = rows_root(cert["statistics"]["rows"])
    with pytest.raises(CertificateError, match=r"statistics\.(totals|metrics)\..*does not follow"):
        verify_certificate(cert)


def test_edited_verdict(cert):
    flipped = "fail" if cert["decision"]["verdict"] == "pass" else "pass"
    cert["decision"]["verdict"] = flipped
    with pytest.raises(CertificateError, match=f"stated verdict '{flipped}' does not follow"):
        verify_certificate(cert)


def test_edited_interval(cert):
    cert["statistics"]["metrics"]["ppl_ratio"]["interval"][1] = 1.0001
    with pytest.raises(CertificateError, match=r"metrics\.ppl_ratio\.interval\[1\]"):
        verify_certificate(cert)


@pytest.mark.parametrize("path", [("baseline", "weights"), ("subject", "weights"), ("data", "digest")])
def test_edited_digest(cert, path):
    cert[path[0]][path[1]] = "sha256:" + "0" * 64
    with pytest.raises(CertificateError, match="signature does not verify"):
        verify_certificate(cert)


def test_edited_policy(cert):
    cert["policy"]["document"]["metrics"]["ppl_ratio"]["max"] = 2.0
    with pytest.raises(CertificateError, match="embedded policy does not match its digest"):
        verify_certificate(cert)


def test_edited_signature(cert):
    sig = cert["signature"]["value"]
    cert["signature"]["value"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    with pytest.raises(CertificateError, match="signature does not verify"):
        verify_certificate(cert)


def test_swapped_signer_key(cert):
    from torchwitness.ledger.keys import SigningKey

    other = SigningKey.generate().public
    cert["signature"]["verifier_key"] = other.to_vkey()
    cert["signature"]["fingerprint"] = other.fingerprint
    with pytest.raises(CertificateError, match="signature does not verify"):
        verify_certificate(cert)


def test_pinned_key_must_match(cert):
    with pytest.raises(CertificateError, match="not by the pinned key"):
        verify_certificate(cert, key="sha256:" + "1" * 64)
    verify_certificate(cert, key=cert["signature"]["fingerprint"])


def test_schema_violation(cert):
    del cert["decision"]
    with pytest.raises(CertificateError, match="does not follow the schema"):
        verify_certificate(cert)


def test_published_schema_validates_a_certificate(cert):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(json.dumps(cert)), certificate_schema())


def test_replay_and_model_digests(int4, tiny_lm):
    from torchwitness.certify.edits import apply_edit

    subject = tiny_lm.copy()
    apply_edit(subject, "quant-int4")
    check = verify_certificate(int4.certificate, baseline=tiny_lm.model, subject=subject,
                               tokens=tiny_lm.held_out, replay=8, seed=0)
    assert {"replay of 8 windows", "model digests", "data digest"} <= set(check.checks)
    held = len(int4.certificate["statistics"]["rows"])
    check = verify_certificate(int4.certificate, baseline=tiny_lm.model, subject=subject,
                               tokens=tiny_lm.held_out, replay=10**6, seed=0)
    assert f"replay of {held} windows (all the certificate holds; 1000000 asked for)" in check.checks
    with pytest.raises(CertificateError, match="data given does not match"):
        verify_certificate(int4.certificate, baseline=tiny_lm.model, subject=subject, tokens=tiny_lm.held_out[1:])
    with pytest.raises(CertificateError, match="subject model's weights do not match"):
        verify_certificate(int4.certificate, baseline=tiny_lm.model, subject=tiny_lm.model)


def test_replay_catches_forged_per_window_values_even_when_self_consistent(int4, tiny_lm):
    """A certifier who fabricates rows and re-signs cannot pass a replay against the real models."""
    from torchwitness.certify.certificate import rows_root, sign
    from torchwitness.certify.edits import apply_edit
    from torchwitness.certify.policy import policy_from_document
    from torchwitness.certify.stats import compute_statistics
    from torchwitness.ledger.encoding import snapshot
    from torchwitness.ledger.keys import SigningKey

    forged = copy.deepcopy(int4.certificate)
    for row in forged["statistics"]["rows"]:
        row["nll_subject"] = row["nll_baseline"]
    policy = policy_from_document(forged["policy"]["document"])
    forged["statistics"].update(snapshot(compute_statistics("causal-lm", forged["statistics"]["rows"], policy))[0])
    forged["statistics"]["merkle_root"] = rows_root(forged["statistics"]["rows"])
    forged = sign(forged, SigningKey.load_or_create())
    verify_certificate(forged)  # internally consistent and signed...
    subject = tiny_lm.copy()
    apply_edit(subject, "quant-int4")
    with pytest.raises(CertificateError, match=r"replay of window \d+ .*nll_subject differs"):
        verify_certificate(forged, baseline=Source(tiny_lm.model, "b"), subject=Source(subject, "s"),
                           tokens=tiny_lm.held_out, replay=5, seed=1)


def test_random_bit_flips_are_rejected_by_the_cli_without_a_traceback(int4, tmp_path, capsys):
    """Any flipped bit in the stored certificate makes verify-cert exit 3 with one line (never 0, 1 or a crash)."""
    import numpy as np

    from torchwitness.certify.certificate import to_bytes
    from torchwitness.cli import main

    blob = to_bytes(int4.certificate)
    rng = np.random.default_rng(7)
    path = tmp_path / "flipped.json"
    for bit in rng.choice(len(blob) * 8, size=100, replace=False):
        flipped = bytearray(blob)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(SystemExit) as exit_:
            main(["verify-cert", str(path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 3 and "Traceback" not in err and len(err.strip().splitlines()) == 1, (bit, err)
