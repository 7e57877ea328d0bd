"""Witnesses end to end: a real ``torchwitness witness serve`` process on 127.0.0.1, runs that ask it to cosign
their checkpoints, ``verify --witness``/``--quorum``, refusals of forks and rollbacks, and SIGKILLs of the
witness."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from torchwitness.ledger.distributed import write_run_checkpoint, write_run_manifest
from torchwitness.ledger.keys import SigningKey
from torchwitness.ledger.note import parse
from torchwitness.ledger.writer import Ledger
from torchwitness.witness.cosign import CosignerKey
from torchwitness.witness.protocol import SIZE_CONTENT_TYPE, encode_request, origin_hash
from torchwitness.witness.server import WitnessState, make_server

SRC = Path(__file__).resolve().parents[2] / "src"


class WitnessProcess:
    def __init__(self, state: Path) -> None:
        self.state = state
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen([sys.executable, "-m", "torchwitness", "witness", "serve", "--state",
                                      str(state), "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert " listening on http://127.0.0.1:" in line, line
        self.url = line.split()[-1]
        self.vkey = (state / "witness.vkey").read_text().strip()
        self.spec = f"{self.vkey} {self.url}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def _new_state(path: Path, name: str) -> Path:
    WitnessState(path).keygen(name)
    return path


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory):
    w = WitnessProcess(_new_state(tmp_path_factory.mktemp("witness") / "state", "witness.test/w1"))
    yield w
    w.proc.terminate()
    assert w.proc.wait(10) == 0  # SIGTERM is a clean stop


@pytest.fixture
def log_key(witness: WitnessProcess, cli) -> SigningKey:
    """This test's signing key (each test has its own key folder), registered with the witness by the CLI."""
    key = SigningKey.load_or_create()
    code, out, _ = cli("witness", "add-log", key.public.to_vkey(), "--state", str(witness.state))
    assert code == 0 and "every origin it signs" in out
    return key


def _record(path: Path, n: int, witnesses: list[str], tag: str = "a", **kw) -> None:
    with Ledger.open(path, witnesses=witnesses, checkpoint_every=4, **kw) as ledger:
        for i in range(n):
            ledger.append("note", {"i": i, "tag": tag})


def _newest_note(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("*.note"))[-1]


def _cosigned_by(note: Path, vkey: str) -> bool:
    return CosignerKey.from_vkey(vkey).find(parse(note.read_text())) is not None


