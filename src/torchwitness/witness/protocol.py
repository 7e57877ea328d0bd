"""The wire format of C2SP ``tlog-witness`` ``add-checkpoint``, and how users name a witness.

Request body: ``old N\\n``, at most 63 base64 consistency-proof hashes one per line, a blank line, then the
checkpoint note. A 200 response is one or more cosignature lines; a 409 response is the witness's latest size
(``text/x.tlog.size``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from torchwitness.errors import InputError, SigningKeyError, VerificationError
from torchwitness.ledger.note import SignedCheckpoint, parse
from torchwitness.witness.cosign import CosignerKey

MAX_PROOF_LINES = 63
MAX_BODY_BYTES = 64 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"


class BadRequest(ValueError):
    """A request that breaks the protocol's format (HTTP 400)."""


def decimal(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (text != "0" and text.startswith("0")) or len(text) > 20:
        raise BadRequest(f"{what} {text[:40]!r} is not a decimal without leading zeroes")
    return int(text)


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: list[bytes]
    signed: SignedCheckpoint


def encode_request(old_size: int, proof: list[bytes], note_text: str) -> bytes:
    head = f"old {old_size}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
    return (head + "\n" + note_text).encode()


def parse_request(body: bytes) -> AddCheckpoint:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    head, sep, note_text = text.partition("\n\n")
    if not sep:
        raise BadRequest("request has no blank line before the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old "):
        raise BadRequest("request does not start with an 'old SIZE' line")
    old = decimal(lines[0][4:], "old size")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise BadRequest(f"request carries {len(lines) - 1} proof lines (at most {MAX_PROOF_LINES})")
    proof = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise BadRequest("consistency proof line is not base64") from None
        if len(h) != 32:
            raise BadRequest("consistency proof line is not a SHA-256 hash")
        proof.append(h)
    try:
        signed = parse(note_text)
    except VerificationError as e:
        raise BadRequest(f"checkpoint note: {e}") from None
    return AddCheckpoint(old, proof, signed)


def origin_hash(origin: str) -> str:
    """The lower-case hex SHA-256 of an origin: the path segment of the monitoring endpoint."""
    return hashlib.sha256(origin.encode()).hexdigest()


@dataclass(frozen=True)
class Witness:
    """A witness as a log or a verifier names it: its cosigner key and, where it is to be asked, its URL
    (the submission prefix, also used as monitoring prefix)."""

    key: CosignerKey
    url: str | None = None

    @classmethod
    def parse(cls, spec: str | Witness) -> Witness:
        """``"VKEY"`` or ``"VKEY URL"`` (the order of C2SP tlog-policy's ``witness`` lines)."""
        if isinstance(spec, Witness):
            return spec
        if not isinstance(spec, str):
            raise InputError(f"a witness is given as 'VKEY' or 'VKEY URL', not {spec!r}")
        parts = spec.split()
        if len(parts) not in (1, 2):
            raise InputError(f"a witness is given as 'VKEY' or 'VKEY URL', not {spec!r}")
        try:
            key = CosignerKey.from_vkey(parts[0])
        except SigningKeyError as e:
            raise InputError(str(e)) from None
        url = parts[1].rstrip("/") if len(parts) == 2 else None
        if url is not None and not url.startswith(("http://", "https://")):
            raise InputError(f"witness URL {url!r} must start with http:// or https://")
        return cls(key, url)
