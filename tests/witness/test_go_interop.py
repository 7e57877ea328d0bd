"""Interop: checkpoints and their cosignatures verify with Go's reference signed-note implementation,
golang.org/x/mod/sumdb/note (Debian's golang-go and golang-golang-x-mod-dev, which ``make system-deps``
installs). The Go program (go_note/main.go) checks the log's signature through x/mod's own Ed25519 verifier and
each cosignature/v1 line through a note.Verifier written from the C2SP tlog-cosignature spec; it also signs
checkpoints with x/mod's note.Sign, as a log that is not torchwitness, for our witness to cosign."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from torchwitness.ledger.keys import SigningKey
from torchwitness.ledger.merkle import MerkleTree, leaf_hash
from torchwitness.ledger.note import parse
from torchwitness.ledger.writer import Ledger
from torchwitness.witness.cosign import CosignerKey
from torchwitness.witness.protocol import encode_request
from torchwitness.witness.server import WitnessService, WitnessState, make_server

GOCODE = Path("/usr/share/gocode")
PROGRAM = Path(__file__).parent / "go_note"


@pytest.fixture(scope="module")
def go_note(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None:
        pytest.skip("Go is not installed (apt-get install golang-go golang-golang-x-mod-dev, or make system-deps)")
    if not (GOCODE / "src/golang.org/x/mod/sumdb/note").is_dir():
        pytest.skip("golang.org/x/mod is not in /usr/share/gocode (apt-get install golang-golang-x-mod-dev)")
    out = tmp_path_factory.mktemp("go") / "go_note"
    # GOPATH mode against Debian's source tree: offline, no module download (GOPROXY=off as a guard).
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOCODE), "GOPROXY": "off", "GOFLAGS": ""}
    env.setdefault("GOCACHE", str(out.parent / "cache"))
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=PROGRAM, env=env, check=True, timeout=300)
    return out


def _witness(root: Path, name: str, log: SigningKey):
    state = WitnessState(root)
    state.keygen(name)
    state.add_log(log.public.to_vkey())
    server = make_server(root)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state.vkey_file.read_text().strip()


def test_go_reference_verifies_notes_and_cosignatures(go_note: Path, tmp_path: Path) -> None:
    log = SigningKey.load_or_create()
    servers, vkeys = zip(*(_witness(tmp_path / n, f"witness.test/{n}", log) for n in ("w1", "w2")), strict=True)
    try:
        run = tmp_path / "run"
        specs = [f"{v} http://127.0.0.1:{s.server_address[1]}" for s, v in zip(servers, vkeys, strict=True)]
        with Ledger.open(run, witnesses=specs, checkpoint_every=7) as ledger:
            for i in range(20):
                ledger.append("note", {"i": i})
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    note_path = sorted((run / "checkpoints").glob("*.note"))[-1]
    note = parse(note_path.read_text())
    log_vkey = (run / "keys" / "signer.vkey").read_text().strip()

    def go(path: Path, *keys: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(go_note), str(path), *keys], capture_output=True, text=True, timeout=60)

    done = go(note_path, log_vkey, *vkeys)
    assert done.returncode == 0, done.stderr
    expected = [log.public.name] + [f"{k.name} time {k.find(note)}" for k in map(CosignerKey.from_vkey, vkeys)]
    assert done.stdout.split("\n")[:-1] == expected

    # Go rejects what we reject: a cosignature whose bytes were altered, and a body the signatures do not cover.
    text = note_path.read_text()
    line = next(li for li in text.splitlines() if li.startswith("\u2014 witness.test/w2 "))
    altered = line[:-10] + ("A" if line[-10] != "A" else "B") + line[-9:]
    bad = tmp_path / "bad.note"
    bad.write_text(text.replace(line, altered))
    assert go(bad, log_vkey, *vkeys).returncode == 1
    bad.write_text(text.replace("\n20\n", "\n21\n", 1))
    assert go(bad, log_vkey).returncode == 1


def test_witness_cosigns_a_log_signed_by_go(go_note: Path, tmp_path: Path) -> None:
    """The witness serves any C2SP log: checkpoints signed by x/mod's note.Sign, not by torchwitness."""
    skey, log_vkey = subprocess.run([str(go_note), "keygen", "example.com/log"], capture_output=True, text=True,
                                    check=True, timeout=60).stdout.split()
    state = WitnessState(tmp_path / "w")
    witness_vkey = state.keygen("witness.test/w1").public.to_vkey()
    state.add_log(log_vkey)
    service = WitnessService(state)
    leaves = [leaf_hash(bytes([i])) for i in range(9)]
    tree, fork = MerkleTree(leaves), MerkleTree([leaf_hash(b"x"), *leaves[1:]])

    def go_signed(t: MerkleTree, size: int) -> str:
        text = f"example.com/log\n{size}\n{base64.b64encode(t.root(size)).decode()}\n"
        return subprocess.run([str(go_note), "sign", skey], input=text, capture_output=True, text=True,
                              check=True, timeout=60).stdout

    assert service.add_checkpoint(encode_request(0, [], go_signed(tree, 5))).status == 200
    assert service.add_checkpoint(encode_request(5, fork.consistency_proof(5, 9), go_signed(fork, 9))).status == 422
    note = go_signed(tree, 9)
    answer = service.add_checkpoint(encode_request(5, tree.consistency_proof(5, 9), note))
    assert answer.status == 200
    cosigned = tmp_path / "cosigned.note"
    cosigned.write_text(note + answer.body)
    done = subprocess.run([str(go_note), str(cosigned), log_vkey, witness_vkey], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("example.com/log\nwitness.test/w1 time "), done.stderr
