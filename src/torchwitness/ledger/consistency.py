"""RFC 9162 consistency proofs between two signed sizes of one run's ledger, and their offline check.

Public API (what ``torchwitness consistency`` and witnesses use):

* :func:`consistency_hashes` ``(run, old_size, new_size=None) -> list[bytes]``: the raw RFC 9162 section 2.1.4.1
  proof PROOF(old_size, D[new_size]) (the form C2SP ``tlog-witness`` ``add-checkpoint`` sends, one base64 hash a
  line). ``new_size`` defaults to the newest checkpoint and must be the size of a checkpoint in the folder, whose
  signed root the records must reproduce, so the proof always ends at a signed head.
* :func:`consistency_proof` ``(run, old, new_size=None) -> dict``: the same as a self-contained JSON document::

      {"format": "torchwitness-consistency-proof/1", "origin": ..., "old_size": M, "old_root": "<base64>",
       "new_size": N, "new_root": "<base64>", "proof": ["<base64>", ...], "checkpoint": "<signed note of N>",
       "verifier_key": "<vkey>"}

  ``old`` is a tree size or a signed note saved earlier (``torchwitness checkpoint RUN -o FILE``).
* :func:`verify_consistency_proof` ``(doc, old_note, key=None) -> SignedCheckpoint``: checks the document
  against a note the verifier kept (its signature, origin and root) and returns the newer signed checkpoint.

Hashes are base64, as in checkpoints and the witness protocol. Standard library and ``cryptography`` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchwitness.errors import InputError, ProofError, VerificationError
from torchwitness.jsonfile import read_json
from torchwitness.ledger.checkpoints import read_note
from torchwitness.ledger.keys import PublicKey
from torchwitness.ledger.layout import RUN_MANIFEST, Layout, read_manifest
from torchwitness.ledger.merkle import MerkleTree, verify_consistency
from torchwitness.ledger.note import SignedCheckpoint, b64, parse, unb64
from torchwitness.ledger.segments import hash_segment

PROOF_FORMAT = "torchwitness-consistency-proof/1"
RUN_PROOF_FORMAT = "torchwitness-run-consistency-proof/1"


def _tree(layout: Layout, new_size: int | None) -> tuple[MerkleTree, SignedCheckpoint]:
    """The tree over the run's records and the signed checkpoint of ``new_size`` (default: the newest)."""
    files = layout.checkpoint_files()
    if not files:
        raise InputError(f"{layout.root} has no signed checkpoint yet")
    path = files[-1] if new_size is None else layout.checkpoint(new_size)
    if not path.exists():
        raise InputError(f"{layout.root} has no checkpoint of size {new_size}")
    signed = read_note(path)
    leaves: list[bytes] = []
    for segment in layout.segments():
        leaves.extend(hash_segment(segment).leaves)
        if len(leaves) >= signed.checkpoint.size:
            break
    size = signed.checkpoint.size
    if len(leaves) < size:
        raise VerificationError(f"the folder holds {len(leaves)} records, fewer than its checkpoint covers",
                                checkpoint=size)
    tree = MerkleTree(leaves[:size])
    if tree.root() != signed.checkpoint.root:
        raise VerificationError("records do not reproduce the checkpoint; run 'torchwitness verify'", checkpoint=size)
    return tree, signed


def consistency_hashes(run: str | Path, old_size: int, new_size: int | None = None) -> list[bytes]:
    """PROOF(old_size, D[new_size]) over the run's records (RFC 9162 section 2.1.4.1)."""
    tree, _ = _tree(Layout(Path(run)), new_size)
    _check_old_size(old_size, tree.size)
    return tree.consistency_proof(old_size, tree.size)


def _check_old_size(old_size: int, new_size: int) -> None:
    if old_size < 0:
        raise InputError(f"a tree size cannot be negative ({old_size})")
    if old_size > new_size:
        raise VerificationError(f"the checkpoint covers {new_size} records, fewer than {old_size}: the run was "
                                "rolled back, or that size was never signed here", checkpoint=old_size)


