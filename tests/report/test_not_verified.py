"""`report` and `card` refuse a ledger that does not verify (exit 3, one line); `--draft` renders it marked."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

Cli = Callable[..., tuple[int, str, str]]


def _tampered(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tampered"
    shutil.copytree(run, copy)
    segment = copy / "records" / "000000.jsonl"
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"ts":', b'"ts":1', 1)  # one record's time, changed after signing
    segment.write_bytes(b"".join(lines))
    return copy


def test_report_and_card_exit_3_on_a_tampered_ledger_and_draft_marks_it(rich_run: Path, tmp_path: Path,
                                                                        cli: Cli) -> None:
    bad = _tampered(rich_run, tmp_path)
    out = tmp_path / "d.md"
    code, _, err = cli("report", str(bad), "-f", "md", "-o", str(out))
    assert code == 3 and not out.exists()
    assert len(err.strip().splitlines()) == 1 and "record seq 3" in err and "--draft" in err
    code, _, err = cli("report", str(bad), "-f", "md", "-o", str(out), "--draft")
    assert code == 0, err
    text = out.read_text()
    assert text.startswith("# NOT VERIFIED: Technical documentation") and "verification failed" in text
    assert "NOT VERIFIED" in err
    code, _, err = cli("card", str(bad))
    assert code == 3 and "record seq 3" in err
    code, card, err = cli("card", str(bad), "--draft")
    assert code == 0, err
    assert "**NOT VERIFIED**" in card and "verified: false" in card


def test_report_of_a_verified_ledger_is_not_marked(rich_run: Path, tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "d.md"
    code, _, _ = cli("report", str(rich_run), "-f", "md", "-o", str(out), "--proofs", "2")
    assert code == 0 and "NOT VERIFIED" not in out.read_text()
