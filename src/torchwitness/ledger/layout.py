"""Where things live in a run folder. One place, so readers and writers cannot disagree.

::

    RUN/
      ledger.json            manifest: format version, run id, origin, segment size, signer fingerprint
      records/000000.jsonl   canonical-JSON records, one per line, ``segment_records`` per file
      records/leaves.idx     32-byte leaf hashes in seq order (a cache that verify authenticates, see verify.py)
      checkpoints/<size>.note   signed tree heads (C2SP tlog-checkpoint)
      keys/signer.vkey       the signer's public key (C2SP verifier key)
      private/personal.sqlite   salts and retained cleartexts of personal values: never share this folder
      private/inbox.sqlite      operations other processes left for the process holding the ledger
      private/inputs.sqlite     raw serving inputs, only when a recorder retains them
      blobs/sha256-<hex>     content-addressed artefacts referenced from records
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from torchwitness.errors import InputError, LedgerBusy
from torchwitness.jsonfile import read_json
from torchwitness.ledger.keys import PublicKey

FORMAT = "torchwitness-ledger/1"
MANIFEST = "ledger.json"
RUN_MANIFEST = "run.json"  # a distributed run's folder: its shards are rank-N/ subfolders


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def records(self) -> Path:
        return self.root / "records"

    @property
    def index(self) -> Path:
        return self.records / "leaves.idx"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def vkey(self) -> Path:
        return self.root / "keys" / "signer.vkey"

    @property
    def personal(self) -> Path:
        return self.root / "private" / "personal.sqlite"

    @property
    def inputs(self) -> Path:
        return self.root / "private" / "inputs.sqlite"

    @property
    def inbox(self) -> Path:
        return self.root / "private" / "inbox.sqlite"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def lock(self) -> Path:
        return self.root / ".writer.lock"

    def take_writer_lock(self) -> int:
        """The file descriptor holding the run's writer lock (one writer per run folder); LedgerBusy if another
        process holds it."""
        try:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"cannot open {self.root} for writing: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LedgerBusy(f"{self.root} is already open for writing by another process") from None
        return fd

    def segment(self, number: int) -> Path:
        return self.records / f"{number:06d}.jsonl"

    def segments(self) -> list[Path]:
        paths = sorted(self.records.glob("[0-9]*.jsonl"))
        for path in paths:
            if not path.is_file():
                raise InputError(f"{path} should be a segment file, not a folder: {self.root} is damaged")
        return paths

    def checkpoint(self, size: int) -> Path:
        return self.checkpoints / f"{size:012d}.note"

    def checkpoint_files(self) -> list[Path]:
        paths = sorted(self.checkpoints.glob("*.note"))
        for path in paths:
            if not path.is_file():
                raise InputError(f"{path} should be a checkpoint note, not a folder: {self.root} is damaged")
        return paths


# What readers and writers rely on; a manifest without them is not one this version can read.
_MANIFEST_FIELDS = {"run": str, "origin": str, "segment_records": int, "signer": str}


def read_manifest(root: Path) -> dict:
    """The manifest of an existing run folder, or a one-line error saying why it is not one."""
    if not root.exists():
        raise InputError(f"no such run folder: {root}")
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    path = root / MANIFEST
    if not path.exists():
        raise InputError(f"{root} is not a torchwitness run folder (no {MANIFEST})")
    manifest = read_json(path, "run manifest")
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: unsupported ledger format {str(manifest.get('format'))[:80]!r} (expected "
                         f"{FORMAT})")
    for field, kind in _MANIFEST_FIELDS.items():
        if type(manifest.get(field)) is not kind:
            raise InputError(f"{path}: {field!r} is missing or not a {kind.__name__}")
    if manifest["segment_records"] < 1:
        raise InputError(f"{path}: 'segment_records' must be positive")
    for folder in (Layout(root).records, Layout(root).checkpoints, Layout(root).vkey.parent,
                   Layout(root).personal.parent):
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} should be a folder, not a file: {root} is damaged")
    return manifest


def existing_run(root: Path) -> str | None:
    """The id of the run that ``root`` already holds (one process's ledger or a distributed run), else None."""
    for name in (RUN_MANIFEST, MANIFEST):
        try:
            return str(json.loads((root / name).read_text())["run"])
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return "?"  # something is there, unreadable: never start a second run over it
    return None


def create_manifest(layout: Layout, signer: PublicKey, *, run_id: str, origin: str, created_us: int,
                    segment_records: int) -> dict:
    """Lay out a new run folder: its folders, the signer's public key, then the manifest (last, atomically: a
    folder with a manifest is a run)."""
    manifest = {"format": FORMAT, "run": run_id, "origin": origin, "created_us": created_us,
                "segment_records": segment_records, "signer": signer.fingerprint, "hash": "sha256",
                "canonicalization": "RFC8785"}
    for d in (layout.records, layout.checkpoints, layout.vkey.parent):
        d.mkdir(parents=True, exist_ok=True)
    layout.vkey.write_text(signer.to_vkey() + "\n")
    tmp = layout.manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, layout.manifest)
    return manifest
