"""Checkpoints in the C2SP tlog-checkpoint format, signed as C2SP signed notes with Ed25519.

Body: origin line, decimal tree size, base64 root hash, each ending in a newline. Then a blank line and one
signature line ``— NAME base64(key_id || signature)``. Written by hand: the format is six lines and the only
Python implementations live inside larger transparency-log clients.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from torchwitness.errors import VerificationError
from torchwitness.ledger.keys import PublicKey, SigningKey

_SIG_PREFIX = "\u2014 "  # em dash and space, as signed-note requires


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()

    def sign(self, key: SigningKey) -> str:
        body = self.body()
        sig = base64.b64encode(key.public.key_id + key.sign(body)).decode()
        return body.decode() + "\n" + f"{_SIG_PREFIX}{key.public.name} {sig}\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (name, key_id, signature)
    text: str

    def verify(self, key: PublicKey) -> None:
        """Raise unless one signature line is ``key``'s valid signature over the body."""
        body = self.checkpoint.body()
        for name, key_id, sig in self.signatures:
            if name == key.name and key_id == key.key_id:
                if key.verify(sig, body):
                    return
                raise VerificationError("checkpoint signature does not verify", checkpoint=self.checkpoint.size)
        raise VerificationError(f"checkpoint is not signed by {key.name} ({key.fingerprint})",
                                checkpoint=self.checkpoint.size)


def parse(text: str) -> SignedCheckpoint:
    """Parse a signed checkpoint; raise ``VerificationError`` on any deviation from the format."""
    body, sep, sigs = text.partition("\n\n")
    if not sep:
        raise VerificationError("checkpoint has no signature block")
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerificationError("checkpoint body needs origin, size and root lines")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise VerificationError(f"checkpoint size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise VerificationError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise VerificationError("checkpoint root is not a SHA-256 hash")
    checkpoint = Checkpoint(origin, int(size_text), root)
    if checkpoint.body().decode() != body + "\n":
        raise VerificationError("checkpoint body is not in canonical form", checkpoint=checkpoint.size)
    signatures = []
    for line in sigs.splitlines():
        if not line.startswith(_SIG_PREFIX):
            raise VerificationError("checkpoint signature line is malformed", checkpoint=checkpoint.size)
        name, _, b64 = line[len(_SIG_PREFIX):].rpartition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise VerificationError("checkpoint signature is not base64", checkpoint=checkpoint.size) from None
        if len(blob) < 5:  # other lengths are other signers' (witness cosignatures), ignored unless they match
            raise VerificationError("checkpoint signature is too short", checkpoint=checkpoint.size)
        signatures.append((name, blob[:4], blob[4:]))
    if not signatures:
        raise VerificationError("checkpoint carries no signature", checkpoint=checkpoint.size)
    return SignedCheckpoint(checkpoint, tuple(signatures), text)
