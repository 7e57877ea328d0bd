"""Checkpoints in the C2SP tlog-checkpoint format, signed as C2SP signed notes with Ed25519.

Body: origin line, decimal tree size, base64 root hash, then zero or more non-empty *extension lines*, each
ending in a newline. Then a blank line and one or more signature lines ``— NAME base64(key_id || signature)``.
Written by hand: the format is a few lines and the only Python implementations live inside larger
transparency-log clients.

Extension lines this package writes (their meaning is defined by the origin, as tlog-checkpoint allows):

``torchwitness-prev SIZE BASE64ROOT``
    on every ledger checkpoint: the size and root of the checkpoint before it (``0`` and the empty tree's root
    on the first), so deleting a note breaks the chain that verification walks.
``torchwitness-head RANK SIZE BASE64ROOT SIGNER``
    on run-level checkpoints of a distributed run: one per rank, the shard head that rank 0 signs, which also
    authorises the rank's key ``SIGNER`` (see :mod:`torchwitness.ledger.distributed`).

:func:`parse` keeps every signature line, including ones it cannot check (witness cosignatures, other keys),
as signed-note verifiers must; :meth:`SignedCheckpoint.verify` checks only the one of the key it is given, and
:meth:`SignedCheckpoint.with_signatures` adds lines (a cosignature) while keeping the note valid.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from torchwitness.errors import VerificationError
from torchwitness.ledger.keys import PublicKey, SigningKey

SIG_PREFIX = "\u2014 "  # em dash and space, as signed-note requires
PREV = "torchwitness-prev"
HEAD = "torchwitness-head"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str, *, size: int | None = None) -> bytes:
    """Strict base64 (a hash of ``size`` bytes when given); raise ``VerificationError`` naming ``what``."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not base64") from None
    if size is not None and len(data) != size:
        raise VerificationError(f"{what} is {len(data)} bytes, expected {size}")
    return data


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), b64(self.root), *self.extensions]
        return ("\n".join(lines) + "\n").encode()

    def sign(self, key: SigningKey) -> str:
        body = self.body()
        return body.decode() + "\n" + f"{SIG_PREFIX}{key.public.name} {b64(key.public.key_id + key.sign(body))}\n"

    def extension(self, tag: str) -> list[list[str]]:
        """The space-separated fields after ``tag`` of every extension line starting with ``tag``."""
        return [line.split(" ")[1:] for line in self.extensions if line.split(" ", 1)[0] == tag]

    @property
    def prev(self) -> tuple[int, bytes]:
        """``(size, root)`` of the checkpoint before this one, from its ``torchwitness-prev`` line."""
        found = self.extension(PREV)
        if len(found) != 1 or len(found[0]) != 2 or not _is_decimal(found[0][0]):
            raise VerificationError("checkpoint carries no valid torchwitness-prev line (it cannot be chained to "
                                    "the one before it)", checkpoint=self.size)
        return int(found[0][0]), unb64(found[0][1], "torchwitness-prev root", size=32)


def prev_line(size: int, root: bytes) -> str:
    return f"{PREV} {size} {b64(root)}"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    blob: bytes  # what follows the key id: an Ed25519 signature, or a cosignature's timestamp and signature
    line: str


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signatures: tuple[Signature, ...]
    text: str

    def verify(self, key: PublicKey) -> None:
        """Raise unless one signature line is ``key``'s valid Ed25519 signature over the body."""
        body = self.checkpoint.body()
        for sig in self.signatures:
            if sig.name == key.name and sig.key_id == key.key_id:
                if len(sig.blob) == 64 and key.verify(sig.blob, body):
                    return
                raise VerificationError("checkpoint signature does not verify", checkpoint=self.checkpoint.size)
        raise VerificationError(f"checkpoint is not signed by {key.name} ({key.fingerprint})",
                                checkpoint=self.checkpoint.size)

    def with_signatures(self, lines: list[str]) -> SignedCheckpoint:
        """This note with more signature lines (``— NAME BASE64``) after the existing ones, e.g. cosignatures."""
        return parse(self.text + "".join(line.rstrip("\n") + "\n" for line in lines))


def _is_decimal(text: str) -> bool:
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


def parse(text: str) -> SignedCheckpoint:
    """Parse a signed checkpoint; raise ``VerificationError`` on any deviation from the format."""
    if not text.endswith("\n"):
        raise VerificationError("checkpoint does not end in a newline")
    body, sep, sigs = text.partition("\n\n")
    if not sep:
        raise VerificationError("checkpoint has no signature block")
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerificationError("checkpoint body needs origin, size and root lines")
    origin, size_text, root_text = lines[:3]
    if not origin or not _is_decimal(size_text):
        raise VerificationError(f"checkpoint size {size_text!r} is not a decimal number")
    root = unb64(root_text, "checkpoint root", size=32)
    checkpoint = Checkpoint(origin, int(size_text), root, tuple(lines[3:]))
    if checkpoint.body().decode() != body + "\n":
        raise VerificationError("checkpoint body is not in canonical form", checkpoint=checkpoint.size)
    if not sigs:
        raise VerificationError("checkpoint carries no signature", checkpoint=checkpoint.size)
    signatures = []
    for line in sigs[:-1].split("\n"):
        name, _, sig_text = line.removeprefix(SIG_PREFIX).rpartition(" ")
        if not line.startswith(SIG_PREFIX) or not name or " " in name or "+" in name:
            raise VerificationError("checkpoint signature line is malformed", checkpoint=checkpoint.size)
        blob = unb64(sig_text, "checkpoint signature")
        if len(blob) < 5:
            raise VerificationError("checkpoint signature is too short", checkpoint=checkpoint.size)
        signatures.append(Signature(name, blob[:4], blob[4:], line))
    return SignedCheckpoint(checkpoint, tuple(signatures), text)
