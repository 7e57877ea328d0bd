"""Run-level checkpoints over per-rank shards, and their verification. No torch import.

Under ``torch.distributed`` every rank writes its own ledger shard (``RUN/rank-N``) with no cross-rank locking.
At synchronisation points (``Run.sync()``, and ``Run.close()``) every rank checkpoints its shard, the signed
heads are gathered to rank 0 in one small collective, and rank 0 signs a *run-level checkpoint*
``RUN/checkpoints/NNNNNN.note``: a C2SP signed note of origin ``torchwitness/<run>/run`` whose root is the RFC 9162
tree over the canonical JSON heads ``{rank, origin, size, root, signer}`` in rank order. The heads themselves are
extension lines of the note (``torchwitness-head RANK SIZE ROOT SIGNER``), so one note is self-contained, and a
``torchwitness-prev`` line chains it to the run-level note before it.

Rank 0's signature over a head *authorises* that rank's key (``SIGNER``): verification checks every shard against
the key its rank was authorised with, so pinning the run's key (rank 0's) pins every shard. A shard re-signed
with another key fails, as does a run-level note deleted from the chain. ``since`` takes a kept run-level note
(``torchwitness checkpoint RUN``) and proves by RFC 9162 consistency that every shard extends the head it lists.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785

from torchwitness.errors import InputError, VerificationError
from torchwitness.jsonfile import read_json
from torchwitness.ledger.checkpoints import check_chain, read_note
from torchwitness.ledger.keys import PublicKey
from torchwitness.ledger.layout import RUN_MANIFEST, Layout, read_manifest
from torchwitness.ledger.merkle import EMPTY_ROOT, MerkleTree, leaf_hashes
from torchwitness.ledger.note import HEAD, Checkpoint, SignedCheckpoint, b64, parse, prev_line, unb64

RUN_FORMAT = "torchwitness-run/1"


def shard_dir(root: Path, rank: int) -> Path:
    return root / f"rank-{rank}"


def run_origin(run_id: str) -> str:
    return f"torchwitness/{run_id}/run"


def write_run_manifest(root: Path, run_id: str, world_size: int) -> None:
    """Rank 0, at start: name the run (or check an existing one names it) and remove run-level notes a crash left
    half-written (only rank 0 writes them)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / RUN_MANIFEST
    if path.exists():
        existing = read_run_manifest(root)
        if existing.get("run") != run_id or existing.get("world_size") != world_size:
            raise InputError(f"{root} holds run {existing.get('run')} with world size {existing.get('world_size')}, "
                             f"not run {run_id} with world size {world_size}")
        for stale in (root / "checkpoints").glob("*.tmp") if (root / "checkpoints").is_dir() else []:
            stale.unlink(missing_ok=True)
        return
    path.write_text(json.dumps({"format": RUN_FORMAT, "run": run_id, "world_size": world_size}, indent=2) + "\n")


def _head_leaves(heads: list[dict[str, Any]]) -> list[bytes]:
    return leaf_hashes([rfc8785.dumps(h) for h in heads])


def run_notes(root: Path) -> list[Path]:
    folder = root / "checkpoints"
    return sorted(folder.glob("[0-9]*.note")) if folder.is_dir() else []


def write_run_checkpoint(root: Path, run_id: str, heads: list[dict[str, Any]], sign) -> Path:
    """Rank 0: sign a checkpoint over the gathered shard heads (``sign`` is ``Ledger.sign``)."""
    heads = sorted(heads, key=lambda h: h["rank"])
    notes = run_notes(root)
    prev = read_note(notes[-1]).checkpoint if notes else None
    lines = [prev_line(prev.size, prev.root) if prev else prev_line(0, EMPTY_ROOT)]
    lines += [f"{HEAD} {h['rank']} {h['size']} {b64(bytes.fromhex(h['root']))} {h['signer']}" for h in heads]
    text = sign(Checkpoint(run_origin(run_id), len(heads), MerkleTree(_head_leaves(heads)).root(), tuple(lines)))
    folder = root / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / f"{int(notes[-1].stem) + 1 if notes else 1:06d}.note"
    tmp = note.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, note)
    return note


