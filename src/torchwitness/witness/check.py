"""``verify --witness``: the newest checkpoint of a run (of every rank) carries a quorum of valid witness
cosignatures, and a witness asked online has cosigned nothing the run folder does not extend.

Run after :func:`~torchwitness.ledger.verify.verify_run` has proven the folder's records, checkpoints and
signatures: this module adds what only a third party can vouch for.

- Offline (``VKEY``): a witness cosigns a checkpoint only after checking that it extends the last one it
  cosigned for the origin, so a forked or rewritten run cannot carry a quorum of cosignatures on its newest
  checkpoint. A folder rolled back to an earlier, cosigned state still passes offline.
- Online (``VKEY URL``): the witness's newest cosigned checkpoint for each origin is fetched
  (``GET URL/<sha256(origin)>/checkpoint``) and the folder must extend it, which catches that rollback.
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from torchwitness.errors import InputError, VerificationError
from torchwitness.ledger.checkpoints import read_note
from torchwitness.ledger.consistency import consistency_proof
from torchwitness.ledger.keys import PublicKey
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.note import SignedCheckpoint, parse
from torchwitness.ledger.verify import load_public_key
from torchwitness.witness.client import shard_folders
from torchwitness.witness.protocol import Witness, origin_hash


@dataclass(frozen=True)
class _Shard:
    folder: Path
    origin: str
    public: PublicKey
    notes: dict[int, SignedCheckpoint]  # every checkpoint of the folder by size
    lines: list[str]  # what the check found, for the summary

    @property
    def newest(self) -> int:
        return max(self.notes)


@dataclass(frozen=True)
class WitnessPolicy:
    """Which witnesses must have cosigned, and how many of them (``quorum``)."""

    witnesses: tuple[Witness, ...]
    quorum: int
    timeout: float = 10.0

    @classmethod
    def parse(cls, witnesses: list[str], quorum: int | None = None) -> WitnessPolicy:
        """From ``--witness`` specs (``VKEY`` or ``VKEY URL``) and ``--quorum`` (default: all of them)."""
        parsed = tuple(Witness.parse(w) for w in witnesses)
        if len({w.key for w in parsed}) != len(parsed):
            raise InputError("--witness names the same witness key twice")
        quorum = len(parsed) if quorum is None else quorum
        if not parsed or not 1 <= quorum <= len(parsed):
            raise InputError(f"--quorum {quorum} must be between 1 and the number of --witness keys "
                             f"({len(parsed)})")
        return cls(parsed, quorum)

    def check(self, run: str | Path) -> list[str]:
        """Raise ``VerificationError`` unless every shard's newest checkpoint is cosigned by ``quorum`` of the
        witnesses and no witness asked online has cosigned a state the folder does not extend. Returns one
        summary line per shard."""
        out = []
        for folder in shard_folders(run):
            shard = _load(folder)
            try:
                _check_cosignatures(shard, list(self.witnesses), self.quorum)
                for witness in self.witnesses:
                    if witness.url is not None:
                        _check_fresh(shard, witness, self.timeout)
            except VerificationError as e:
                raise VerificationError(f"{folder}: {e}", checkpoint=e.checkpoint) from None
            out.append(f"witnessed {folder}: " + "; ".join(shard.lines))
        return out


def _load(folder: Path) -> _Shard:
    layout = Layout(folder)
    manifest = read_manifest(folder)
    public = load_public_key(layout, manifest, None)  # verify_run already pinned and checked it
    notes = {signed.checkpoint.size: signed for signed in map(read_note, layout.checkpoint_files())}
    if not notes:
        raise VerificationError(f"{folder}: no checkpoint, so nothing can be witnessed")
    return _Shard(folder, manifest["origin"], public, notes, [])


def _check_cosignatures(shard: _Shard, witnesses: list[Witness], quorum: int) -> None:
    for size, note in sorted(shard.notes.items()):
        for witness in witnesses:  # a forged cosignature anywhere is tampering, not merely a missing one
            try:
                witness.key.find(note)
            except VerificationError as e:
                raise VerificationError(e.reason, checkpoint=size) from None
    newest = shard.newest
    signed = {w.key.name: w.key.find(shard.notes[newest]) for w in witnesses}
    have = {name: ts for name, ts in signed.items() if ts is not None}
    if len(have) < quorum:
        missing = ", ".join(sorted(set(signed) - set(have)))
        raise VerificationError(f"the newest checkpoint carries cosignatures of {len(have)} of the {quorum} "
                                f"witnesses required (missing: {missing}): it was not witnessed, or the run was "
                                "forked or rewritten after a witness saw it", checkpoint=newest)
    when = ", ".join(f"{name} at {dt.datetime.fromtimestamp(ts, dt.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
                     for name, ts in sorted(have.items()))
    shard.lines.append(f"checkpoint {newest} cosigned by {len(have)} of {len(witnesses)} witnesses ({when})")


def _fetch(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(1 << 20).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError) as e:
        raise VerificationError(f"cannot ask {url}: {getattr(e, 'reason', e)}; without its answer a rollback "
                                "cannot be ruled out") from None


def _check_fresh(shard: _Shard, witness: Witness, timeout: float) -> None:
    """The witness's newest cosigned checkpoint of this origin must be one the folder extends."""
    url = f"{witness.url}/{origin_hash(shard.origin)}/checkpoint"
    status, text = _fetch(url, timeout)
    if status == 404:
        raise VerificationError(f"witness {witness.key.name} has never cosigned {shard.origin}")
    if status != 200:
        raise VerificationError(f"witness {witness.key.name} answered HTTP {status} at {url}")
    try:
        note = parse(text)
        note.verify(shard.public)
        cosigned = witness.key.find(note)
    except VerificationError as e:
        raise VerificationError(f"witness {witness.key.name} sent a checkpoint that does not verify: {e}") from None
    theirs = note.checkpoint
    if cosigned is None or theirs.origin != shard.origin:
        raise VerificationError(f"witness {witness.key.name} sent a checkpoint it did not cosign for this origin")
    if theirs.size > shard.newest:
        raise VerificationError(f"the run was rolled back: witness {witness.key.name} cosigned a checkpoint of "
                                f"{theirs.size} records, the folder's newest covers {shard.newest}",
                                checkpoint=theirs.size)
    if theirs.size in shard.notes:
        forked = shard.notes[theirs.size].checkpoint.root != theirs.root
    else:  # a size the folder holds no note of (coalesced away): the records decide, as for verify --since
        try:
            consistency_proof(shard.folder, text)
            forked = False
        except VerificationError:
            forked = True
    if forked:
        raise VerificationError(f"the run forked: witness {witness.key.name} cosigned a different tree of "
                                f"{theirs.size} records", checkpoint=theirs.size)
    shard.lines.append(f"{witness.key.name} has cosigned nothing newer")
