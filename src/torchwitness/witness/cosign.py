"""C2SP ``tlog-cosignature`` v1: timestamped Ed25519 cosignatures on signed-note checkpoints.

A cosignature line is an ordinary signed-note line ``— NAME base64(key_id || timestamp || signature)``: the key
id is ``SHA-256(NAME || 0x0A || 0x04 || key)[:4]``, the timestamp a big-endian u64 of POSIX seconds, and the
Ed25519 signature covers ``cosignature/v1\\ntime T\\n`` followed by the checkpoint's whole note text. The note
parsing here is generic signed-note (``note.py`` parses the log's own checkpoint strictly); it never interprets
the body beyond what a cosigner must.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from torchwitness.errors import SigningKeyError, VerificationError

COSIGNATURE_TYPE = b"\x04"  # signed-note signature type of timestamped Ed25519 cosignatures
SIG_PREFIX = "\u2014 "
MAX_SIGNATURES = 100  # signed-note asks verifiers for a limit of at least 16
# Cosignatures dated further ahead than this are refused: a witness's clock may drift, but not by hours.
FUTURE_SLACK_S = 600


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes  # what follows the key id
    line: str  # the whole line, without its newline


@dataclass(frozen=True)
class Note:
    """A signed note split into its text (ending in a newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line + "\n" for s in self.signatures)

    def with_signatures(self, lines: list[NoteSignature]) -> Note:
        """This note with ``lines`` added, replacing earlier lines of the same signers."""
        ids = {(s.name, s.key_id) for s in lines}
        kept = [s for s in self.signatures if (s.name, s.key_id) not in ids]
        return Note(self.text, tuple(kept + list(lines)))


def parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIG_PREFIX):
        raise VerificationError("note signature line does not start with an em dash and a space")
    name, sep, b64 = line[len(SIG_PREFIX):].partition(" ")
    if not sep or not name or "+" in name or " " in b64:
        raise VerificationError("note signature line is not '— NAME BASE64'")
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise VerificationError(f"signature of {name} is not base64") from None
    if len(blob) < 5:
        raise VerificationError(f"signature of {name} is too short")
    return NoteSignature(name, blob[:4], blob[4:], line)


def parse_note(text: str) -> Note:
    """Split a signed note; raise ``VerificationError`` where it breaks the signed-note format."""
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise VerificationError("note holds control characters")
    cut = text.rfind("\n\n")
    if cut < 0 or not text.endswith("\n"):
        raise VerificationError("note has no signature block after a blank line")
    lines = text[cut + 2:].splitlines()
    if not lines or len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"note carries {len(lines)} signatures (1 to {MAX_SIGNATURES} allowed)")
    return Note(text[:cut + 1], tuple(parse_signature_line(line) for line in lines))


def cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


@dataclass(frozen=True)
class CosignerKey:
    """A witness's public key as a cosignature/v1 verifier key (``NAME+KEYID+base64(0x04 || key)``)."""

    name: str
    raw: bytes

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.name.encode() + b"\n" + COSIGNATURE_TYPE + self.raw).digest()[:4]

    def to_vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(COSIGNATURE_TYPE + self.raw).decode()}"

    @classmethod
    def from_vkey(cls, text: str) -> CosignerKey:
        name, _, rest = text.strip().partition("+")
        key_id_hex, _, b64 = rest.partition("+")  # base64 may itself contain "+"
        try:
            blob = base64.b64decode(b64, validate=True)
            key_id = bytes.fromhex(key_id_hex)
        except ValueError:
            raise SigningKeyError(f"witness key {text.strip()[:80]!r} is not NAME+KEYID+BASE64KEY") from None
        if not name or len(blob) != 33 or blob[:1] != COSIGNATURE_TYPE:
            raise SigningKeyError(f"witness key {name!r} is not a cosignature/v1 (type 0x04) Ed25519 key")
        key = cls(name, blob[1:])
        if key.key_id != key_id:
            raise SigningKeyError(f"witness key {name!r}: its id does not match its name and key")
        return key

    def timestamp_of(self, text: str, sig: NoteSignature) -> int:
        """The time a valid cosignature of ours over ``text`` was made; raise if the signature does not verify."""
        if len(sig.signature) != 8 + 64:
            raise VerificationError(f"cosignature of witness {self.name} has the wrong length")
        (timestamp,) = struct.unpack(">Q", sig.signature[:8])
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(sig.signature[8:], cosigned_message(text, timestamp))
        except InvalidSignature:
            raise VerificationError(f"cosignature of witness {self.name} does not verify") from None
        if timestamp >= 1 << 63 or timestamp > time.time() + FUTURE_SLACK_S:
            raise VerificationError(f"cosignature of witness {self.name} is dated in the future ({timestamp})")
        return timestamp

    def find(self, note: Note) -> int | None:
        """The timestamp of this witness's valid cosignature on ``note``; None when it has none; raise when a
        line of this witness does not verify (the note is then malformed, per signed-note)."""
        mine = [s for s in note.signatures if s.name == self.name and s.key_id == self.key_id]
        return max(self.timestamp_of(note.text, s) for s in mine) if mine else None


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

    def cosign(self, text: str, timestamp: int | None = None) -> NoteSignature:
        """A cosignature/v1 line over the note text ``text`` (which ends in a newline)."""
        timestamp = int(time.time()) if timestamp is None else timestamp
        blob = self.public.key_id + struct.pack(">Q", timestamp) + self._private.sign(
            cosigned_message(text, timestamp))
        return NoteSignature(self.public.name, self.public.key_id, blob[4:],
                             f"{SIG_PREFIX}{self.public.name} {base64.b64encode(blob).decode()}")

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
