"""Inclusion proofs a third party checks offline: one record, its audit path and the signed checkpoint.

A proof document is self-contained JSON::

    {"format": "torchwitness-inclusion-proof/1", "origin": ..., "seq": N, "record": "<canonical JSON line>",
     "tree_size": S, "path": ["<hex>", ...], "checkpoint": "<signed note>", "verifier_key": "<vkey>"}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, ProofError, VerificationError
from torchwitness.jsonfile import parse_json, read_json
from torchwitness.ledger.keys import PublicKey
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.merkle import MerkleTree, leaf_hash, leaf_hashes, verify_inclusion
from torchwitness.ledger.note import parse
from torchwitness.ledger.segments import read_all_lines
from torchwitness.ledger.verify import load_checkpoints, load_public_key, normalise_fingerprint

PROOF_FORMAT = "torchwitness-inclusion-proof/1"


class Prover:
    """Inclusion proofs for any number of records of one run, which is read and checked against its newest
    signed checkpoint once (building the tree is the cost of a proof; an audit path is then O(log n)).

    >>> prover = Prover("runs/demo")                                  # doctest: +SKIP
    >>> proofs = [prover.prove(seq) for seq in (3, 17, 250)]          # doctest: +SKIP
    """

    def __init__(self, root: str | Path) -> None:
        layout = Layout(Path(root))
        self._manifest = read_manifest(layout.root)
        self._public = load_public_key(layout, self._manifest, None)
        checkpoints = load_checkpoints(layout, self._manifest, self._public)  # in size order
        self._lines = read_all_lines(layout)
        self._signed = checkpoints[-1] if checkpoints else None
        self._tree: MerkleTree | None = None
        if self._signed is not None:
            size = self._signed.checkpoint.size
            self._tree = MerkleTree(leaf_hashes(self._lines[:size]))
            if self._tree.root() != self._signed.checkpoint.root:
                raise VerificationError("records do not reproduce the newest checkpoint; run 'torchwitness verify'",
                                        checkpoint=size)

    def prove(self, seq: int) -> dict[str, Any]:
        """An inclusion proof for record ``seq`` against the newest checkpoint that covers it."""
        lines = self._lines
        if not 0 <= seq < len(lines):
            raise InputError(f"no record seq {seq}: the run holds seq 0..{len(lines) - 1}")
        if self._signed is None or self._signed.checkpoint.size <= seq:
            raise InputError(f"record seq {seq} is not covered by a checkpoint yet; close the run or call "
                             "ledger.checkpoint() first")
        size = self._signed.checkpoint.size
        return {
            "format": PROOF_FORMAT,
            "origin": self._manifest["origin"],
            "seq": seq,
            "record": lines[seq].decode(),
            "tree_size": size,
            "path": [h.hex() for h in self._tree.inclusion_proof(seq, size)],
            "checkpoint": self._signed.text,
            "verifier_key": self._public.to_vkey(),
        }


def prove(root: str | Path, seq: int) -> dict[str, Any]:
    """An inclusion proof for record ``seq`` against the newest checkpoint that covers it (see :class:`Prover`
    for many records)."""
    return Prover(root).prove(seq)


@dataclass(frozen=True)
class ProofResult:
    seq: int
    tree_size: int
    signer: str
    record: dict[str, Any]

    def summary(self) -> str:
        return (f"OK record seq {self.seq} ({self.record.get('kind')}) is included in the signed tree of "
                f"size {self.tree_size}, signer {self.signer}")


def verify_proof(doc: dict[str, Any], *, key: str | None = None) -> ProofResult:
    """Check a proof document; raise ``ProofError``/``VerificationError`` naming what failed."""
    try:
        if doc["format"] != PROOF_FORMAT:
            raise ProofError(f"unknown proof format {doc['format']!r}")
        seq, size = int(doc["seq"]), int(doc["tree_size"])
        record_bytes = doc["record"].encode()
        record = parse_json(record_bytes, "the proof's record", ProofError)
        if not isinstance(record, dict):
            raise ProofError("the proof's record is not a JSON object")
        path = [bytes.fromhex(h) for h in doc["path"]]
        public = PublicKey.from_vkey(doc["verifier_key"])
        signed = parse(doc["checkpoint"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ProofError(f"proof document is malformed: {type(e).__name__}: {e}") from None
    if key is not None and public.fingerprint != normalise_fingerprint(key):
        raise VerificationError(f"proof is signed by {public.fingerprint}, not by the pinned key {key}")
    signed.verify(public)
    if signed.checkpoint.origin != doc.get("origin"):
        raise ProofError("proof origin does not match its checkpoint")
    if signed.checkpoint.size != size:
        raise ProofError(f"proof is for tree size {size}, its checkpoint is size {signed.checkpoint.size}")
    if record.get("seq") != seq:
        raise ProofError(f"proof claims seq {seq} for a record that says seq {record.get('seq')}", seq=seq)
    verify_inclusion(seq, size, leaf_hash(record_bytes), path, signed.checkpoint.root)
    return ProofResult(seq, size, public.fingerprint, record)


def load_proof(path: str | Path) -> dict[str, Any]:
    return read_json(path, "proof file")
