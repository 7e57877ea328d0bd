"""Run-level checkpoints over per-rank shards, and their verification. No torch import.

Under ``torch.distributed`` every rank writes its own ledger shard (``RUN/rank-N``) with no cross-rank locking.
At synchronisation points (``Run.sync()``, and ``Run.close()``) every rank checkpoints its shard, the signed
heads are gathered to rank 0 in one small collective, and rank 0 signs a *run-level checkpoint*: an RFC 9162 tree
whose leaves are the canonical JSON heads ``{rank, origin, size, root, signer}`` in rank order. Its note sits in
``RUN/checkpoints/NNNNNN.note`` with the heads beside it in ``NNNNNN.heads.json``.

Verification checks every shard on its own (naming the rank of a bad record), then that each run-level
checkpoint is signed by rank 0's key, lists every rank once, and commits to shard heads that the shards really
signed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785

from torchwitness.errors import InputError, VerificationError
from torchwitness.ledger.keys import PublicKey
from torchwitness.ledger.layout import RUN_MANIFEST
from torchwitness.ledger.merkle import MerkleTree, leaf_hashes
from torchwitness.ledger.note import Checkpoint, parse

RUN_FORMAT = "torchwitness-run/1"


def shard_dir(root: Path, rank: int) -> Path:
    return root / f"rank-{rank}"


def write_run_manifest(root: Path, run_id: str, world_size: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / RUN_MANIFEST
    if path.exists():
        existing = json.loads(path.read_text())
        if existing.get("run") != run_id or existing.get("world_size") != world_size:
            raise InputError(f"{root} holds run {existing.get('run')} with world size {existing.get('world_size')}, "
                             f"not run {run_id} with world size {world_size}")
        return
    path.write_text(json.dumps({"format": RUN_FORMAT, "run": run_id, "world_size": world_size}, indent=2) + "\n")


def _head_leaves(heads: list[dict[str, Any]]) -> list[bytes]:
    return leaf_hashes([rfc8785.dumps(h) for h in heads])


def write_run_checkpoint(root: Path, run_id: str, heads: list[dict[str, Any]], sign) -> Path:
    """Rank 0: sign a checkpoint over the gathered shard heads (``sign`` is ``Ledger.sign``)."""
    heads = sorted(heads, key=lambda h: h["rank"])
    tree = MerkleTree(_head_leaves(heads))
    folder = root / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    number = len(list(folder.glob("*.note"))) + 1
    note = folder / f"{number:06d}.note"
    (folder / f"{number:06d}.heads.json").write_text(json.dumps(heads, indent=2) + "\n")
    note.write_text(sign(Checkpoint(f"torchwitness/{run_id}/run", len(heads), tree.root())))
    return note


@dataclass
class RunVerifyResult:
    run: str
    world_size: int
    shards: list[Any]  # VerifyResult per rank
    run_checkpoints: int
    root: bytes
    notes: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.shards)

    def summary(self) -> str:
        return (f"OK {self.records} records in {self.world_size} rank shards, {self.run_checkpoints} run-level "
                f"checkpoints, run root sha256:{self.root.hex()}, signer {self.shards[0].signer}")


def verify_distributed(root: Path, *, key: str | None = None, deep: bool = False) -> RunVerifyResult:
    from torchwitness.ledger.verify import verify_run

    manifest = json.loads((root / RUN_MANIFEST).read_text())
    if manifest.get("format") != RUN_FORMAT:
        raise VerificationError(f"unsupported run format {manifest.get('format')!r}")
    world = manifest["world_size"]
    shards = []
    for rank in range(world):
        folder = shard_dir(root, rank)
        if not folder.is_dir():
            raise VerificationError(f"rank {rank}: shard {folder.name} is missing")
        try:
            shards.append(verify_run(folder, key=key if rank == 0 else None, deep=deep))
        except VerificationError as e:
            raise VerificationError(f"rank {rank}: {e}", expected=e.expected, computed=e.computed) from None
    signer = PublicKey.from_vkey((shard_dir(root, 0) / "keys" / "signer.vkey").read_text())
    notes = sorted((root / "checkpoints").glob("*.note")) if (root / "checkpoints").is_dir() else []
    if not notes:
        raise VerificationError("the distributed run has no run-level checkpoint (did every rank close the Run?)")
    last_root = b""
    for note in notes:
        signed = parse(note.read_text())
        try:
            signed.verify(signer)
        except VerificationError as e:
            raise VerificationError(f"run-level checkpoint {note.name}: {e.reason}") from None
        heads = json.loads(note.with_suffix(".heads.json").read_text())
        if [h["rank"] for h in heads] != list(range(world)):
            raise VerificationError(f"run-level checkpoint {note.name} does not list every rank once")
        if MerkleTree(_head_leaves(heads)).root() != signed.checkpoint.root or signed.checkpoint.size != world:
            raise VerificationError(f"run-level checkpoint {note.name} does not commit to its shard heads")
        for head in heads:
            shard_note = shard_dir(root, head["rank"]) / "checkpoints" / f"{head['size']:012d}.note"
            if not shard_note.exists() or parse(shard_note.read_text()).checkpoint.root.hex() != head["root"]:
                raise VerificationError(f"rank {head['rank']}: shard head of size {head['size']} in {note.name} is "
                                        "not a checkpoint the shard signed", seq=head["size"])
        last_root = signed.checkpoint.root
    return RunVerifyResult(manifest["run"], world, shards, len(notes), last_root)
