"""Answer "which steps, epochs and checkpoints did this subject influence?", and erase them in one go."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from torchwitness.controls.consent import commitment_root
from torchwitness.controls.provenance import _commitments, side_index
from torchwitness.errors import InputError, VerificationError
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.personal import PersonalStore
from torchwitness.ledger.reader import iter_records
from torchwitness.ledger.schema import register_kind


class ProvenanceAnswer(msgspec.Struct):
    commitment: str
    rows: int
    steps: list[int]
    epochs: list[int]
    checkpoints: list[str]
    verified_steps: int


class ProvenanceErasure(msgspec.Struct):
    """Recorded by the erasure flow: what was revoked, and which saved checkpoints carry the subject's influence."""

    commitment: str
    purposes_revoked: list[str]
    steps: int
    epochs: list[int]
    affected_checkpoints: list[str]


register_kind("provenance.erasure", ProvenanceErasure)


def _commitment(root: Path, subject: Any) -> str:
    if not (side_index(root) / "rows.npy").exists() or not Layout(root).personal.exists():
        raise InputError(f"{root} has no provenance side index (was a ProvenanceRecorder used, and is private/ "
                         "present?)")
    store = PersonalStore(Layout(root).personal)
    try:
        c = store.lookup(subject)
    finally:
        store.close()
    if c is None:
        raise InputError("subject not found in this run (never recorded, or already erased)")
    return c


def _chunks(root: Path) -> list[Path]:
    return sorted(side_index(root).glob("epoch-*.npz"))


def query(run: str | Path, subject: Any, *, verify: bool = True) -> ProvenanceAnswer:
    """The steps, epochs and saved checkpoints whose batches held ``subject``'s rows.

    With ``verify`` every reported step's subject-set root is recomputed from the side index and compared with
    the ``data.provenance`` record, so a side index that disagrees with the signed ledger raises.
    """
    root = Path(run)
    read_manifest(root)
    c = _commitment(root, subject)
    digests = np.load(side_index(root) / "rows.npy")
    target = np.frombuffer(bytes.fromhex(c.split(":", 1)[1]), dtype=np.uint8)
    subject_rows = np.flatnonzero((digests == target).all(1))
    steps, epochs, found = [], [], []
    for path in _chunks(root):
        with np.load(path) as z:
            members, offsets, chunk_steps = z["members"], z["offsets"], z["steps"]
            hit = np.flatnonzero(np.isin(members, subject_rows))
            batches = np.unique(np.searchsorted(offsets, hit, side="right") - 1)
            if len(batches):
                epochs.append(int(z["epoch"]))
                steps += chunk_steps[batches].tolist()
                found += [(int(chunk_steps[b]), members[offsets[b]:offsets[b + 1]]) for b in batches]
    verified = 0
    if verify and found:
        wanted = {s for s, _ in found}
        recorded = {}
        for r in iter_records(root, kinds={"data.provenance"}):
            recorded.update({s: x for s, x in zip(r["data"]["steps"], r["data"]["roots"], strict=True) if s in wanted})
        for step, rows in found:
            computed = commitment_root(_commitments(np.unique(digests[rows].view("V32").ravel())))
            if recorded.get(step) != computed:
                raise VerificationError(f"provenance side index disagrees with the ledger at step {step}",
                                        expected=recorded.get(step), computed=computed)
            verified += 1
    first = min(steps) if steps else None
    checkpoints = [r["data"]["name"] for r in iter_records(root, kinds={"provenance.checkpoint"})
                   if first is not None and r["step"] is not None and r["step"] >= first]
    return ProvenanceAnswer(commitment=c, rows=len(subject_rows), steps=sorted(steps), epochs=epochs,
                            checkpoints=checkpoints, verified_steps=verified)


def _purposes(root: Path, commitment: str) -> list[str]:
    purposes = set()
    blobs = Layout(root).blobs
    for r in iter_records(root, kinds={"consent.grant", "consent.grant_batch"}):
        d = r["data"]
        if r["kind"] == "consent.grant" and d["subject"].get("$personal") == commitment:
            purposes.add(d["purpose"])
        elif r["kind"] == "consent.grant_batch":
            blob = blobs / d["commitments"].replace(":", "-", 1)
            if blob.exists() and commitment.encode() in blob.read_bytes().split(b"\n"):
                purposes.add(d["purpose"])
    return sorted(purposes)


def erase_subject(run: str | Path, subject: Any, *, key_dir: Path | None = None,
                  reason: str = "data subject request (GDPR Art. 17)") -> ProvenanceErasure:
    """Revoke every consent, report the affected checkpoints and crypto-shred the subject, in one call.

    The side index keeps the subject's rows under its commitment: once the salt is shredded that commitment
    links to no one, and keeping it lets the other subjects of the same batches still verify their steps.
    Retraining or unlearning the affected checkpoints is the controller's decision; this names them, in the
    ledger, so that decision is on record too.

    The revocations, the ``provenance.erasure`` record and the ``erasure`` record are one crash-atomic erasure
    (:mod:`torchwitness.ledger.erasure`): all of them are signed before the salt goes. Calling this again after a
    crash finishes the interrupted erasure and returns its report.
    """
    from torchwitness.ledger.inbox import appending

    root = Path(run)
    # Also while a training or serving process holds the run open: it then performs the erasure.
    with appending(root, key_dir=key_dir) as target:
        finished = _finished(target, subject)
        if finished is not None:
            return finished
        answer = query(root, subject)
        purposes = _purposes(root, answer.commitment)
        now = time.time()
        report = ProvenanceErasure(commitment=answer.commitment, purposes_revoked=purposes,
                                   steps=len(answer.steps), epochs=answer.epochs,
                                   affected_checkpoints=answer.checkpoints)
        also = [("consent.revoke", {"subject": {"$personal": answer.commitment}, "purpose": p, "at": now,
                                    "effective": "next_epoch"}) for p in purposes]
        target.erase(values=[subject], reason=reason,
                     also=[*also, ("provenance.erasure", msgspec.to_builtins(report))])
    return report


def _finished(target: Any, subject: Any) -> ProvenanceErasure | None:
    """The report of this subject's erasure if opening the run just finished it (a crash had interrupted it)."""
    if not target.completed_erasures:
        return None
    tag = target.personal.tag(subject)
    for done in target.completed_erasures:
        if tag in done.tags:
            for kind, data in done.records:
                if kind == "provenance.erasure":
                    return msgspec.convert(data, ProvenanceErasure)
    return None
