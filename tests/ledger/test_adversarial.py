"""The run folder's producer as the attacker: forged tails, deleted notes, rollbacks, forks, re-keyed shards.

Each test does what someone holding the folder (but not the pinned key, nor a checkpoint the verifier kept) can do
with ordinary file operations, then checks that the documented verify form refuses it, or, where a later append
by the owner signs it, that verify says so.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import torchwitness as tw
from torchwitness.cli import main
from torchwitness.errors import InputError, LedgerError, ProofError, SigningKeyError, VerificationError
from torchwitness.ledger import Ledger, verify_run
from torchwitness.ledger.canonical import canonical_json
from torchwitness.ledger.consistency import consistency_proof, newest_checkpoint, verify_consistency_proof
from torchwitness.ledger.distributed import shard_dir, write_run_checkpoint, write_run_manifest
from torchwitness.ledger.keys import SigningKey
from torchwitness.ledger.layout import Layout
from torchwitness.ledger.merkle import leaf_hash, leaf_hashes
from torchwitness.ledger.note import parse

EVERY = 20


def _append_records(root: Path, count: int, *, tag: str = "step", end: bool = True, **open_kw) -> None:
    with Ledger.open(root, checkpoint_every=EVERY, **open_kw) as ledger:
        if end:  # a session of a Run: run.start ... run.end (their fields are Run's business, not the ledger's)
            ledger.append("run.start", {"tag": tag})
        for i in range(count):
            ledger.append("train.step", {"i": i, "tag": tag}, step=i)
        if end:
            ledger.append("run.end", {"status": "ok", "duration_s": 1.0})


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    _append_records(root, 57)  # 59 records, checkpoints at 20, 40 and 59
    return root


def _lines(root: Path) -> list[bytes]:
    return [line for seg in Layout(root).segments() for line in seg.read_bytes().split(b"\n")[:-1]]


def _write_lines(root: Path, lines: list[bytes]) -> None:
    """Rewrite the records and rebuild records/leaves.idx to match them, as a forger with no key can."""
    layout = Layout(root)
    for seg in layout.segments():
        seg.unlink()
    layout.segment(0).write_bytes(b"".join(line + b"\n" for line in lines))
    layout.index.write_bytes(b"".join(leaf_hashes(lines)))


def _forged(root: Path, seq: int, kind: str = "train.step", **data: object) -> bytes:
    run_id = json.loads(Layout(root).manifest.read_text())["run"]
    return canonical_json({"v": 1, "seq": seq, "run": run_id, "rank": 0, "ts": 1, "kind": kind, "step": None,
                           "data": data})


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """Run the real entry point in process: (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out + err


# ----------------------------------------------------------------------------- unsigned records
def test_live_run_is_no_ok_until_signed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "run"
    ledger = Ledger.open(root, checkpoint_every=1000, checkpoint_seconds=3600)
    for i in range(10):
        ledger.append("x", {"i": i})
    ledger.checkpoint()
    for i in range(5):
        ledger.append("x", {"i": i})
    ledger.flush()  # seq 10..14 are on disk, no checkpoint covers them: the writer is still running
    try:
        with pytest.raises(VerificationError, match=r"records seq 10\.\.14 are not covered") as info:
            verify_run(root)
        assert info.value.seq == 10
        live = verify_run(root, allow_unsigned_tail=True)
        assert live.uncovered == 5 and live.summary().startswith("LIVE VIEW")
        assert "NOT SIGNED: records seq 10..14" in live.summary()
        code, out = _cli(capsys, "verify", root)
        assert code == 3 and "not covered by any signed checkpoint" in out
        code, out = _cli(capsys, "verify", root, "--allow-unsigned-tail")
        assert code == 0 and "NOT SIGNED: records seq 10..14" in out
    finally:
        ledger.close()
    assert verify_run(root).summary().startswith("OK 15 records")


def test_forged_tail_of_an_ended_run_fails_even_as_a_live_view(sealed: Path) -> None:
    layout = Layout(sealed)
    line = _forged(sealed, 59, loss=0.0)
    with open(layout.segments()[-1], "ab") as f:
        f.write(line + b"\n")
    with open(layout.index, "ab") as f:
        f.write(leaf_hash(line))
    with pytest.raises(VerificationError, match="not covered") as info:
        verify_run(sealed)
    assert info.value.seq == 59
    with pytest.raises(VerificationError, match=r"the run ended \(run.end at seq 58\)"):
        verify_run(sealed, allow_unsigned_tail=True)


def test_tail_signed_by_the_owners_next_append_is_reported_late(sealed: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    layout = Layout(sealed)
    forged = [_forged(sealed, 59, loss=0.0), _forged(sealed, 60, loss=0.1)]
    with open(layout.segments()[-1], "ab") as f:
        f.write(b"".join(line + b"\n" for line in forged))
    with open(layout.index, "ab") as f:
        f.write(b"".join(leaf_hashes(forged)))
    with Ledger.open(sealed) as ledger:  # the owner's next command (incident add, retention, erase...)
        assert ledger.recovery.adopted is not None and ledger.recovery.adopted[:2] == (59, 60)
        ledger.append("incident.note", {"text": "unrelated"})
    result = verify_run(sealed)
    assert result.uncovered == 0 and result.signed_late == [(59, 60, 61)]
    code, out = _cli(capsys, "verify", sealed)
    assert code == 0 and "records seq 59..60 signed late" in out


def test_adopted_range_whose_digest_lies_fails(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _append_records(root, 5, end=False)
    layout = Layout(root)
    forged = _forged(root, 5, loss=0.0)
    with open(layout.segments()[-1], "ab") as f:
        f.write(forged + b"\n")
    with Ledger.open(root, checkpoint_every=EVERY):
        pass
    lines = _lines(root)
    recovered = json.loads(lines[6])
    assert recovered["kind"] == "ledger.recovered" and recovered["data"]["adopted"]["first_seq"] == 5
    assert verify_run(root).signed_late == [(5, 5, 6)]
    # a writer that lied about what it adopted: re-signing needs the key, so the owner's key does it here
    recovered["data"]["adopted"]["leaves_sha256"] = "sha256:" + "0" * 64
    lines[6] = canonical_json(recovered)
    _write_lines(root, lines)
    for note in layout.checkpoint_files():
        if parse(note.read_text()).checkpoint.size > 6:
            note.unlink()
    with Ledger.open(root, checkpoint_every=EVERY):
        pass  # signs the lie (and records its own adoption of it)
    with pytest.raises(VerificationError, match="do not match the digest") as info:
        verify_run(root)
    assert info.value.seq == 6


# ----------------------------------------------------------------------------- deleted notes
@pytest.mark.parametrize("seq", [3, 25, 45])
def test_edit_then_delete_covering_notes_and_rebuild_index(sealed: Path, seq: int) -> None:
    lines = _lines(sealed)
    lines[seq] = lines[seq].replace(b'"tag":"step"', b'"tag":"forged"')
    _write_lines(sealed, lines)
    for note in Layout(sealed).checkpoint_files():
        if parse(note.read_text()).checkpoint.size > seq:
            note.unlink()
    remaining = Layout(sealed).checkpoint_files()
    for allow in (False, True):  # the run ended: not even a live view accepts its unsigned records
        with pytest.raises(VerificationError, match="not covered" if remaining else "no signed checkpoint") as info:
            verify_run(sealed, allow_unsigned_tail=allow)
        assert not remaining or info.value.seq <= seq, str(info.value)
    # dropping run.end as well leaves a "live" run: the live view shows the forged record as NOT signed
    _write_lines(sealed, lines[:-1])
    if not remaining:
        with pytest.raises(VerificationError, match="no signed checkpoint"):
            verify_run(sealed, allow_unsigned_tail=True)
        return
    live = verify_run(sealed, allow_unsigned_tail=True)
    assert not live.summary().startswith("OK") and live.covered <= seq < live.records


@pytest.mark.parametrize("victim", [0, 1])
def test_a_deleted_note_breaks_the_chain(sealed: Path, victim: int) -> None:
    notes = Layout(sealed).checkpoint_files()
    assert len(notes) == 3
    notes[victim].unlink()
    for allow in (False, True):
        with pytest.raises(VerificationError, match="a checkpoint note is missing or was replaced") as info:
            verify_run(sealed, allow_unsigned_tail=allow)
        assert info.value.checkpoint == [40, 59][victim]


def test_no_note_at_all_fails(sealed: Path) -> None:
    for note in Layout(sealed).checkpoint_files():
        note.unlink()
    with pytest.raises(VerificationError, match="no signed checkpoint"):
        verify_run(sealed, allow_unsigned_tail=True)


# ----------------------------------------------------------------------------- rollback and fork
def test_rollback_and_fork_fail_against_a_kept_checkpoint(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "run"
    _append_records(root, 10, tag="a")
    earlier = tmp_path / "earlier"
    shutil.copytree(root, earlier)  # what the producer keeps to roll back to
    _append_records(root, 10, tag="b")
    kept = tmp_path / "kept.note"
    code, out = _cli(capsys, "checkpoint", root, "-o", kept)
    assert code == 0 and parse(kept.read_text()).checkpoint.size == 24

    _append_records(root, 3, tag="c")  # the genuine run grows: it still extends what was kept
    code, out = _cli(capsys, "verify", root, "--since", kept)
    assert code == 0 and "extends the kept checkpoint of size 24" in out

    code, out = _cli(capsys, "verify", earlier)
    assert code == 0  # a rolled-back folder is self-consistent on its own...
    code, out = _cli(capsys, "verify", earlier, "--since", kept)
    assert code == 3 and "rolled back" in out  # ...but not against the checkpoint the verifier kept

    fork = tmp_path / "fork"
    shutil.copytree(earlier, fork)
    _append_records(fork, 20, tag="fork")  # another history from the same start, longer than the kept one
    code, out = _cli(capsys, "verify", fork, "--since", kept)
    assert code == 3 and "no longer extends the kept checkpoint" in out


def test_consistency_proof_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "run"
    _append_records(root, 30)
    kept = tmp_path / "kept.note"
    kept.write_text(newest_checkpoint(root))
    _append_records(root, 41)
    code, out = _cli(capsys, "consistency", root, "--from", kept)
    assert code == 0
    doc = json.loads(out)
    newer = verify_consistency_proof(doc, kept.read_text())
    assert (doc["old_size"], newer.checkpoint.size) == (32, 75)
    flipped = bytearray(base64.b64decode(doc["proof"][0]))
    flipped[0] ^= 1
    bad = dict(doc, proof=[base64.b64encode(flipped).decode(), *doc["proof"][1:]])
    with pytest.raises(ProofError):
        verify_consistency_proof(bad, kept.read_text())
    sizes = [parse(note.read_text()).checkpoint.size for note in Layout(root).checkpoint_files()]
    by_size = consistency_proof(root, sizes[0], sizes[-2])
    assert (by_size["old_size"], by_size["new_size"]) == (sizes[0], sizes[-2])
    older = Layout(root).checkpoint(sizes[0]).read_text()
    assert verify_consistency_proof(by_size, older).checkpoint.size == sizes[-2]
    with pytest.raises(VerificationError, match="rolled back"):
        consistency_proof(root, 500)


# ----------------------------------------------------------------------------- keys
def test_unpinned_verify_says_it_proves_integrity_only(sealed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _cli(capsys, "verify", sealed)
    assert code == 0 and "integrity only; pin --key for authorship" in out
    signer = json.loads(Layout(sealed).manifest.read_text())["signer"]
    code, out = _cli(capsys, "verify", sealed, "--key", signer)
    assert code == 0 and "integrity only" not in out


def test_missing_private_key_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "run", tmp_path / "empty-keys"
    _append_records(root, 3, key_dir=tmp_path / "keys-a")
    elsewhere.mkdir()
    with pytest.raises(SigningKeyError, match="signing key is missing"):
        Ledger.open(root, key_dir=elsewhere)
    assert list(elsewhere.iterdir()) == []
    assert verify_run(root).records == 5


def test_stale_tmp_files_are_removed_at_open(sealed: Path) -> None:
    layout = Layout(sealed)
    layout.blobs.mkdir(exist_ok=True)
    stale = [layout.checkpoints / "000000000070.tmp", layout.blobs / "sha256-abc.tmp"]
    for path in stale:
        path.write_text("half written before a crash")
    with Ledger.open(sealed):
        assert not any(path.exists() for path in stale)
    assert verify_run(sealed).records == 59


def test_stale_run_level_tmp_is_removed_when_rank_0_starts(tmp_path: Path) -> None:
    root, _ = _ddp_folder(tmp_path)
    stale = root / "checkpoints" / "000002.tmp"
    stale.write_text("half written before a crash")
    write_run_manifest(root, json.loads((root / "run.json").read_text())["run"], 2)
    assert not stale.exists() and verify_run(root).records == 8


# ----------------------------------------------------------------------------- distributed runs
def _ddp_folder(tmp_path: Path, steps: int = 4, *, one_key: bool = False) -> tuple[Path, list[Path]]:
    """A two-rank run folder written as Run writes one under torch.distributed, each rank with its own key (or,
    as on one machine, the same)."""
    root, run_id = tmp_path / "ddp", uuid.uuid4().hex[:16]
    key_dirs = [tmp_path / f"keys-rank-{0 if one_key else r}" for r in (0, 1)]
    write_run_manifest(root, run_id, 2)
    _ddp_session(root, run_id, key_dirs, steps)
    return root, key_dirs


def _ddp_session(root: Path, run_id: str, key_dirs: list[Path], steps: int) -> None:
    ledgers = [Ledger.open(shard_dir(root, r), key_dir=key_dirs[r], rank=r, run_id=run_id, shard=True,
                           checkpoint_every=EVERY) for r in (0, 1)]
    for ledger in ledgers:
        for i in range(steps):
            ledger.append("train.step", {"i": i}, step=i)
    write_run_checkpoint(root, run_id, [ledger.signed_head() for ledger in ledgers], ledgers[0].sign)
    for ledger in ledgers:
        ledger.close()


def test_pinning_the_run_key_pins_every_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = _ddp_folder(tmp_path)
    run_key = json.loads((shard_dir(root, 0) / "ledger.json").read_text())["signer"]
    rank1_key = json.loads((shard_dir(root, 1) / "ledger.json").read_text())["signer"]
    assert verify_run(root, key=run_key).records == 8
    with pytest.raises(VerificationError, match="rank 0: run is signed by"):
        verify_run(root, key=rank1_key)

    # rank 1's key replaced, its notes re-signed, a record appended and signed: self-consistent on its own
    thief = SigningKey.generate()
    thief_dir = tmp_path / "thief"
    thief.save(thief_dir / "default.ed25519")
    layout = Layout(shard_dir(root, 1))
    for note in layout.checkpoint_files():
        note.write_text(parse(note.read_text()).checkpoint.sign(thief))
    layout.vkey.write_text(thief.public.to_vkey() + "\n")
    manifest = json.loads(layout.manifest.read_text())
    layout.manifest.write_text(json.dumps(dict(manifest, signer=thief.public.fingerprint)))
    with Ledger.open(layout.root, key_dir=thief_dir) as ledger:
        ledger.append("train.step", {"i": 99, "forged": True})
    assert verify_run(layout.root).records == 5  # the shard alone is consistent
    for pin in (run_key, None):  # rank 0 authorised another key for rank 1
        with pytest.raises(VerificationError, match=r"rank 1: run is signed by sha256:\w+, not by the pinned key"):
            verify_run(root, key=pin)
    code, out = _cli(capsys, "verify", root, "--key", run_key)
    assert code == 3 and "rank 1" in out


def test_swapped_shards_fail_even_under_one_key(tmp_path: Path) -> None:
    root, _ = _ddp_folder(tmp_path, one_key=True)
    assert verify_run(root).records == 8
    shard_dir(root, 0).rename(tmp_path / "swap")
    shard_dir(root, 1).rename(shard_dir(root, 0))
    (tmp_path / "swap").rename(shard_dir(root, 1))
    with pytest.raises(VerificationError, match=r"rank 0: shard rank-0 holds the ledger of '.*/rank-1'"):
        verify_run(root)


def test_distributed_since_and_note_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, key_dirs = _ddp_folder(tmp_path)
    run_id = json.loads((root / "run.json").read_text())["run"]
    first = tmp_path / "first.note"
    code, _ = _cli(capsys, "checkpoint", root, "-o", first)
    assert code == 0 and parse(first.read_text()).checkpoint.origin == f"torchwitness/{run_id}/run"
    earlier = tmp_path / "earlier"
    shutil.copytree(root, earlier)
    _ddp_session(root, run_id, key_dirs, 3)
    kept = newest_checkpoint(root)
    assert verify_run(root, since=first.read_text()).since == 1

    shutil.rmtree(shard_dir(root, 1))  # roll back one shard only
    shutil.copytree(shard_dir(earlier, 1), shard_dir(root, 1))
    with pytest.raises(VerificationError, match="rank 1"):
        verify_run(root)
    with pytest.raises(VerificationError, match="rank 0: the shard does not extend the kept run-level"):
        verify_run(earlier, since=kept)  # the whole folder rolled back: only the kept note shows it
    verify_run(earlier)
    code, out = _cli(capsys, "consistency", earlier, "--from", first)
    assert code == 0 and len(json.loads(out)["shards"]) == 2

    _ddp_session(earlier, run_id, key_dirs, 1)
    _ddp_session(earlier, run_id, key_dirs, 1)
    middle = sorted((earlier / "checkpoints").glob("*.note"))[1]
    middle.unlink()
    with pytest.raises(VerificationError, match=r"run-level checkpoints: .*missing or was replaced"):
        verify_run(earlier)


# ----------------------------------------------------------------------------- full disk
FULL_DISK = """
import resource, signal, sys
from torchwitness.errors import LedgerError
from torchwitness.ledger import Ledger
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG, as on a full disk
ledger = Ledger.open(sys.argv[1], checkpoint_every=100, fsync="never", queue_size=int(sys.argv[3]))
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
last = None
try:
    for i in range(1_000_000):
        last = ledger.append("train.step", {"i": i, "pad": "x" * 200})
except LedgerError as e:
    print(last)
    print(e)
    sys.exit(0)
print("never failed")
"""


# A queue of 2 keeps the appending thread waiting for room, holding the append lock, when the writer fails.
@pytest.mark.parametrize("queue_size", [100_000, 2])
def test_full_disk_names_the_records_that_were_not_written(tmp_path: Path, queue_size: int) -> None:
    root = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(root), str(64 * 1024), str(queue_size)],
                          capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    last_accepted, message = proc.stdout.splitlines()[:2]
    assert "accepted but not written" in message, message
    first, last = (int(n) for n in message.split("records seq ")[1].split(" ")[0].split(".."))
    assert last == int(last_accepted), "every record the caller got a seq for and lost is named"
    with Ledger.open(root, checkpoint_every=100):  # the disk has room again: recover what reached it
        pass
    result = verify_run(root, deep=True)
    kept = [json.loads(line) for line in _lines(root)]
    steps = [r["data"]["i"] for r in kept if r["kind"] == "train.step"]
    assert steps == list(range(len(steps))) and first <= len(steps) <= last
    assert kept[len(steps)]["kind"] == "ledger.recovered"
    adopted = kept[len(steps)]["data"]["adopted"]
    assert adopted is None or (adopted["last_seq"], result.signed_late[0][1]) == (len(steps) - 1, len(steps) - 1)


# ----------------------------------------------------------------------------- note format
@settings(max_examples=60, deadline=None)
@given(extensions=st.lists(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30),
                           max_size=4),
       extra=st.lists(st.binary(min_size=5, max_size=90), max_size=3), size=st.integers(0, 2**53))
def test_notes_keep_extensions_and_foreign_signatures(extensions: list[str], extra: list[bytes], size: int) -> None:
    from torchwitness.ledger.note import Checkpoint

    key = SigningKey.generate()
    signed = parse(Checkpoint("example.com/log", size, bytes(range(32)), tuple(extensions)).sign(key))
    lines = [f"\u2014 witness-{i} {base64.b64encode(b).decode()}" for i, b in enumerate(extra)]
    cosigned = signed.with_signatures(lines)
    assert cosigned.checkpoint == signed.checkpoint and cosigned.checkpoint.extensions == tuple(extensions)
    assert [s.blob for s in cosigned.signatures[1:]] == [b[4:] for b in extra]
    cosigned.verify(key.public)  # the other lines neither hide nor break the signer's
    body_end = cosigned.text.index("\n\n")
    for forged in (cosigned.text[:body_end] + "\nextra" + cosigned.text[body_end:],
                   cosigned.text.replace(f"\n{size}\n", f"\n{size + 1}\n", 1)):
        with pytest.raises(VerificationError):
            parse(forged).verify(key.public)


# ----------------------------------------------------------------------------- any damage
@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "run"
    _append_records(root, 57, key_dir=tmp_path_factory.mktemp("pristine-keys"))
    return root


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_damage_fails_or_changes_no_record(pristine: Path, tmp_path_factory: pytest.TempPathFactory,
                                                data: st.DataObject) -> None:
    """Flip, cut, delete or extend any file of a sealed run: verify (pinned or not) either refuses the folder in a
    VerificationError or vouches for exactly the records that were sealed."""
    root = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(pristine, root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != ".writer.lock")
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(files), label="file")
        if not path.exists():
            continue
        content = path.read_bytes()
        how = data.draw(st.sampled_from(["flip", "cut", "delete", "append"]), label="how")
        if how == "flip" and content:
            i = data.draw(st.integers(0, len(content) - 1), label="byte")
            path.write_bytes(content[:i] + bytes([content[i] ^ data.draw(st.integers(1, 255))]) + content[i + 1:])
        elif how == "cut":
            path.write_bytes(content[:data.draw(st.integers(0, max(0, len(content) - 1)), label="length")])
        elif how == "delete":
            path.unlink()
        else:
            path.write_bytes(content + data.draw(st.binary(min_size=1, max_size=80), label="tail"))
    signer = json.loads(Layout(pristine).manifest.read_text())["signer"]
    for key in (None, signer):
        try:
            result = verify_run(root, key=key)
        except (VerificationError, InputError, LedgerError):
            continue
        assert _lines(root)[:result.covered] == _lines(pristine) and result.covered == result.records


def test_a_copy_re_signed_as_a_new_log_fails_an_origin_pin(tmp_path):
    from torchwitness.ledger.verify import verify_run

    with tw.Run(tmp_path / "run") as run:
        run.record("note", {"i": 1})
    result = verify_run(tmp_path / "run")
    assert f"origin {result.origin}" in result.summary()
    assert verify_run(tmp_path / "run", origin=result.origin).origin == result.origin
    with pytest.raises(VerificationError, match="not the pinned origin"):
        verify_run(tmp_path / "run", origin="torchwitness/someone-else")


def test_bytes_after_a_sealed_run_are_refused(tmp_path):
    from torchwitness.ledger.verify import verify_run

    with tw.Run(tmp_path / "run") as run:
        run.record("note", {"i": 1})
    segment = sorted((tmp_path / "run" / "records").glob("*.jsonl"))[-1]
    with segment.open("ab") as f:
        f.write(b'{"data":{"i":7},"kind":"note"}')  # no newline: reads as a torn final line
    with pytest.raises(VerificationError, match="after the sealed run's end"):
        verify_run(tmp_path / "run")


def test_a_rank_key_alone_cannot_add_records_the_run_did_not_vouch_for(tmp_path: Path) -> None:
    root, key_dirs = _ddp_folder(tmp_path)
    run_key = json.loads((shard_dir(root, 0) / "ledger.json").read_text())["signer"]
    before = verify_run(root, key=run_key)
    # rank 1's own (authorised) key appends and signs records after the run's last run-level checkpoint
    with Ledger.open(shard_dir(root, 1), key_dir=key_dirs[1], rank=1, shard=True,
                     run_id=json.loads((root / "run.json").read_text())["run"]) as ledger:
        ledger.append("train.step", {"i": 99, "forged": True})
    assert verify_run(shard_dir(root, 1)).records == before.shards[1].records + 1  # the shard alone is consistent
    with pytest.raises(VerificationError, match=r"rank 1: records up to .* signed by the shard's key alone"):
        verify_run(root, key=run_key)


def test_a_damaged_folder_fails_verification_and_a_missing_one_is_an_input_error(tmp_path):
    with tw.Run(tmp_path / "run") as run:
        run.record("note", {"i": 1})
    (tmp_path / "run" / "records" / "000001.jsonl").mkdir()
    with pytest.raises(VerificationError, match="should be a segment file, not a folder"):
        verify_run(tmp_path / "run")
    with pytest.raises(InputError, match="no such run folder"):
        verify_run(tmp_path / "missing")


def test_the_unsigned_manifest_cannot_rename_the_run(tmp_path):
    with tw.Run(tmp_path / "run") as run:
        run.record("note", {"i": 1})
    manifest = tmp_path / "run" / "ledger.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(dict(doc, run="FORGEDRUNID")))
    with pytest.raises(VerificationError, match=r"ledger\.json names run 'FORGEDRUNID'"):
        verify_run(tmp_path / "run")
