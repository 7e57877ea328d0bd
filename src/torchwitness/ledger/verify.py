"""Verify a run folder end to end. Standard library and ``cryptography`` only: no torch import.

Steps, in order; the first failure raises :class:`~torchwitness.errors.VerificationError` naming the first
bad record (its seq) or checkpoint:

1. The manifest, the signer's public key and (when given) the pinned fingerprint agree. Unpinned, the key is the
   one inside the folder: that proves integrity, not authorship.
2. Every checkpoint parses as a signed note, names this run's origin, carries a valid signature, and names the
   checkpoint before it (a deleted note breaks that chain, see :mod:`torchwitness.ledger.checkpoints`).
3. Every record line is hashed as an RFC 9162 leaf; the tree over them must reproduce every checkpoint root.
   Records no checkpoint covers fail verification, unless ``allow_unsigned_tail`` asks for a live view of a run
   still being written (never for a run that ended: a ``run.end`` no later ``run.start`` follows).
4. When a root does not match, the writer's leaf index locates the record: the index is trusted only if its
   own tree reproduces every signed root, so a forger cannot point the blame elsewhere by editing it.
5. ``since``: an RFC 9162 consistency proof from a checkpoint the verifier kept to the newest one (no rollback or
   fork since).
6. Optionally (``deep``): every record is canonical RFC 8785 JSON with the right seq and run id.
7. Records a reopened ledger adopted uncovered (``ledger.recovered``) must match the digest it recorded and are
   reported as signed late; blobs match their names; erasure records are tallied against personal commitments.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from torchwitness.errors import InputError, VerificationError
from torchwitness.ledger.checkpoints import check_chain, read_note
from torchwitness.ledger.erasure import has_pending
from torchwitness.ledger.keys import PublicKey, read_vkey
from torchwitness.ledger.layout import RUN_MANIFEST, Layout, read_manifest
from torchwitness.ledger.merkle import HASH_SIZE, MerkleTree, leaf_hashes, verify_consistency
from torchwitness.ledger.note import SignedCheckpoint, parse
from torchwitness.ledger.parallel import parallel_roots
from torchwitness.ledger.reader import parse_record
from torchwitness.ledger.segments import hash_segment, read_index, read_segments

if TYPE_CHECKING:
    from torchwitness.ledger.distributed import RunVerifyResult

_ERASURE = b'"kind":"erasure"'
_RECOVERED = b'"kind":"ledger.recovered"'
_RUN_END = b'"kind":"run.end"'
_RUN_START = b'"kind":"run.start"'
_PERSONAL = re.compile(rb'"\$personal":"(hmac-sha256:[0-9a-f]{64})"')
UNPINNED = "integrity only; pin --key for authorship"


@dataclass
class VerifyResult:
    run: str
    records: int
    checkpoints: int
    covered: int
    root: bytes
    signer: str
    pinned: bool = False
    since: int | None = None  # size of the kept checkpoint the run was proven to extend
    signed_late: list[tuple[int, int, int]] = field(default_factory=list)  # first, last, ledger.recovered seq
    erased_payloads: int = 0
    erasures: int = 0
    torn_tail_bytes: int = 0
    blobs: int = 0
    notes: list[str] = field(default_factory=list)
    origin: str = ""

    @property
    def uncovered(self) -> int:
        return self.records - self.covered

    def summary(self) -> str:
        head = "OK" if not self.uncovered else "LIVE VIEW (not fully signed)"
        parts = [f"{head} {self.records} records", f"{self.checkpoints} checkpoints",
                 f"root sha256:{self.root.hex()}",
                 f"signer {self.signer}" + ("" if self.pinned else f" ({UNPINNED})"), f"origin {self.origin}"]
        if self.since is not None:
            parts.append(f"extends the kept checkpoint of size {self.since}")
        if self.uncovered:
            parts.append(f"NOT SIGNED: records seq {self.covered}..{self.records - 1} (no checkpoint covers them)")
        for first, last, by in self.signed_late:
            parts.append(f"records seq {first}..{last} signed late (adopted uncovered at reopen, ledger.recovered "
                         f"seq {by})")
        if self.erasures:
            parts.append(f"{self.erased_payloads} personal payloads erased")
        return ", ".join(parts)


def load_public_key(layout: Layout, manifest: dict, pin: str | None) -> PublicKey:
    if not layout.vkey.exists():
        raise VerificationError(f"public key {layout.vkey} is missing")
    key = read_vkey(layout.vkey, VerificationError)
    if key.fingerprint != manifest.get("signer"):
        raise VerificationError(f"public key fingerprint {key.fingerprint} does not match the signer "
                                f"{manifest.get('signer')} in ledger.json")
    if pin is not None and key.fingerprint != normalise_fingerprint(pin):
        raise VerificationError(f"run is signed by {key.fingerprint}, not by the pinned key {pin}")
    return key


def normalise_fingerprint(text: str) -> str:
    """A pinned key as ``sha256:`` and 64 lower-case hex digits (the prefix and case are optional when given);
    anything else is bad input, not a run signed by someone else."""
    normal = text.strip().lower()
    normal = normal if normal.startswith("sha256:") else f"sha256:{normal}"
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", normal):
        raise InputError(f"pinned key {text!r} is not a signer fingerprint (sha256: and 64 hex digits)")
    return normal


def load_checkpoints(layout: Layout, manifest: dict, key: PublicKey) -> list[SignedCheckpoint]:
    """Every checkpoint of the run, verified and in size order."""
    out = []
    for path in layout.checkpoint_files():
        signed = read_note(path)
        size = signed.checkpoint.size
        if not path.stem.isdigit() or int(path.stem) != size:
            raise VerificationError(f"{path.name} holds a checkpoint of size {size}", checkpoint=size)
        if signed.checkpoint.origin != manifest["origin"]:
            raise VerificationError(f"checkpoint origin {signed.checkpoint.origin!r} is not this run's "
                                    f"{manifest['origin']!r}", checkpoint=size)
        signed.verify(key)
        out.append(signed)
    return sorted(out, key=lambda c: c.checkpoint.size)


def _index_is_trusted(index: list[bytes], checkpoints: list[SignedCheckpoint]) -> bool:
    """The leaf index may be used to name records only if its own tree reproduces every signed root."""
    covered = checkpoints[-1].checkpoint.size
    if len(index) < covered:
        return False
    tree = MerkleTree(index[:covered])
    return all(tree.root(c.checkpoint.size) == c.checkpoint.root for c in checkpoints)


def _first_difference(leaves: list[bytes], index: list[bytes]) -> int | None:
    for seq in range(min(len(leaves), len(index))):
        if leaves[seq] != index[seq]:
            return seq
    return None


def _locate(leaves: list[bytes], index: list[bytes], checkpoints: list[SignedCheckpoint]) -> VerificationError:
    """Name the first bad record of a ledger whose records do not reproduce its checkpoints."""
    covered = checkpoints[-1].checkpoint.size
    if _index_is_trusted(index, checkpoints):
        seq = _first_difference(leaves, index)
        if seq is not None:
            return VerificationError("record does not match the signed tree (altered, inserted, deleted or moved)",
                                     seq=seq, expected=index[seq].hex(), computed=leaves[seq].hex())
    if len(leaves) < covered:
        return VerificationError(f"record is missing: checkpoint {covered} covers {covered} records, the folder "
                                 f"holds {len(leaves)}", seq=len(leaves), checkpoint=covered)
    tree = MerkleTree(leaves)
    previous = 0
    for signed in checkpoints:
        size = signed.checkpoint.size
        if tree.root(size) != signed.checkpoint.root:
            return VerificationError(f"a record among seq {previous}..{size - 1} was altered (checkpoint root does "
                                     "not reproduce, and the leaf index is not trustworthy enough to say which)",
                                     seq=previous, checkpoint=size)
        previous = size
    raise AssertionError("_locate called on a ledger whose roots all reproduce")


def verify_run(root: str | Path, *, key: str | None = None, deep: bool = False, since: str | None = None,
               allow_unsigned_tail: bool = False, origin: str | None = None) -> VerifyResult | RunVerifyResult:
    """Verify the run folder ``root``; return a summary or raise ``VerificationError``.

    ``key`` pins the signer's fingerprint (without it the key inside the folder is used: integrity, not
    authorship); ``since`` is the text of a checkpoint saved earlier (``torchwitness checkpoint``), which the run
    must still extend (detects a rollback or fork of the whole folder); ``allow_unsigned_tail`` accepts records
    after the newest checkpoint of a run still being written, naming them in the result. ``origin`` pins the run's
    identity (the name its checkpoints carry): a copy re-signed under a new origin, which a witness would cosign as
    a new log, is refused. A distributed run folder
    (``run.json`` and one shard per rank) is verified shard by shard and against its run-level checkpoints.
    """
    if key is not None:  # a malformed pin is the caller's mistake (exit 2), not a run that fails to verify
        key = normalise_fingerprint(key)
    layout = Layout(Path(root))
    if (layout.root / RUN_MANIFEST).exists():
        from torchwitness.ledger.distributed import verify_distributed

        return verify_distributed(layout.root, key=key, deep=deep, since=since,
                                  allow_unsigned_tail=allow_unsigned_tail, origin=origin)
    manifest = read_manifest(layout.root)
    if origin is not None and manifest.get("origin") != origin:
        raise VerificationError(f"run is the log {manifest.get('origin')!r}, not the pinned origin {origin!r}")
    try:
        return _verify_single(layout, manifest, key=key, deep=deep, since=since,
                              allow_unsigned_tail=allow_unsigned_tail)
    except InputError as e:  # a run folder whose parts are damaged (a segment that is a folder, ...) fails to verify
        raise VerificationError(str(e)) from None


def _verify_single(layout: Layout, manifest: dict, *, key: str | None, deep: bool, since: str | None,
                   allow_unsigned_tail: bool) -> VerifyResult:
    public = load_public_key(layout, manifest, key)
    checkpoints = load_checkpoints(layout, manifest, public)
    if not checkpoints:
        raise VerificationError("the run has no signed checkpoint, so nothing in it can be verified")
    check_chain(checkpoints)

    segments = layout.segments()
    for i, path in enumerate(segments):
        if path.name != layout.segment(i).name:
            raise VerificationError(f"segment {layout.segment(i).name} is missing (found {path.name})",
                                    seq=i * manifest["segment_records"])
    per_segment = manifest["segment_records"]
    covered = checkpoints[-1].checkpoint.size
    needles = (_ERASURE, _RECOVERED)
    fast = parallel_roots(segments, per_segment, [c.checkpoint.size for c in checkpoints], needles)
    if fast is not None and fast.count == covered and since is None and all(
            fast.roots[c.checkpoint.size] == c.checkpoint.root for c in checkpoints):
        count, torn, found = fast.count, fast.torn, fast.found
    else:  # one process, every leaf kept: needed to name a bad record, check an unsigned tail or `since`
        count, torn, found = _verify_sequential(layout, segments, checkpoints, public, manifest, since)
    indexed = layout.index.stat().st_size // HASH_SIZE if layout.index.exists() else 0
    if indexed > count:
        raise VerificationError(f"record is missing: the writer indexed {indexed} records, the folder holds "
                                f"{count}", seq=count)

    result = VerifyResult(run=manifest["run"], records=count, checkpoints=len(checkpoints),
                          covered=covered, root=checkpoints[-1].checkpoint.root, signer=public.fingerprint,
                          pinned=key is not None, torn_tail_bytes=torn,
                          since=None if since is None else parse(since).checkpoint.size, origin=manifest["origin"])
    if deep or found or count > covered:  # all need the parsed lines, which the fast path never builds
        lines = [line for seg in read_segments(layout) for line in seg.lines]
        _check_tail(lines, covered, allow_unsigned_tail)
        if deep:
            _deep_check(lines, manifest["run"])
        if _ERASURE in found:
            _tally_erasures(lines, result)
        if _RECOVERED in found:
            result.signed_late = _signed_late(lines, covered)
    _check_run_id(layout, manifest["run"])
    result.blobs = _check_blobs(layout)
    if torn:
        ended = _ended_at([line for seg in read_segments(layout) for line in seg.lines])
        if ended is not None:  # nothing is written after run.end: no crash explains these bytes
            raise VerificationError(f"{torn} bytes after the sealed run's end (run.end at seq {ended}) that no record "
                                    "holds (a crash while reopening? open the run with resume=True to recover it)",
                                    seq=count)
        result.notes.append(f"{torn} bytes of a torn final line (a crash before recovery; not covered)")
    if has_pending(layout.personal) or has_pending(layout.inputs):
        result.notes.append("an erasure was interrupted before it deleted anything: rerun it, or open the run to "
                            "append, to finish it")
    return result


def _check_tail(lines: list[bytes], covered: int, allow: bool) -> None:
    """Refuse records no checkpoint covers, unless a live view of a run that has not ended was asked for."""
    if len(lines) <= covered:
        return
    span = f"records seq {covered}..{len(lines) - 1} are not covered by any signed checkpoint"
    ended = _ended_at(lines)
    if ended is not None:
        raise VerificationError(f"{span}, and the run ended (run.end at seq {ended}): a sealed run has no unsigned "
                                "records", seq=covered)
    if not allow:
        raise VerificationError(f"{span} (a run still being written: --allow-unsigned-tail shows them as a live "
                                "view)", seq=covered)


def _ended_at(lines: list[bytes]) -> int | None:
    """The seq of the run.end no later run.start follows (the run is sealed), or None while a session is open."""
    ended = None
    for seq, line in enumerate(lines):
        if _RUN_END in line or _RUN_START in line:  # cheap test first; the parse rules out nested look-alikes
            try:
                kind = json.loads(line).get("kind")
            except (ValueError, AttributeError, RecursionError):
                continue
            ended = seq if kind == "run.end" else None if kind == "run.start" else ended
    return ended


def _signed_late(lines: list[bytes], covered: int) -> list[tuple[int, int, int]]:
    """Ranges a reopened ledger adopted without a checkpoint; each must match the digest it recorded."""
    late = []
    for seq, line in enumerate(lines[:covered]):
        if _RECOVERED not in line:
            continue
        try:
            adopted = json.loads(line)["data"].get("adopted")
            if not adopted:
                continue
            first, last, claimed = int(adopted["first_seq"]), int(adopted["last_seq"]), adopted["leaves_sha256"]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise VerificationError("ledger.recovered record is malformed", seq=seq) from None
        digest = "sha256:" + hashlib.sha256(b"".join(leaf_hashes(lines[first:last + 1]))).hexdigest()
        if not 0 <= first <= last < seq or digest != claimed:
            raise VerificationError(f"ledger.recovered names records seq {first}..{last} that do not match the "
                                    "digest it recorded for them", seq=seq)
        late.append((first, last, seq))
    return late


def _verify_sequential(layout: Layout, segments: list[Path], checkpoints: list[SignedCheckpoint],
                       public: PublicKey, manifest: dict, since: str | None) -> tuple[int, int, frozenset[bytes]]:
    leaves: list[bytes] = []
    torn, found = 0, frozenset[bytes]()
    for i, path in enumerate(segments):
        hashed = hash_segment(path, (_ERASURE, _RECOVERED))
        if hashed.torn and i != len(segments) - 1:
            raise VerificationError(f"{path.name} ends in a torn line", seq=len(leaves) + len(hashed.leaves))
        torn = hashed.torn
        found |= hashed.found
        leaves.extend(hashed.leaves)
    covered = checkpoints[-1].checkpoint.size
    if len(leaves) < covered:
        raise _locate(leaves, read_index(layout), checkpoints)
    tree = MerkleTree(leaves)
    if any(tree.root(c.checkpoint.size) != c.checkpoint.root for c in checkpoints):
        raise _locate(leaves, read_index(layout), checkpoints)
    if len(leaves) > covered:  # records not yet signed: the writer's index still catches edits there
        index = read_index(layout)
        for seq in range(covered, min(len(leaves), len(index))):
            if leaves[seq] != index[seq]:
                raise VerificationError("record after the last checkpoint does not match the writer's index",
                                        seq=seq)
    if since is not None:
        check_since(since, public, manifest["origin"], tree, checkpoints[-1])
    return len(leaves), torn, found


def check_since(text: str, public: PublicKey, origin: str, tree: MerkleTree, newest: SignedCheckpoint) -> None:
    """Raise unless an RFC 9162 consistency proof from the kept checkpoint ``text`` to ``newest`` verifies."""
    old = parse(text)
    old.verify(public)
    size = old.checkpoint.size
    if old.checkpoint.origin != origin:
        raise VerificationError(f"the kept checkpoint is of {old.checkpoint.origin!r}, not of this run's "
                                f"{origin!r}", checkpoint=size)
    new_size = newest.checkpoint.size
    if size > new_size:
        raise VerificationError(f"the run was rolled back: the kept checkpoint covers {size} records, the newest "
                                f"signed checkpoint in the folder {new_size}", seq=new_size, checkpoint=size)
    proof = tree.consistency_proof(size, new_size)
    try:
        verify_consistency(size, new_size, old.checkpoint.root, newest.checkpoint.root, proof)
    except VerificationError as e:
        raise VerificationError(f"the run no longer extends the kept checkpoint (history was rewritten or "
                                f"forked): {e.reason}", checkpoint=size) from None


def _deep_check(lines: list[bytes], run_id: str) -> None:
    # Only deep verification re-canonicalises and validates: both cost far more than hashing.
    import msgspec
    import rfc8785

    from torchwitness.ledger.schema import Envelope, validate

    for seq, line in enumerate(lines):
        try:
            record = json.loads(line)
        except RecursionError:
            raise VerificationError("record is nested too deeply to read", seq=seq) from None
        except ValueError as e:
            raise VerificationError(f"record is not valid JSON: {e}", seq=seq) from None
        if not isinstance(record, dict):
            raise VerificationError("record is not a JSON object", seq=seq)
        try:
            canonical = rfc8785.dumps(record)
        except (rfc8785.CanonicalizationError, RecursionError) as e:  # e.g. an integer beyond 2**53
            raise VerificationError(f"record has no RFC 8785 canonical form: {type(e).__name__}: {e}",
                                    seq=seq) from None
        if canonical != line:
            raise VerificationError("record is not in RFC 8785 canonical form", seq=seq)
        if record.get("seq") != seq:
            raise VerificationError(f"record says seq {record.get('seq')!r} at position {seq}", seq=seq)
        if record.get("run") != run_id:
            raise VerificationError(f"record belongs to run {record.get('run')!r}", seq=seq)
        try:
            envelope = msgspec.convert(record, Envelope)
            validate(envelope.kind, envelope.data)
        except msgspec.ValidationError as e:
            raise VerificationError(f"record does not fit the schema: {e}", seq=seq) from None


def _tally_erasures(lines: list[bytes], result: VerifyResult) -> None:
    erased: set[str] = set()
    for seq, line in enumerate(lines):
        if _ERASURE in line:
            record = parse_record(line, f"record seq {seq}")
            commitments = record["data"].get("commitments", []) if isinstance(record["data"], dict) else []
            erased.update(c for c in commitments if isinstance(c, str))
            result.erasures += 1
    if erased:
        result.erased_payloads = sum(
            1 for line in lines if b"$personal" in line for c in _PERSONAL.findall(line) if c.decode() in erased)


def _check_blobs(layout: Layout) -> int:
    import hashlib

    count = 0
    if layout.blobs.is_dir():
        for path in sorted(layout.blobs.glob("sha256-*")):
            if path.suffix == ".tmp":
                continue
            if hashlib.sha256(path.read_bytes()).hexdigest() != path.name.removeprefix("sha256-"):
                raise VerificationError(f"blob {path.name} does not match its content digest")
            count += 1
    return count


def _check_run_id(layout: Layout, run_id: str) -> None:
    """``ledger.json`` is not signed: its run id is vouched for only by the first (signed) record naming it, which
    reports and cards then quote as the run's."""
    segments = layout.segments()
    if not segments:
        return
    with segments[0].open("rb") as f:
        first = f.readline()
    try:
        named = json.loads(first).get("run")
    except (ValueError, AttributeError):
        return  # an unreadable first record fails the hash checks above
    if named != run_id:
        raise VerificationError(f"ledger.json names run {run_id!r}, but the signed records are of run {named!r}",
                                seq=0)

