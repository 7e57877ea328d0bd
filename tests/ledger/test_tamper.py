"""Golden mutations: each test changes one thing in a sealed ledger and expects verify to name it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchwitness.errors import VerificationError
from torchwitness.ledger import Ledger, verify_run
from torchwitness.ledger.keys import SigningKey
from torchwitness.ledger.layout import Layout
from torchwitness.ledger.note import parse

N_RECORDS = 1200
EVERY = 300


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sealed") / "run"
    key_dir = tmp_path_factory.mktemp("sealed-keys")
    with Ledger.open(root, key_dir=key_dir, checkpoint_every=EVERY, segment_records=500) as ledger:
        for i in range(N_RECORDS - 1):
            ledger.append("train.step", {"loss": 1.0 / (i + 1), "i": i, "note": "é ü ∑"}, step=i)
        ledger.append("run.end", {"status": "ok", "duration_s": 1.0})
    return root


@pytest.fixture
def run(sealed: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(sealed, copy)
    return copy


def _lines(run: Path) -> list[bytes]:
    out: list[bytes] = []
    for seg in Layout(run).segments():
        out.extend(seg.read_bytes().split(b"\n")[:-1])
    return out


def _rewrite(run: Path, lines: list[bytes], segment_records: int = 500) -> None:
    layout = Layout(run)
    for seg in layout.segments():
        seg.unlink()
    for start in range(0, len(lines), segment_records):
        chunk = lines[start:start + segment_records]
        layout.segment(start // segment_records).write_bytes(b"\n".join(chunk) + b"\n")


def _fails_at(run: Path, seq: int | None = None, checkpoint: int | None = None, **kw) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        verify_run(run, **kw)
    if seq is not None:
        assert info.value.seq == seq, str(info.value)
    if checkpoint is not None:
        assert info.value.checkpoint == checkpoint, str(info.value)
    return info.value


def test_sealed_ledger_verifies(sealed: Path) -> None:
    result = verify_run(sealed, deep=True)
    assert result.records == N_RECORDS and result.checkpoints >= 3 and result.uncovered == 0


@pytest.mark.parametrize("seq", range(0, N_RECORDS, 97))
def test_flipped_byte_names_the_record(run: Path, seq: int) -> None:
    lines = _lines(run)
    line = bytearray(lines[seq])
    pos = len(line) // 2
    line[pos] ^= 0x01
    lines[seq] = bytes(line)
    _rewrite(run, lines)
    _fails_at(run, seq)


def test_deleted_record(run: Path) -> None:
    lines = _lines(run)
    del lines[421]
    _rewrite(run, lines)
    _fails_at(run, 421)


def test_swapped_records(run: Path) -> None:
    lines = _lines(run)
    lines[650], lines[651] = lines[651], lines[650]
    _rewrite(run, lines)
    _fails_at(run, 650)


@pytest.mark.parametrize("keep", [N_RECORDS - 50, 2 * EVERY - 7], ids=["after-last-but-one", "before-it"])
def test_truncated_tail(run: Path, keep: int) -> None:
    _rewrite(run, _lines(run)[:keep])
    _fails_at(run, keep)


def test_truncated_unsigned_tail_is_caught_by_the_index(tmp_path: Path) -> None:
    root = tmp_path / "run"
    ledger = Ledger.open(root, checkpoint_every=100, checkpoint_seconds=3600)
    for i in range(250):
        ledger.append("x", {"i": i})
    ledger.flush()  # records 200..249 are written but no checkpoint covers them yet
    lines = _lines(root)
    ledger._segments.close()  # simulate the process vanishing without its final checkpoint
    ledger._stopping = True
    ledger._closed = True
    _rewrite(root, lines[:230], segment_records=100_000)
    _fails_at(root, 230)


def test_inserted_forged_record(run: Path) -> None:
    lines = _lines(run)
    forged = json.loads(lines[300])
    forged["data"] = {"loss": 0.0, "i": -1, "note": "forged"}
    lines.insert(300, json.dumps(forged, separators=(",", ":"), sort_keys=True).encode())
    _rewrite(run, lines)
    _fails_at(run, 300)


def test_edited_checkpoint(run: Path) -> None:
    path = Layout(run).checkpoint(600)
    text = path.read_text()
    signed = parse(text)
    forged_root = base64.b64encode(bytes(32)).decode()
    path.write_text(text.replace(base64.b64encode(signed.checkpoint.root).decode(), forged_root))
    _fails_at(run, checkpoint=600)


def test_checkpoint_signed_by_another_key(run: Path) -> None:
    path = Layout(run).checkpoint(900)
    signed = parse(path.read_text())
    path.write_text(signed.checkpoint.sign(SigningKey.generate()))
    err = _fails_at(run, checkpoint=900)
    assert "not signed by" in str(err)


def test_swapped_key_with_resigned_checkpoints_needs_a_pin(run: Path) -> None:
    layout = Layout(run)
    original = json.loads(layout.manifest.read_text())["signer"]
    thief = SigningKey.generate()
    for path in layout.checkpoint_files():
        path.write_text(parse(path.read_text()).checkpoint.sign(thief))
    layout.vkey.write_text(thief.public.to_vkey() + "\n")
    manifest = json.loads(layout.manifest.read_text())
    manifest["signer"] = thief.public.fingerprint
    layout.manifest.write_text(json.dumps(manifest))
    assert verify_run(run).signer == thief.public.fingerprint  # self-consistent forgery...
    err = _fails_at(run, key=original)  # ...caught once the original signer is pinned
    assert original in str(err)


def test_rollback_of_the_whole_folder_is_caught_with_an_earlier_checkpoint(run: Path) -> None:
    layout = Layout(run)
    saved = layout.checkpoint_files()[-1].read_text()
    _rewrite(run, _lines(run)[:EVERY])
    for path in layout.checkpoint_files()[1:]:
        path.unlink()
    layout.index.write_bytes(layout.index.read_bytes()[:32 * EVERY])
    verify_run(run)  # a consistent, shorter ledger on its own...
    _fails_at(run, EVERY, since=saved)  # ...but it no longer extends what an auditor saw earlier


def test_index_forgery_cannot_shift_the_blame(run: Path) -> None:
    lines = _lines(run)
    lines[10] = lines[10].replace(b'"i":10', b'"i":11')
    _rewrite(run, lines)
    from torchwitness.ledger.merkle import leaf_hash

    index = bytearray(Layout(run).index.read_bytes())
    index[32 * 10:32 * 11] = leaf_hash(lines[10])  # forger updates the cache too
    Layout(run).index.write_bytes(bytes(index))
    err = _fails_at(run, 0)  # index no longer authenticates: the interval's start is named
    assert "0..299" in str(err)


@pytest.mark.parametrize("mutation", ["flip", "missing-key", "bad-manifest", "not-a-run"])
def test_cli_exits_non_zero_with_one_line(run: Path, tmp_path: Path, mutation: str) -> None:
    target = run
    if mutation == "flip":
        lines = _lines(run)
        lines[5] = lines[5].replace(b'"i":5', b'"i":6')
        _rewrite(run, lines)
    elif mutation == "missing-key":
        Layout(run).vkey.unlink()
    elif mutation == "bad-manifest":
        Layout(run).manifest.write_text("{not json")
    else:
        target = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "torchwitness", "verify", str(target)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    if mutation == "flip":
        assert "record seq 5" in proc.stderr