def heads_of(signed: SignedCheckpoint, run_id: str, world: int) -> list[dict[str, Any]]:
    """The shard heads a run-level note lists, checked to be every rank once and to reproduce its root."""
    heads = []
    for fields in signed.checkpoint.extension(HEAD):
        if len(fields) != 4 or not fields[0].isdigit() or not fields[1].isdigit():
            raise VerificationError("run-level checkpoint has a malformed torchwitness-head line")
        rank = int(fields[0])
        heads.append({"rank": rank, "origin": f"torchwitness/{run_id}/rank-{rank}", "size": int(fields[1]),
                      "root": unb64(fields[2], "shard head root", size=32).hex(), "signer": fields[3]})
    if [h["rank"] for h in heads] != list(range(world)) or signed.checkpoint.size != world:
        raise VerificationError("run-level checkpoint does not list every rank once")
    if MerkleTree(_head_leaves(heads)).root() != signed.checkpoint.root:
        raise VerificationError("run-level checkpoint does not commit to its shard heads")
    return heads


@dataclass
class RunVerifyResult:
    run: str
    world_size: int
    shards: list[Any]  # VerifyResult per rank
    run_checkpoints: int
    root: bytes
    pinned: bool = False
    since: int | None = None  # run-level checkpoints are not numbered by size: 1 when a kept one was checked
    notes: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.shards)

    def summary(self) -> str:
        from torchwitness.ledger.verify import UNPINNED

        head = "OK" if not any(s.uncovered for s in self.shards) else "LIVE VIEW (not fully signed)"
        parts = [f"{head} {self.records} records in {self.world_size} rank shards", f"run {self.run}",
                 f"{self.run_checkpoints} run-level checkpoints", f"run root sha256:{self.root.hex()}",
                 f"signer {self.shards[0].signer}" + ("" if self.pinned else f" ({UNPINNED})")]
        if self.since is not None:
            parts.append("every shard extends the kept run-level checkpoint")
        parts += [f"rank {r}: {s.summary()}" for r, s in enumerate(self.shards) if s.uncovered or s.signed_late]
        return ", ".join(parts)


def _run_key(root: Path, key: str | None) -> PublicKey:
    from torchwitness.ledger.verify import load_public_key

    folder = shard_dir(root, 0)
    try:
        return load_public_key(Layout(folder), read_manifest(folder), key)
    except VerificationError as e:
        raise VerificationError(f"rank 0: {e}") from None


def _signed_heads(signed: SignedCheckpoint, public: PublicKey, run_id: str, world: int, what: str
                  ) -> list[dict[str, Any]]:
    """The heads of a run-level note signed by the run key ``public``; a failure names the note as ``what``."""
    try:
        signed.verify(public)
        if signed.checkpoint.origin != run_origin(run_id):
            raise VerificationError(f"it is of {signed.checkpoint.origin!r}, not of this run's "
                                    f"{run_origin(run_id)!r}")
        return heads_of(signed, run_id, world)
    except VerificationError as e:
        raise VerificationError(f"{what}: {e.reason}") from None


def _authorised_signers(root: Path, run_id: str, world: int, public: PublicKey) -> tuple[list[str], list[Any]]:
    """Verify the chain of run-level notes under the run key; return each rank's authorised key and the heads."""
    notes = run_notes(root)
    if not notes:
        raise VerificationError("the distributed run has no run-level checkpoint (did every rank close the Run?)")
    signed_notes, all_heads = [], []
    signers: list[str] = []
    for path in notes:
        signed = read_note(path)
        heads = _signed_heads(signed, public, run_id, world, f"run-level checkpoint {path.name}")
        listed = [h["signer"] for h in heads]
        if signers and listed != signers:
            raise VerificationError(f"run-level checkpoint {path.name} authorises other rank keys than the one "
                                    "before it")
        signers = listed
        signed_notes.append(signed)
        all_heads.append((path.name, heads))
    try:
        check_chain(signed_notes)
    except VerificationError as e:
        raise VerificationError(f"run-level checkpoints: {e.reason}") from None
    if signers[0] != public.fingerprint:
        raise VerificationError("rank 0's run-level checkpoints list another key for rank 0 than the one signing them")
    return signers, all_heads


