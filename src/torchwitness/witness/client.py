"""The log's side of ``tlog-witness``: ask witnesses to cosign each checkpoint, off the caller's thread.

A :class:`Cosigner` runs one thread per open ledger. The writer hands it each new checkpoint size; the thread
takes only the newest (a checkpoint that is overtaken while a request is in flight is not sent), posts it with
a consistency proof from the size the witness last cosigned, checks the returned cosignature against the
configured witness key and adds it to ``checkpoints/<size>.note`` by an fsynced rename. The proof is built from
what the thread already knows of the witness's tree (its right edge, :class:`~torchwitness.ledger.merkle.Frontier`)
and the leaf hashes added since, read from ``records/leaves.idx``: O(new records) per checkpoint, never the whole
tree. A witness that is down, slow or refusing costs the run nothing but a ``RuntimeWarning`` and a
``witness.failed`` record when its failure changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from torchwitness.errors import FailureWarnings, InputError, TorchWitnessError, VerificationError
from torchwitness.ledger.checkpoints import read_note
from torchwitness.ledger.layout import Layout, read_manifest
from torchwitness.ledger.merkle import HASH_SIZE, Frontier, MerkleTree
from torchwitness.ledger.note import Signature, SignedCheckpoint, parse
from torchwitness.ledger.schema import register_kind
from torchwitness.witness import write_atomically
from torchwitness.witness.cosign import with_cosignatures
from torchwitness.witness.protocol import BadRequest, Witness, decimal, encode_request


class WitnessRefused(TorchWitnessError):
    """A witness did not cosign: unreachable, or it answered with an error status."""


class WitnessFailed(msgspec.Struct):
    """A witness did not cosign a checkpoint (recorded once per change of its failure)."""

    witness: str  # its verifier key
    url: str
    checkpoint: int  # the size asked for
    error: str  # e.g. "unreachable: ...", "HTTP 422: inconsistent with the checkpoint of size N seen before"


register_kind("witness.failed", WitnessFailed)


def consistency_proof(old: Frontier, new_leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 PROOF(m, D[n]) from the right edge of the old tree (size m) and the leaf hashes m..n-1.

    Every hash the RFC's recursion asks for is either a perfect subtree of the old tree's decomposition (a
    frontier node) or lies wholly among the new leaves, so neither the old leaves nor the whole tree are needed.
    """
    m, n = old.size, old.size + len(new_leaves)
    if m == 0 or m == n:
        return []
    known, lo = {}, 0
    for height, h in old.nodes:
        known[(lo, 1 << height)] = h
        lo += 1 << height
    tail = MerkleTree(new_leaves)

    def mth(lo: int, hi: int) -> bytes:
        return known[(lo, hi - lo)] if hi <= m else tail.subtree(lo - m, hi - m)

    def subproof(k_old: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        size = hi - lo
        if k_old == size:
            return [] if complete else [mth(lo, hi)]
        k = 1 << ((size - 1).bit_length() - 1)
        if k_old <= k:
            return [*subproof(k_old, lo, lo + k, complete), mth(lo + k, hi)]
        return [*subproof(k_old - k, lo + k, hi, False), mth(lo, lo + k)]

    return subproof(m, 0, n, True)


def read_leaves(layout: Layout, lo: int, hi: int) -> list[bytes]:
    """Leaf hashes ``lo..hi-1`` from the writer's index (its own file: every hash reached it before the
    checkpoint that covers it)."""
    with open(layout.index, "rb") as f:
        f.seek(lo * HASH_SIZE)
        data = f.read((hi - lo) * HASH_SIZE)
    if len(data) != (hi - lo) * HASH_SIZE:
        raise WitnessRefused(f"{layout.index} holds fewer than {hi} leaf hashes")
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def post(url: str, body: bytes, timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(65536).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(65536).decode(errors="replace")
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise WitnessRefused(f"unreachable: {reason}") from None


class Cosigner:
    """Requests cosignatures for one ledger's checkpoints from ``witnesses`` on a thread of its own."""

    def __init__(self, layout: Layout, origin: str, witnesses: Iterable[str | Witness], *, timeout: float = 5.0,
                 record: Callable[[str, dict[str, Any]], Any] | None = None, background: bool = True) -> None:
        self._witnesses = [Witness.parse(w) for w in witnesses]
        for w in self._witnesses:
            if w.url is None:
                raise InputError(f"witness {w.key.name} needs a URL to be asked ('VKEY URL')")
        self._layout = layout
        self._origin = origin
        self._timeout = timeout
        self._record = record
        self._known: dict[str, Frontier] = {}  # per witness URL: its tree, as far as this process knows
        self._failures = FailureWarnings()
        self._last_error: dict[str, str] = {}
        self._cond = threading.Condition()
        self._record_lock = threading.Lock()  # never held with _cond: an append may wait for the writer
        self._pending = self._done = 0
        self._closing = False
        self._recording = True
        files = layout.checkpoint_files()
        if files:  # a checkpoint of an earlier session may still lack cosignatures: ask for them first
            self._pending = int(files[-1].name.split(".")[0])
        self._thread = threading.Thread(target=self._run, name=f"torchwitness-cosigner-{origin}", daemon=True)
        if background:
            self._thread.start()

    def submit(self, size: int) -> None:
        """A checkpoint of ``size`` was written (called by the writer thread; returns at once)."""
        with self._cond:
            self._pending = max(self._pending, size)
            self._cond.notify()

    @contextlib.contextmanager
    def closing(self) -> Iterator[None]:
        """Around the ledger's last checkpoint: failures are only warned about from now on (the ledger takes no
        more records); at the end, what is pending (that checkpoint) is sent, waiting at most about one timeout
        per witness, and the thread stops."""
        with self._record_lock:
            self._recording = False
        try:
            yield
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify()
            if self._thread.is_alive():
                self._thread.join(self._timeout * (len(self._witnesses) + 1))

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending > self._done or self._closing)
                if self._pending <= self._done:
                    return
                size = self._done = self._pending
            try:
                self.cosign(size)
            except Exception as e:  # a broken witness or note must never reach the run
                self._failures.warn(f"cannot request cosignatures for checkpoint {size}", e)

    def cosign(self, size: int) -> dict[str, str]:
        """Ask every witness to cosign checkpoint ``size`` and store their cosignatures in its note. Returns
        the error of each witness that did not cosign (empty when all did)."""
        path = self._layout.checkpoint(size)
        signed = read_note(path)
        got: list[Signature] = []
        errors: dict[str, str] = {}
        # All witnesses at once: a slow one must not hold back the others' cosignatures.
        with ThreadPoolExecutor(len(self._witnesses), thread_name_prefix="torchwitness-witness") as pool:
            answers = list(pool.map(lambda w: self._try(w, signed), self._witnesses))
        for witness, answer in zip(self._witnesses, answers, strict=True):
            if isinstance(answer, Signature):
                got.append(answer)
            else:
                errors[witness.key.name] = str(answer)
                self._failed(witness, size, answer)
        if got:
            # Re-read: only this thread rewrites notes, but keep what is there (an earlier witness's lines).
            write_atomically(path, with_cosignatures(read_note(path), got).text)
        return errors

    def _try(self, witness: Witness, signed: SignedCheckpoint) -> Signature | Exception:
        try:
            sig = self._ask(witness, signed)
        except (WitnessRefused, VerificationError, BadRequest, OSError) as e:
            return e
        self._last_error.pop(witness.url or "", None)
        return sig

    def _ask(self, witness: Witness, signed: SignedCheckpoint) -> Signature:
        url = witness.url or ""
        size, root = signed.checkpoint.size, signed.checkpoint.root
        known = self._known.get(url) or Frontier()
        for attempt in range(2):
            new = known.copy()
            tail = read_leaves(self._layout, known.size, size)
            for h in tail:
                new.append(h)
            if new.root() != root:
                raise WitnessRefused(f"the leaf index does not reproduce checkpoint {size}'s root")
            status, body = post(url + "/add-checkpoint",
                                encode_request(known.size, consistency_proof(known, tail), signed.text),
                                self._timeout)
            if status == 200:
                sig = self._cosignature_in(witness, signed, body)
                self._known[url] = new
                return sig
            if status == 409 and attempt == 0:
                theirs = decimal(body.strip(), "size in the witness's 409 answer")
                if theirs > size:
                    raise WitnessRefused(f"the witness has cosigned {theirs} records of this log, more than this "
                                         f"checkpoint's {size}: the run folder was rolled back or forked")
                known = Frontier()
                for i, h in enumerate(read_leaves(self._layout, 0, theirs), 1):
                    known.append(h)
                    if i % 4096 == 0:
                        time.sleep(0)  # a long history (a reopened run): let the recording thread have the GIL
                continue
            raise WitnessRefused(f"HTTP {status}: {body.strip()[:200]}")
        raise WitnessRefused("the witness changed its size twice during one request")

    @staticmethod
    def _cosignature_in(witness: Witness, signed: SignedCheckpoint, body: str) -> Signature:
        answer = parse(signed.text + body)  # the protocol's suggestion: append the lines to the note, then verify
        mine = [s for s in answer.signatures[len(signed.signatures):]
                if s.name == witness.key.name and s.key_id == witness.key.key_id]
        if not mine:
            raise WitnessRefused("the answer holds no cosignature of the configured witness key")
        witness.key.timestamp_of(signed.checkpoint.body(), mine[-1])
        return mine[-1]

    def _failed(self, witness: Witness, size: int, error: Exception) -> None:
        url = witness.url or ""
        self._failures.warn(f"witness {witness.key.name} at {url} did not cosign checkpoint {size}", error, key=url)
        if self._last_error.get(url) == str(error):
            return
        self._last_error[url] = str(error)
        with self._record_lock:
            if self._record is not None and self._recording:
                self._record("witness.failed", {"witness": witness.key.to_vkey(), "url": url,
                                                "checkpoint": size, "error": str(error)})


def shard_folders(run: str | Path) -> list[Path]:
    """The ledger folders of a run: itself, or every rank's shard of a distributed run."""
    root = Path(run)
    manifest = root / "run.json"
    if not manifest.exists():
        read_manifest(root)
        return [root]
    try:
        world = int(json.loads(manifest.read_text())["world_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{manifest} is not a run manifest: {e}") from None
    return [root / f"rank-{rank}" for rank in range(world)]


def submit_run(run: str | Path, witnesses: list[str], *, timeout: float = 10.0) -> list[str]:
    """Ask ``witnesses`` to cosign the newest checkpoint of every shard of a closed run; one line per shard.
    Raise ``VerificationError`` listing what was not cosigned."""
    lines, failed = [], []
    for folder in shard_folders(run):
        layout = Layout(folder)
        manifest = read_manifest(folder)
        files = layout.checkpoint_files()
        if not files:
            failed.append(f"{folder}: no checkpoint to cosign")
            continue
        lock = layout.take_writer_lock()  # a writer holding the run cosigns by itself: never rewrite under it
        try:
            cosigner = Cosigner(layout, manifest["origin"], witnesses, timeout=timeout, background=False)
            size = int(files[-1].name.split(".")[0])
            started = time.monotonic()
            with warnings.catch_warnings():  # each failure is reported below, once
                warnings.simplefilter("ignore", RuntimeWarning)
                errors = cosigner.cosign(size)
        finally:
            os.close(lock)
        failed += [f"{folder}: witness {name}: {error}" for name, error in errors.items()]
        done = len(witnesses) - len(errors)
        lines.append(f"{folder}: checkpoint {size} cosigned by {done} of {len(witnesses)} witnesses "
                     f"({time.monotonic() - started:.2f} s)")
    if failed:
        raise VerificationError("not every checkpoint was cosigned: " + "; ".join(failed))
    return lines
