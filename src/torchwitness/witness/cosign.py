"""C2SP ``tlog-cosignature`` v1: timestamped Ed25519 cosignatures on signed-note checkpoints.

A cosignature line is an ordinary signed-note line ``— NAME base64(key_id || timestamp || signature)``: the key
id is ``SHA-256(NAME || 0x0A || 0x04 || key)[:4]``, the timestamp a big-endian u64 of POSIX seconds, and the
Ed25519 signature covers ``cosignature/v1\\ntime T\\n`` followed by the checkpoint's whole note text (extension
lines included). Notes are parsed by :func:`torchwitness.ledger.note.parse`, which keeps every signature line.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from torchwitness.errors import SigningKeyError, VerificationError
from torchwitness.ledger.keys import PublicKey
from torchwitness.ledger.note import SIG_PREFIX, Signature, SignedCheckpoint, b64, parse

COSIGNATURE_TYPE = b"\x04"  # signed-note signature type of timestamped Ed25519 cosignatures
# Cosignatures dated further ahead than this are refused: a witness's clock may drift, but not by hours.
FUTURE_SLACK_S = 600


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body


def with_cosignatures(signed: SignedCheckpoint, lines: list[Signature]) -> SignedCheckpoint:
    """``signed`` with ``lines`` added, replacing earlier lines of the same signers (a newer cosignature)."""
    ids = {(s.name, s.key_id) for s in lines}
    kept = [s for s in signed.signatures if (s.name, s.key_id) not in ids]
    return parse(signed.checkpoint.body().decode() + "\n" + "".join(s.line + "\n" for s in [*kept, *lines]))


class CosignerKey(PublicKey):
    """A witness's public key as a cosignature/v1 verifier key (``NAME+KEYID+base64(0x04 || key)``)."""

    TYPE = COSIGNATURE_TYPE

    def timestamp_of(self, body: bytes, sig: Signature) -> int:
        """The time a valid cosignature of ours over the note text ``body`` was made; raise if it does not
        verify."""
        if len(sig.blob) != 8 + 64:
            raise VerificationError(f"cosignature of witness {self.name} has the wrong length")
        (timestamp,) = struct.unpack(">Q", sig.blob[:8])
        if not self.verify(sig.blob[8:], cosigned_message(body, timestamp)):
            raise VerificationError(f"cosignature of witness {self.name} does not verify")
        if timestamp >= 1 << 63 or timestamp > time.time() + FUTURE_SLACK_S:
            raise VerificationError(f"cosignature of witness {self.name} is dated in the future ({timestamp})")
        return timestamp

    def find(self, signed: SignedCheckpoint) -> int | None:
        """The timestamp of this witness's valid cosignature on ``signed``; None when it has none; raise when a
        line of this witness does not verify (the note is then malformed, per signed-note)."""
        body = signed.checkpoint.body()
        mine = [s for s in signed.signatures if s.name == self.name and s.key_id == self.key_id]
        return max(self.timestamp_of(body, s) for s in mine) if mine else None


class WitnessKey:
    """A witness's Ed25519 private key and name, kept as PKCS#8 PEM (mode 0600) beside a name file."""

    def __init__(self, private: Ed25519PrivateKey, name: str) -> None:
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = CosignerKey(name, raw)

    @classmethod
    def generate(cls, name: str) -> WitnessKey:
        if not name or any(c.isspace() for c in name) or "+" in name:
            raise SigningKeyError(f"witness name {name!r} must be non-empty, without spaces or '+'")
        return cls(Ed25519PrivateKey.generate(), name)

    def cosign(self, signed: SignedCheckpoint, timestamp: int | None = None) -> Signature:
        """A cosignature/v1 line over the checkpoint's note text."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        blob = struct.pack(">Q", timestamp) + self._private.sign(cosigned_message(signed.checkpoint.body(),
                                                                                  timestamp))
        return Signature(self.public.name, self.public.key_id, blob,
                         f"{SIG_PREFIX}{self.public.name} {b64(self.public.key_id + blob)}")

    def save(self, pem_path: Path, name_path: Path) -> None:
        pem = self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        fd = os.open(pem_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        name_path.write_text(self.public.to_vkey() + "\n")

    @classmethod
    def load(cls, pem_path: Path, name_path: Path) -> WitnessKey:
        try:
            private = serialization.load_pem_private_key(pem_path.read_bytes(), password=None)
            public = CosignerKey.from_vkey(name_path.read_text())
        except FileNotFoundError as e:
            raise SigningKeyError(f"witness key file {e.filename} is missing (run 'torchwitness witness "
                                  "keygen' first)") from None
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise SigningKeyError(f"witness key {pem_path} is unreadable: {e}") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise SigningKeyError(f"witness key {pem_path} is not an Ed25519 key")
        key = cls(private, public.name)
        if key.public != public:
            raise SigningKeyError(f"{name_path} does not hold the public half of {pem_path}")
        return key
