"""A C2SP ``tlog-witness``: keeps the latest checkpoint of each log and cosigns only consistent successors.

State folder::

    STATE/witness.ed25519        the witness's private key (PKCS#8 PEM, mode 0600)
    STATE/witness.vkey           its verifier key (cosignature/v1, type 0x04): what logs and verifiers configure
    STATE/logs.json              the log verifier keys it trusts: {"logs": [{"vkey": ..., "origin_prefix": ...}]}
    STATE/origins/<sha256(origin)>.note   the latest checkpoint it cosigned per origin, with the log's and its
                                 own signatures (served at GET /<sha256(origin)>/checkpoint)

A log key is trusted for every origin starting with its ``origin_prefix`` ("" for any origin it signs), so a team
registers its run key once and every run it signs is witnessed. Once an origin is cosigned it is bound to the
keys that signed it: another trusted key cannot take it over. Checking the old size and persisting the new
checkpoint happen under one lock, and the new note is fsynced and renamed into place before the cosignature is
returned, so a SIGKILL at any moment leaves either the old or the new state.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Lock

from torchwitness.errors import (
    InputError,
    LedgerBusy,
    ProofError,
    SigningKeyError,
    TorchWitnessError,
    VerificationError,
)
from torchwitness.ledger.checkpoints import read_note
from torchwitness.ledger.keys import PublicKey
from torchwitness.ledger.merkle import EMPTY_ROOT, verify_consistency
from torchwitness.ledger.note import Signature, SignedCheckpoint
from torchwitness.witness import write_atomically
from torchwitness.witness.cosign import WitnessKey
from torchwitness.witness.protocol import MAX_BODY_BYTES, SIZE_CONTENT_TYPE, BadRequest, origin_hash, parse_request


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


class WitnessState:
    """The files of a witness's state folder (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.key_file = self.root / "witness.ed25519"
        self.vkey_file = self.root / "witness.vkey"
        self.logs_file = self.root / "logs.json"
        self.origins = self.root / "origins"

    def keygen(self, name: str) -> WitnessKey:
        if self.key_file.exists():
            raise InputError(f"{self.root} already holds a witness key ({self.vkey_file.read_text().strip()})")
        key = WitnessKey.generate(name)
        try:
            self.origins.mkdir(parents=True, exist_ok=True)
            key.save(self.key_file, self.vkey_file)
        except OSError as e:
            raise InputError(f"cannot create the witness state in {self.root}: {e.strerror}") from None
        return key

    def key(self) -> WitnessKey:
        return WitnessKey.load(self.key_file, self.vkey_file)

    def logs(self) -> list[tuple[PublicKey, str]]:
        """The trusted log keys and the origin prefix each is trusted for."""
        if not self.logs_file.exists():
            return []
        try:
            entries = json.loads(self.logs_file.read_text())["logs"]
            return [(PublicKey.from_vkey(e["vkey"]), str(e["origin_prefix"])) for e in entries]
        except (OSError, ValueError, KeyError, TypeError, SigningKeyError) as e:
            raise InputError(f"{self.logs_file} is not a witness log list: {e}") from None

    def add_log(self, vkey: str, origin_prefix: str = "") -> PublicKey:
        try:
            key = PublicKey.from_vkey(vkey)
        except SigningKeyError as e:
            raise InputError(f"log key: {e}") from None
        logs = [(k, p) for k, p in self.logs() if not (k == key and p == origin_prefix)] + [(key, origin_prefix)]
        doc = {"logs": [{"vkey": k.to_vkey(), "origin_prefix": p} for k, p in logs]}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(self.logs_file, json.dumps(doc, indent=2) + "\n")
        except OSError as e:
            raise InputError(f"cannot write {self.logs_file}: {e.strerror}") from None
        return key

    def note_path(self, origin: str) -> Path:
        return self.origins / f"{origin_hash(origin)}.note"

    def latest(self, origin: str) -> SignedCheckpoint | None:
        path = self.note_path(origin)
        return read_note(path) if path.exists() else None


def _signed_by(signed: SignedCheckpoint, keys: list[PublicKey]) -> tuple[set[PublicKey], list[Signature]]:
    """The trusted keys with a valid signature on the note and their lines. A line that names a trusted key
    but does not verify makes the note malformed: raise."""
    good = {key for key in keys if any(s.name == key.name and s.key_id == key.key_id for s in signed.signatures)}
    for key in good:
        signed.verify(key)
    return good, [s for s in signed.signatures if any(s.name == k.name and s.key_id == k.key_id for k in good)]


