"""Ed25519 signing keys: created on first use, private half kept outside the run folder.

Public keys travel as C2SP signed-note verifier keys (``name+keyid+base64(0x01||key)``); the fingerprint
``sha256:<hex>`` of the raw 32-byte public key is what users pin with ``verify --key``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from torchwitness.errors import SigningKeyError, TorchWitnessError
from torchwitness.jsonfile import read_text

ED25519_TYPE = b"\x01"  # signed-note signature type byte for Ed25519
KEY_DIR_ENV = "TORCHWITNESS_KEY_DIR"


def default_key_dir() -> Path:
    """``$TORCHWITNESS_KEY_DIR``, else ``$XDG_CONFIG_HOME/torchwitness/keys`` (``~/.config/...``)."""
    if env := os.environ.get(KEY_DIR_ENV):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "torchwitness" / "keys"


def fingerprint_of(raw_public: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw_public).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """A verifier key: the signer's note name and raw Ed25519 public key. ``TYPE`` is the signed-note signature
    type its vkey and key id carry (witness cosigner keys are the same with another type)."""

    name: str
    raw: bytes
    TYPE: ClassVar[bytes] = ED25519_TYPE

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.raw)

    @property
    def key_id(self) -> bytes:
        """First 4 bytes of SHA-256(name || 0x0A || type || key), as signed-note defines it."""
        return hashlib.sha256(self.name.encode() + b"\n" + self.TYPE + self.raw).digest()[:4]

    def to_vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(self.TYPE + self.raw).decode()}"

    @classmethod
    def from_vkey(cls, text: str) -> PublicKey:
        parts = text.strip().split("+", 2)  # base64 may itself contain "+"
        if len(parts) != 3:
            raise SigningKeyError("verifier key must look like NAME+KEYID+BASE64KEY")
        name, key_id_hex, b64 = parts
        try:
            blob = base64.b64decode(b64, validate=True)
            key_id = bytes.fromhex(key_id_hex)
        except ValueError as e:
            raise SigningKeyError(f"verifier key is not valid hex/base64: {e}") from None
        if len(blob) != 33 or blob[:1] != cls.TYPE:
            raise SigningKeyError(f"verifier key is not an Ed25519 signed-note key of type 0x{cls.TYPE.hex()}")
        key = cls(name, blob[1:])
        if key.key_id != key_id:
            raise SigningKeyError("verifier key's id does not match its name and key")
        return key

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 private key with the note name derived from its fingerprint."""

    def __init__(self, private: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._private = private
        self.path = path
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(f"torchwitness-{hashlib.sha256(raw).hexdigest()[:16]}", raw)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise SigningKeyError(f"signing key not found: {path}") from None
        except OSError as e:
            raise SigningKeyError(f"cannot read signing key {path}: {e.strerror or e}") from None
        except (ValueError, TypeError) as e:
            raise SigningKeyError(f"signing key {path} is unreadable: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
        return cls(key, path)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())
        # Written whole under a temporary name (0600 from the start: never readable by others, not even briefly),
        # then linked into place: a process that finds the key file finds all of it (two ranks creating the
        # default key at once read each other's half-written file), and a crash mid-write leaves no empty key.
        # A link, unlike a rename, refuses to replace a key another process made first (FileExistsError).
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links: create the key file itself, exclusively
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
        finally:
            tmp.unlink(missing_ok=True)
        self.path = path

    @classmethod
    def load_or_create(cls, key_dir: Path | None = None, name: str = "default") -> SigningKey:
        """The user's key ``NAME.ed25519`` in ``key_dir``, generated on first use."""
        path = (key_dir or default_key_dir()) / f"{name}.ed25519"
        if path.parent.exists() and not path.parent.is_dir():
            raise SigningKeyError(f"key folder {path.parent} is a file, not a folder")
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        try:
            key.save(path)
        except FileExistsError:  # another process created it first: use theirs
            return cls.load(path)
        return key

    @classmethod
    def find(cls, fingerprint: str, key_dir: Path | None = None) -> SigningKey:
        """The private key in ``key_dir`` whose public fingerprint is ``fingerprint``."""
        directory = key_dir or default_key_dir()
        for path in sorted(directory.glob("*.ed25519")) if directory.is_dir() else []:
            key = cls.load(path)
            if key.public.fingerprint == fingerprint:
                return key
        raise SigningKeyError(f"no private key with fingerprint {fingerprint} in {directory} "
                              f"(set {KEY_DIR_ENV} or pass key_dir)")


def read_vkey(path: Path, error: type[TorchWitnessError] = SigningKeyError) -> PublicKey:
    """The verifier key in the file at ``path``; whatever is wrong with it raises ``error`` naming the file."""
    text = read_text(path, "verifier key", error)
    try:
        return PublicKey.from_vkey(text)
    except SigningKeyError as e:
        raise error(f"verifier key {path} is malformed: {e}") from None