def test_round_trip(cli, witness: WitnessProcess, log_key: SigningKey, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _record(run, 10, [witness.spec])
    assert _newest_note(run).name == "000000000010.note" and _cosigned_by(_newest_note(run), witness.vkey)
    code, out, err = cli("verify", str(run), "--witness", witness.vkey)
    assert code == 0, err
    assert "checkpoint 10 cosigned by 1 of 1 witnesses (witness.test/w1 at " in out
    code, out, err = cli("verify", str(run), "--witness", witness.spec, "--key", log_key.public.fingerprint)
    assert code == 0 and "witness.test/w1 has cosigned nothing newer" in out, err
    # A second session continues the witnessed history: the cosigner learns the witness's size from a 409.
    _record(run, 3, [witness.spec])
    assert _newest_note(run).name == "000000000013.note" and _cosigned_by(_newest_note(run), witness.vkey)
    # The protocol's conflict answer, over HTTP.
    request = urllib.request.Request(witness.url + "/add-checkpoint", method="POST",
                                     data=encode_request(0, [], _newest_note(run).read_text()))
    with pytest.raises(urllib.error.HTTPError) as conflict:
        urllib.request.urlopen(request, timeout=10)
    assert conflict.value.code == 409 and conflict.value.headers["Content-Type"] == SIZE_CONTENT_TYPE
    assert conflict.value.read() == b"13\n"
    code, _, err = cli("verify", str(run), "--quorum", "1")
    assert code == 2 and "--quorum" in err


def test_forks_and_rollbacks_fail(cli, witness: WitnessProcess, log_key: SigningKey, tmp_path: Path) -> None:
    main = tmp_path / "main"
    _record(main, 6, [witness.spec])
    forked, shorter, rolled_back = (tmp_path / n for n in ("forked", "shorter", "rolled-back"))
    for copy in (forked, shorter, rolled_back):
        shutil.copytree(main, copy)
    _record(main, 6, [witness.spec])  # the history the witness sees: 12 records
    with pytest.warns(RuntimeWarning, match="did not cosign"):
        _record(forked, 9, [witness.spec], tag="forged")  # 15 records that do not extend the witnessed 12
        _record(shorter, 2, [witness.spec], tag="forged")  # 8 records: behind what the witness cosigned
    assert not _cosigned_by(_newest_note(forked), witness.vkey)
    code, _, err = cli("verify", str(main), "--witness", witness.spec)
    assert code == 0, err
    for run in (forked, shorter):
        code, _, err = cli("verify", str(run), "--witness", witness.vkey)
        assert code == 3 and "cosignatures of 0 of the 1 witnesses required" in err, err
    # Restored whole, a folder's newest checkpoint is one the witness cosigned back then: only the witness's
    # newest view exposes it.
    assert cli("verify", str(rolled_back), "--witness", witness.vkey)[0] == 0
    code, _, err = cli("verify", str(rolled_back), "--witness", witness.spec)
    assert code == 3 and "rolled back: witness witness.test/w1 cosigned a checkpoint of 12 records" in err
    # The forked folder does hold the witness's size of records, so the witness's view names the fork.
    code, _, err = cli("verify", str(forked), "--witness", witness.spec, "--quorum", "1")
    assert code == 3


def test_unreachable_witness_never_blocks_and_submit_catches_up(cli, witness: WitnessProcess, log_key: SigningKey,
                                                                tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"{witness.vkey} http://127.0.0.1:{s.getsockname()[1]}"
    run = tmp_path / "run"
    started = time.monotonic()
    with pytest.warns(RuntimeWarning, match="unreachable"), Ledger.open(run, witnesses=[dead],
                                                                        checkpoint_every=50) as ledger:
        for i in range(400):
            ledger.append("note", {"i": i})
        ledger.checkpoint()
        deadline = time.monotonic() + 10
        while b"witness.failed" not in (run / "records" / "000000.jsonl").read_bytes():
            assert time.monotonic() < deadline, "no witness.failed record"
            ledger.flush()
            time.sleep(0.05)
    assert time.monotonic() - started < 10
    code, _, err = cli("verify", str(run), "--witness", witness.vkey)
    assert code == 3 and "was not witnessed" in err
    code, out, err = cli("witness", "submit", str(run), "--witness", dead, "--timeout", "2")
    assert code == 3 and "unreachable" in err
    code, out, err = cli("witness", "submit", str(run), "--witness", witness.spec)
    assert code == 0 and "cosigned by 1 of 1 witnesses" in out, err
    assert cli("verify", str(run), "--deep", "--witness", witness.spec)[0] == 0  # witness.failed fits its schema


def test_quorum_of_two_witnesses(cli, witness: WitnessProcess, log_key: SigningKey, tmp_path: Path) -> None:
    second = WitnessState(_new_state(tmp_path / "w2", "witness.test/w2"))
    second.add_log(log_key.public.to_vkey())
    server = make_server(second.root)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        w2 = f"{second.vkey_file.read_text().strip()} http://127.0.0.1:{server.server_address[1]}"
        run = tmp_path / "run"
        _record(run, 5, [witness.spec, w2])
        both = ["--witness", witness.vkey, "--witness", w2]
        code, out, err = cli("verify", str(run), *both)
        assert code == 0 and "cosigned by 2 of 2 witnesses" in out, err
        note = _newest_note(run)
        text = note.read_text()
        note.write_text("".join(line for line in text.splitlines(True) if "witness.test/w2" not in line))
        code, _, err = cli("verify", str(run), *both)
        assert code == 3 and "(missing: witness.test/w2)" in err
        assert cli("verify", str(run), *both, "--quorum", "1")[0] == 0
        assert cli("verify", str(run), *both, "--quorum", "3")[0] == 2
        # A cosignature that does not verify is tampering, whatever the quorum.
        line = next(li for li in text.splitlines() if li.startswith("\u2014 witness.test/w1 "))
        forged = line[:-8] + ("A" if line[-8] != "A" else "B") + line[-7:]
        note.write_text(text.replace(line, forged))
        code, _, err = cli("verify", str(run), *both, "--quorum", "1")
        assert code == 3 and "cosignature of witness witness.test/w1 does not verify" in err
    finally:
        server.shutdown()
        server.server_close()


def test_every_rank_of_a_distributed_run(cli, witness: WitnessProcess, log_key: SigningKey, tmp_path: Path) -> None:
    root = tmp_path / "dist"
    write_run_manifest(root, "dist", 2)
    ledgers = [Ledger.open(root / f"rank-{r}", rank=r, run_id="dist", shard=True, witnesses=[witness.spec])
               for r in range(2)]
    for r, ledger in enumerate(ledgers):
        ledger.append("note", {"rank": r})
    write_run_checkpoint(root, "dist", [ledger.signed_head() for ledger in ledgers], ledgers[0].sign)
    for ledger in ledgers:
        ledger.close()
    code, out, err = cli("verify", str(root), "--witness", witness.spec)
    assert code == 0 and out.count("witnessed ") == 2, err
    note = _newest_note(root / "rank-1")
    note.write_text(note.read_text().split("\u2014 witness.test/w1")[0].rstrip("\n") + "\n")
    code, _, err = cli("verify", str(root), "--witness", witness.vkey)
    assert code == 3 and "rank-1" in err


def test_sigkill_keeps_the_witness_state(cli, tmp_path: Path) -> None:
    state = _new_state(tmp_path / "state", "witness.test/killed")
    key = SigningKey.load_or_create()
    WitnessState(state).add_log(key.public.to_vkey())
    w = WitnessProcess(state)
    run = tmp_path / "run"
    _record(run, 5, [w.spec])
    origin_note = state / "origins" / f"{origin_hash(parse(_newest_note(run).read_text()).checkpoint.origin)}.note"
    body = encode_request(5, [], _newest_note(run).read_text())
    rng = random.Random(7)
    for _ in range(2):
        # Hammer the witness with the same checkpoint (each answer persists the note anew), kill it mid-way.
        stop = threading.Event()

        def hammer(url: str = w.url, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                try:
                    urllib.request.urlopen(urllib.request.Request(url + "/add-checkpoint", data=body), timeout=5)
                except OSError:
                    return

        thread = threading.Thread(target=hammer)
        thread.start()
        time.sleep(rng.uniform(0.05, 0.3))
        w.kill()
        stop.set()
        thread.join()
        w = WitnessProcess(state)  # restarts on the state a SIGKILL left
        assert not list((state / "origins").glob("*.tmp"))
        kept = parse(origin_note.read_text())
        assert kept.checkpoint.size == 5 and CosignerKey.from_vkey(w.vkey).find(kept) is not None
    _record(run, 3, [w.spec])
    assert _cosigned_by(_newest_note(run), w.vkey)
    code, _, err = cli("verify", str(run), "--witness", w.spec)
    assert code == 0, err
    w.proc.terminate()
    w.proc.wait(10)


WRITER = """
import sys
from torchwitness.ledger.writer import Ledger
ledger = Ledger.open(sys.argv[1], witnesses=[sys.argv[2]], checkpoint_every=3)
print("open", flush=True)
i = 0
while True:
    ledger.append("note", {"i": i})
    i += 1
"""


def test_sigkill_of_a_witnessed_writer_keeps_notes_whole(cli, witness: WitnessProcess, log_key: SigningKey,
                                                         tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rng = random.Random(3)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run), witness.spec], stdout=subprocess.PIPE,
                                text=True, env=env)
        assert proc.stdout.readline() == "open\n"
        cosigned = len(_cosigned_notes(run, witness.vkey))
        deadline = time.monotonic() + 30
        while len(_cosigned_notes(run, witness.vkey)) == cosigned:  # this session's cosigner is at work
            assert time.monotonic() < deadline, "no note was cosigned"
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))  # ... and rewrites a note every few records meanwhile
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _cosigned_notes(run, witness.vkey)  # every note parses and every cosignature in it verifies
    _record(run, 1, [witness.spec])  # a clean session: the witness's history continues
    # Catch up in case a loaded machine let close() time out, then the witness must vouch for the folder.
    assert cli("witness", "submit", str(run), "--witness", witness.spec)[0] == 0
    code, _, err = cli("verify", str(run), "--witness", witness.spec)
    assert code == 0, err


def _cosigned_notes(run: Path, vkey: str) -> list[Path]:
    key = CosignerKey.from_vkey(vkey)
    return [p for p in sorted((run / "checkpoints").glob("*.note")) if key.find(parse(p.read_text())) is not None]