def verify_distributed(root: Path, *, key: str | None = None, deep: bool = False, since: str | None = None,
                       allow_unsigned_tail: bool = False, origin: str | None = None) -> RunVerifyResult:
    from torchwitness.ledger.verify import verify_run

    manifest = read_run_manifest(root)
    run_id, world = manifest["run"], manifest["world_size"]
    for rank in range(world):
        if not shard_dir(root, rank).is_dir():
            raise VerificationError(f"rank {rank}: shard {shard_dir(root, rank).name} is missing")
    public = _run_key(root, key)
    signers, all_heads = _authorised_signers(root, run_id, world, public)
    shards = []
    for rank in range(world):
        folder = shard_dir(root, rank)
        shard_origin = read_manifest(folder).get("origin")
        if shard_origin != f"torchwitness/{run_id}/rank-{rank}":
            raise VerificationError(f"rank {rank}: shard {folder.name} holds the ledger of {shard_origin!r}")
        try:
            shards.append(verify_run(folder, key=signers[rank], deep=deep, allow_unsigned_tail=allow_unsigned_tail))
        except VerificationError as e:
            raise VerificationError(f"rank {rank}: {e}", expected=e.expected, computed=e.computed) from None
    for name, heads in all_heads:
        for head in heads:
            shard_note = shard_dir(root, head["rank"]) / "checkpoints" / f"{head['size']:012d}.note"
            if not shard_note.exists() or read_note(shard_note).checkpoint.root.hex() != head["root"]:
                raise VerificationError(f"rank {head['rank']}: shard head of size {head['size']} in {name} is "
                                        "not a checkpoint the shard signed", seq=head["size"])
    # the run vouches for a shard's records through the newest run-level note: records a rank's own key signed
    # beyond the head listed there (after the run's last sync) are not the run's
    newest = {int(h["rank"]): int(h["size"]) for h in all_heads[-1][1]} if all_heads else {}
    for rank, shard in enumerate(shards):
        if newest.get(rank) != shard.covered:
            message = (f"rank {rank}: records up to {shard.covered} are signed by the shard's key alone; the newest "
                       f"run-level checkpoint vouches for {newest.get(rank, 0)}")
            if not allow_unsigned_tail:
                raise VerificationError(message, seq=newest.get(rank, 0))
            shard.notes.append(message)
    note = read_note(run_notes(root)[-1]).checkpoint
    if origin is not None and note.origin != origin:
        raise VerificationError(f"run is the log {note.origin!r}, not the pinned origin {origin!r}")
    result = RunVerifyResult(run_id, world, shards, len(all_heads), note.root, pinned=key is not None)
    if since is not None:
        _check_since(root, since, public, run_id, world)
        result.since = 1
    return result


def _check_since(root: Path, text: str, public: PublicKey, run_id: str, world: int) -> None:
    """Every shard extends the head a kept run-level note lists (RFC 9162 consistency, shard by shard); the shards'
    own notes were verified under their authorised keys before this runs."""
    from torchwitness.ledger.checkpoints import latest
    from torchwitness.ledger.consistency import consistency_hashes
    from torchwitness.ledger.merkle import verify_consistency

    heads = _signed_heads(parse(text), public, run_id, world, "the kept run-level checkpoint")
    for head in heads:
        folder = shard_dir(root, head["rank"])
        try:
            newest = latest(Layout(folder))
            if newest is None:
                raise VerificationError("the shard has no checkpoint")
            proof = consistency_hashes(folder, head["size"])
            verify_consistency(head["size"], newest.checkpoint.size, bytes.fromhex(head["root"]),
                               newest.checkpoint.root, proof)
        except VerificationError as e:
            raise VerificationError(f"rank {head['rank']}: the shard does not extend the kept run-level "
                                    f"checkpoint's head of size {head['size']}: {e.reason}") from None


def read_run_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a distributed run folder (``run.json``), checked; one line naming it otherwise."""
    manifest = read_json(root / RUN_MANIFEST, "run manifest", VerificationError)
    if manifest.get("format") != RUN_FORMAT:
        raise VerificationError(f"unsupported run format in {root / RUN_MANIFEST}")
    if not isinstance(manifest.get("world_size"), int) or manifest["world_size"] < 1 or \
            not isinstance(manifest.get("run"), str):
        raise VerificationError(f"{root / RUN_MANIFEST} names no run id and world size")
    return manifest
