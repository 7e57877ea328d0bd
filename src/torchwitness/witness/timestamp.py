"""RFC 3161 timestamp tokens over checkpoints: third-party time for "this history existed by then".

``timestamp_run`` asks a Time-Stamping Authority to sign the SHA-256 of the newest checkpoint's note text (of
every rank) and keeps its DER response beside the note as ``checkpoints/<size>.tsr``; ``verify_timestamps``
checks each token against the TSA's root certificate (chain, ``timeStamping`` key usage, signature, message
imprint) and that it covers the note it sits beside. Needs the ``timestamp`` extra (``rfc3161-client``).
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, VerificationError
from torchwitness.ledger.checkpoints import read_note
from torchwitness.ledger.layout import Layout
from torchwitness.witness import write_atomically
from torchwitness.witness.client import shard_folders

QUERY_TYPE = "application/timestamp-query"


def _rfc3161() -> Any:
    try:
        import rfc3161_client
    except ImportError:
        raise InputError("RFC 3161 timestamps need the 'timestamp' extra: pip install 'torchwitness[timestamp]'") \
            from None
    return rfc3161_client


def _newest(folder: Path) -> Path:
    files = Layout(folder).checkpoint_files()
    if not files:
        raise InputError(f"{folder} has no checkpoint to timestamp")
    return files[-1]


def timestamp_run(run: str | Path, tsa_url: str, *, timeout: float = 10.0) -> list[str]:
    """Have ``tsa_url`` timestamp the newest checkpoint of every shard; one line per shard."""
    rfc = _rfc3161()
    if not tsa_url.startswith(("http://", "https://")):
        raise InputError(f"TSA URL {tsa_url!r} must start with http:// or https://")
    out = []
    for folder in shard_folders(run):
        note = _newest(folder)
        body = read_note(note).checkpoint.body()
        request = rfc.TimestampRequestBuilder().data(body).hash_algorithm(rfc.HashAlgorithm.SHA256) \
            .cert_request(cert_request=True).nonce(nonce=True).build()
        http = urllib.request.Request(tsa_url, data=request.as_bytes(), method="POST",
                                      headers={"Content-Type": QUERY_TYPE})
        try:
            with urllib.request.urlopen(http, timeout=timeout) as answer:
                der = answer.read(1 << 20)
        except (urllib.error.URLError, OSError) as e:
            raise InputError(f"cannot reach the TSA at {tsa_url}: {getattr(e, 'reason', e)}") from None
        try:
            response = rfc.decode_timestamp_response(der)
        except ValueError as e:
            raise VerificationError(f"the TSA's answer is not an RFC 3161 response: {e}") from None
        info = response.tst_info
        if response.status != rfc.PKIStatus.GRANTED or info.nonce != request.nonce \
                or info.message_imprint.message != request.message_imprint.message:
            raise VerificationError(f"the TSA did not timestamp {note.name} (status {response.status})")
        tsr = note.with_suffix(".tsr")
        write_atomically(tsr, der)
        out.append(f"{tsr}: {info.gen_time:%Y-%m-%dT%H:%M:%SZ} from {tsa_url}")
    return out


def verify_timestamps(run: str | Path, root_pem: bytes) -> list[str]:
    """Raise ``VerificationError`` unless the newest checkpoint of every shard carries a timestamp token that
    chains to the TSA root ``root_pem`` and covers that note's text; one line per shard."""
    from cryptography import x509

    rfc = _rfc3161()
    try:
        root = x509.load_pem_x509_certificate(root_pem)
    except ValueError as e:
        raise InputError(f"the TSA root is not a PEM certificate: {e}") from None
    verifier = rfc.VerifierBuilder().add_root_certificate(root).build()
    out = []
    for folder in shard_folders(run):
        note = _newest(folder)
        tsr = note.with_suffix(".tsr")
        if not tsr.exists():
            raise VerificationError(f"{note.parent.parent.name}: checkpoint {note.name} has no timestamp token")
        try:
            response = rfc.decode_timestamp_response(tsr.read_bytes())
            verifier.verify_message(response, read_note(note).checkpoint.body())
        except (ValueError, rfc.VerificationError) as e:
            raise VerificationError(f"{tsr}: the timestamp token does not verify: {e}") from None
        when = response.tst_info.gen_time.astimezone(dt.timezone.utc)
        out.append(f"timestamped {note}: {when:%Y-%m-%dT%H:%M:%SZ}")
    return out
