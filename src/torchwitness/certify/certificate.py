"""The edit certificate: a signed JSON document a third party can re-check without the run folder.

Layout (schema: :func:`certificate_schema`, also ``torchwitness cert-schema``)::

    {"format": "torchwitness-edit-certificate/1", "task", "created_us",
     "baseline": {weights, tokenizer, parameters, source}, "subject": {..., "edit"},
     "data": {digest, source, windows | clusters}, "policy": {name, digest, document},
     "statistics": {"merkle_root", "rows": [per-window values...], totals, metrics, bootstrap},
     "diagnostics": {layers, invariants, failures}, "decision": {verdict, reasons, holm},
     "environment", "run": {id, origin} | null,
     "signature": {"algorithm": "ed25519", "verifier_key", "fingerprint", "value"}}

Per-window rows are committed by an RFC 9162 Merkle root (leaf = SHA-256(0x00 || RFC 8785 row)), the same
tree as the ledger's. The signature is Ed25519 over ``DOMAIN || RFC 8785(certificate without "signature")``
with the run's signing key; the verifier key (C2SP vkey) travels inside, and users pin its fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Literal

import msgspec
import rfc8785

from torchwitness.ledger.keys import PublicKey, SigningKey
from torchwitness.ledger.merkle import MerkleTree, leaf_hash
from torchwitness.ledger.schema import register_kind

FORMAT = "torchwitness-edit-certificate/1"
DOMAIN = b"torchwitness-edit-certificate/1\n"


class ModelInfo(msgspec.Struct):
    weights: str
    parameters: int
    source: str
    tokenizer: str | None = None
    edit: dict[str, Any] | None = None


class PolicyInfo(msgspec.Struct):
    name: str
    digest: str
    document: dict[str, Any]


class Statistics(msgspec.Struct):
    merkle_root: str
    rows: list[dict[str, Any]]
    totals: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    bootstrap: dict[str, Any]


class Decision(msgspec.Struct):
    verdict: Literal["pass", "fail"]
    reasons: list[str]
    holm: dict[str, bool]
    alpha: float


class Signature(msgspec.Struct):
    algorithm: Literal["ed25519"]
    verifier_key: str
    fingerprint: str
    value: str


class Certificate(msgspec.Struct):
    """The published schema of an edit certificate (``torchwitness cert-schema`` prints it)."""

    format: Literal["torchwitness-edit-certificate/1"]
    task: Literal["causal-lm", "classifier"]
    created_us: int
    baseline: ModelInfo
    subject: ModelInfo
    data: dict[str, Any]
    policy: PolicyInfo
    statistics: Statistics
    diagnostics: dict[str, Any]
    decision: Decision
    environment: dict[str, Any]
    run: dict[str, Any] | None
    signature: Signature


class EditCertificateRecord(msgspec.Struct):
    """The ``edit.certificate`` ledger record: the certificate's blob digest, its verdict and what it binds."""

    certificate: str  # sha256:... of the blob (canonical JSON)
    verdict: str
    reasons: list[str]
    task: str
    policy: str
    policy_digest: str
    baseline_weights: str
    subject_weights: str
    merkle_root: str
    metrics: dict[str, Any]
    edit: str | None = None
    action: str | None = None  # "kept" or "rolled-back" when the edit was applied in place


register_kind("edit.certificate", EditCertificateRecord)


def certificate_schema() -> dict[str, Any]:
    return msgspec.json.schema(Certificate)


def rows_root(rows: list[dict[str, Any]]) -> str:
    """``sha256:`` Merkle root over the canonical per-window rows."""
    return "sha256:" + MerkleTree([leaf_hash(rfc8785.dumps(r)) for r in rows]).root().hex()


def signed_bytes(cert: dict[str, Any]) -> bytes:
    body = {k: v for k, v in cert.items() if k != "signature"}
    return DOMAIN + rfc8785.dumps(body)


def sign(cert: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """Return ``cert`` with its ``signature`` block (any previous one is replaced)."""
    cert = {k: v for k, v in cert.items() if k != "signature"}
    cert["signature"] = {"algorithm": "ed25519", "verifier_key": key.public.to_vkey(),
                         "fingerprint": key.public.fingerprint,
                         "value": base64.b64encode(key.sign(signed_bytes(cert))).decode()}
    return cert


def check_signature(cert: dict[str, Any]) -> PublicKey:
    """Return the signer's public key; raise ``ValueError`` (or ``SigningKeyError``) if the signature fails."""
    sig = cert["signature"]
    public = PublicKey.from_vkey(sig["verifier_key"])
    if public.fingerprint != sig["fingerprint"]:
        raise ValueError("the signature's fingerprint does not match its verifier key")
    if not public.verify(base64.b64decode(sig["value"], validate=True), signed_bytes(cert)):
        raise ValueError("the signature does not verify: the certificate was changed after signing, or the "
                         "signature was")
    return public


def to_bytes(cert: dict[str, Any]) -> bytes:
    """The stored form: canonical JSON, so the blob digest is stable."""
    return rfc8785.dumps(cert)


def cert_digest(cert: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(to_bytes(cert)).hexdigest()