class WitnessService:
    """The protocol's decisions, independent of HTTP (the handler below only moves bytes)."""

    def __init__(self, state: WitnessState) -> None:
        self.state = state
        self.key = state.key()
        self._lock = Lock()

    def add_checkpoint(self, body: bytes) -> Response:
        try:
            request = parse_request(body)
        except BadRequest as e:
            return Response(400, f"{e}\n")
        signed = request.signed
        checkpoint = signed.checkpoint
        keys = [k for k, prefix in self.state.logs() if checkpoint.origin.startswith(prefix)]
        if not keys:
            return Response(404, f"unknown log origin {checkpoint.origin!r}\n")
        try:
            signers, log_lines = _signed_by(signed, keys)
        except VerificationError as e:
            return Response(403, f"{e}\n")
        if not signers:
            return Response(403, "the checkpoint carries no signature of a trusted log key\n")
        if request.old_size > checkpoint.size:
            return Response(400, f"old size {request.old_size} exceeds the checkpoint size {checkpoint.size}\n")
        with self._lock:
            stored = self.state.latest(checkpoint.origin)
            known_size, known_root = 0, EMPTY_ROOT
            if stored is not None:
                known_size, known_root = stored.checkpoint.size, stored.checkpoint.root
                if not signers & _signed_by(stored, keys)[0]:
                    return Response(403, "this origin is witnessed for another log key\n")
            if request.old_size != known_size:
                return Response(409, f"{known_size}\n", SIZE_CONTENT_TYPE)
            if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
                return Response(422, "a checkpoint of size 0 must carry the empty tree's root\n")
            try:
                if request.old_size == 0 and request.proof:
                    raise ProofError("a proof from size 0 must be empty")
                if request.old_size:
                    verify_consistency(request.old_size, checkpoint.size, known_root, checkpoint.root,
                                       request.proof)
            except ProofError as e:
                return Response(422, f"inconsistent with the checkpoint of size {known_size} seen before: "
                                     f"{e.reason}\n")
            cosignature = self.key.cosign(signed)
            self.state.origins.mkdir(parents=True, exist_ok=True)
            # Kept: the log's signatures it verified and its own cosignature, as the monitoring endpoint serves it.
            lines = "".join(s.line + "\n" for s in (*log_lines, cosignature))
            write_atomically(self.state.note_path(checkpoint.origin), checkpoint.body().decode() + "\n" + lines)
        return Response(200, cosignature.line + "\n")

    def checkpoint(self, hashed_origin: str) -> Response:
        path = self.state.origins / f"{hashed_origin}.note"
        if len(hashed_origin) != 64 or not all(c in "0123456789abcdef" for c in hashed_origin) or not path.exists():
            return Response(404, "no checkpoint cosigned for this origin\n")
        return Response(200, path.read_text())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the protocol recommends
    service: WitnessService

    def _send(self, response: Response) -> None:
        data = response.body.encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(Response(400, f"a request needs a Content-Length of at most {MAX_BODY_BYTES}\n"))
            return
        body = self.rfile.read(int(length))
        if self.path != "/add-checkpoint":
            self._send(Response(404, f"no such endpoint {self.path[:80]}\n"))
            return
        try:
            response = self.service.add_checkpoint(body)
        except (TorchWitnessError, OSError) as e:  # its own state is unusable (logs.json, disk): say so, go on
            print(f"torchwitness witness: error: {e}", file=sys.stderr, flush=True)
            response = Response(500, f"the witness cannot decide: {e}\n")
        self._send(response)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[1] == "checkpoint":
            self._send(self.service.checkpoint(parts[0]))
        else:
            self._send(Response(404, f"no such endpoint {self.path[:80]}\n"))

    def log_message(self, format: str, *args: object) -> None:
        pass  # the CLI reports start-up; per-request lines would flood a long-lived log


def make_server(state_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A bound, not yet serving witness HTTP server. Holds an exclusive lock on the state folder, so two
    witnesses can never interleave their checks and writes on the same state."""
    state = WitnessState(state_dir)
    service = WitnessService(state)
    lock_fd = os.open(state.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise LedgerBusy(f"another witness is serving {state.root}") from None
    for stale in state.origins.glob("*.tmp") if state.origins.is_dir() else []:
        stale.unlink()  # a write a crash interrupted; the note it would have replaced is intact
    handler = type("WitnessHandler", (_Handler,), {"service": service})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        os.close(lock_fd)
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    server.daemon_threads = True
    server.lock_fd = lock_fd  # type: ignore[attr-defined] - released when the process exits
    return server