def consistency_proof(run: str | Path, old: int | str, new_size: int | None = None) -> dict[str, Any]:
    """A consistency proof document from ``old`` (a size, or the text of a saved signed note) to ``new_size``."""
    layout = Layout(Path(run))
    manifest = read_manifest(layout.root)
    kept = parse(old) if isinstance(old, str) else None
    old_size = kept.checkpoint.size if kept else int(old)
    tree, signed = _tree(layout, new_size)
    _check_old_size(old_size, tree.size)
    if kept and (kept.checkpoint.origin != manifest["origin"] or tree.root(old_size) != kept.checkpoint.root):
        raise VerificationError("the run does not extend the kept checkpoint (another run, or history was "
                                "rewritten or forked)", checkpoint=old_size)
    return {
        "format": PROOF_FORMAT,
        "origin": manifest["origin"],
        "old_size": old_size,
        "old_root": b64(tree.root(old_size)),
        "new_size": tree.size,
        "new_root": b64(tree.root()),
        "proof": [b64(h) for h in tree.consistency_proof(old_size, tree.size)],
        "checkpoint": signed.text,
        "verifier_key": PublicKey.from_vkey(layout.vkey.read_text()).to_vkey(),
    }


def verify_consistency_proof(doc: dict[str, Any], old_note: str, *, key: PublicKey | None = None
                             ) -> SignedCheckpoint:
    """Raise unless ``doc`` proves that its signed checkpoint extends ``old_note``; return that checkpoint.

    Both notes must verify under ``key`` (default: the document's ``verifier_key``, which proves integrity only;
    pass the key you trust to prove authorship).
    """
    try:
        if doc["format"] != PROOF_FORMAT:
            raise ProofError(f"unknown consistency proof format {doc['format']!r}")
        public = key or PublicKey.from_vkey(doc["verifier_key"])
        new = parse(doc["checkpoint"])
        proof = [unb64(h, "proof hash", size=32) for h in doc["proof"]]
        old_size, new_size = int(doc["old_size"]), int(doc["new_size"])
    except (KeyError, TypeError, ValueError, AttributeError, VerificationError) as e:
        raise ProofError(f"consistency proof document is malformed: {e}") from None
    old = parse(old_note)
    old.verify(public)
    new.verify(public)
    if old.checkpoint.origin != new.checkpoint.origin:
        raise ProofError(f"the proof is for {new.checkpoint.origin!r}, the kept checkpoint for "
                         f"{old.checkpoint.origin!r}")
    if (old_size, new_size) != (old.checkpoint.size, new.checkpoint.size):
        raise ProofError(f"the proof is from size {old_size} to {new_size}, the checkpoints are of size "
                         f"{old.checkpoint.size} and {new.checkpoint.size}")
    verify_consistency(old_size, new_size, old.checkpoint.root, new.checkpoint.root, proof)
    return new


def newest_checkpoint(run: str | Path, *, key: str | None = None) -> str:
    """The text of the newest signed checkpoint of a run (run-level for a distributed run), for a verifier to
    keep and later pass to ``verify --since``; its signature is checked under the run's key (pinned by ``key``)."""
    from torchwitness.ledger.checkpoints import latest
    from torchwitness.ledger.distributed import run_notes, shard_dir
    from torchwitness.ledger.verify import load_public_key

    root = Path(run)
    distributed = (root / RUN_MANIFEST).exists()
    keyed = Layout(shard_dir(root, 0) if distributed else root)
    public = load_public_key(keyed, read_manifest(keyed.root), key)
    notes = run_notes(root)
    signed = (read_note(notes[-1]) if notes else None) if distributed else latest(keyed)
    if signed is None:
        raise VerificationError(f"{root} has no signed checkpoint yet")
    signed.verify(public)
    return signed.text


def run_consistency_proof(run: str | Path, kept: str) -> dict[str, Any]:
    """For a distributed run: one consistency proof per shard, from the head a kept run-level note lists."""
    from torchwitness.ledger.distributed import heads_of, shard_dir

    root = Path(run)
    manifest = read_json(root / RUN_MANIFEST, "run manifest")
    signed = parse(kept)
    heads = heads_of(signed, manifest["run"], manifest["world_size"])
    return {"format": RUN_PROOF_FORMAT, "run": manifest["run"], "checkpoint": kept,
            "shards": [consistency_proof(shard_dir(root, h["rank"]), h["size"]) for h in heads]}
