"""Writer behaviour: back-pressure policies, checkpoint cadence, reopening, input checks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import torchwitness as tw
from torchwitness.errors import InputError, LedgerError, RunExists
from torchwitness.ledger import Ledger, iter_records, verify_run
from torchwitness.ledger.layout import Layout


def test_block_policy_loses_nothing_with_a_tiny_queue(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "run", queue_size=4, checkpoint_every=100) as ledger:
        seqs = [ledger.append("x", {"i": i}) for i in range(2000)]
    assert seqs == list(range(2000))
    assert verify_run(tmp_path / "run").records == 2000


def test_drop_policy_counts_and_records_the_loss(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "run", queue_size=2, on_full="drop") as ledger:
        results = [ledger.append("x", {"pad": "y" * 500}) for _ in range(20_000)]
        dropped = ledger.dropped
    kept = [s for s in results if s is not None]
    assert dropped == results.count(None) > 0
    records = list(iter_records(tmp_path / "run"))
    reported = sum(r["data"]["count"] for r in records if r["kind"] == "ledger.dropped")
    assert reported == dropped
    assert len(records) == len(kept) + sum(1 for r in records if r["kind"] == "ledger.dropped")
    verify_run(tmp_path / "run", deep=True)


def test_checkpoints_land_every_n_records(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "run", checkpoint_every=250, checkpoint_seconds=3600) as ledger:
        for i in range(1000):
            ledger.append("x", {"i": i})
        ledger.append("y")
    sizes = [int(p.stem) for p in Layout(tmp_path / "run").checkpoint_files()]
    assert sizes == [250, 500, 750, 1000, 1001]


def test_an_idle_writer_sleeps_and_wakes_for_appends_and_due_checkpoints(tmp_path: Path) -> None:
    """No polling while idle; an unflushed append reaches the file at once, also one made just after the writer
    found the queue empty (it sees the writer busy and does not wake it); a time-based checkpoint lands when due."""
    import time

    def wait_for(condition, seconds: float = 2.0) -> bool:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.001)
        return condition()

    with Ledger.open(tmp_path / "run", checkpoint_every=10_000, checkpoint_seconds=3600) as ledger:
        ledger.append("x")
        ledger.checkpoint()
        loops: list[int] = []
        drain = ledger._drain

        def counted(limit: int) -> list:
            loops.append(limit)
            return drain(limit)

        ledger._drain = counted  # type: ignore[method-assign]
        time.sleep(0.5)  # idle and every record signed: the writer does not wake at all
        assert loops == []
        ledger.append("y")
        assert wait_for(lambda: ledger.size == 2)
        raced: list[int | None] = []

        def racing(limit: int) -> list:
            batch = drain(limit)
            if not batch and not raced:  # the moment between an empty drain and the writer going idle
                raced.append(ledger.append("late"))
            return batch

        ledger._drain = racing  # type: ignore[method-assign]
        ledger.append("z")  # wakes the writer, whose next empty drain meets the racing append
        assert wait_for(lambda: ledger.size == 4), "an append racing the writer going idle was left in the queue"
        assert raced == [3]
    with Ledger.open(tmp_path / "timed", checkpoint_every=10_000, checkpoint_seconds=0.6) as ledger:
        ledger.append("x")
        written = time.monotonic()
        assert wait_for(lambda: bool(Layout(tmp_path / "timed").checkpoint_files()), 3.0)
        assert time.monotonic() - written < 1.5  # when due, not at close
    assert next(int(f.stem) for f in Layout(tmp_path / "timed").checkpoint_files()) == 1


def test_concurrent_appenders_get_unique_ordered_seqs(tmp_path: Path) -> None:
    seqs: list[int] = []
    lock = threading.Lock()
    with Ledger.open(tmp_path / "run") as ledger:
        def work(t: int) -> None:
            for i in range(500):
                s = ledger.append("x", {"t": t, "i": i})
                with lock:
                    seqs.append(s)
        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert sorted(seqs) == list(range(2000))
    records = list(iter_records(tmp_path / "run"))
    assert [r["seq"] for r in records] == list(range(2000))
    verify_run(tmp_path / "run", deep=True)


def test_reopening_a_run_needs_resume_and_appends_a_marked_session(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "run") as run:
        run.record("a")
        run_id = run.run_id
    with pytest.raises(RunExists, match=f"already holds run {run_id}: give a new path .* resume=True"):
        tw.Run(tmp_path / "run")
    with tw.Run(tmp_path / "run", resume=True) as run:
        assert run.run_id == run_id and run.resumed
        run.record("b", {"who": run.personal("bob")})
    records = list(iter_records(tmp_path / "run"))
    assert [r["kind"] for r in records] == ["run.start", "a", "run.end", "run.start", "b", "run.end"]
    assert "resumed" not in records[0]["data"] and records[3]["data"]["resumed"] is True
    assert verify_run(tmp_path / "run", deep=True).records == 6


def test_resume_on_a_new_path_starts_the_run(tmp_path: Path) -> None:
    with tw.Run(tmp_path / "run", resume=True) as run:
        assert not run.resumed
    assert "resumed" not in next(iter_records(tmp_path / "run"))["data"]


def test_a_folder_with_an_unreadable_manifest_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "ledger.json").write_text("{not json")
    with pytest.raises(RunExists, match=r"already holds run \?: give a new path"):
        tw.Run(tmp_path / "run")


def test_reopening_without_the_private_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Ledger.open(tmp_path / "run") as ledger:
        ledger.append("x")
    monkeypatch.setenv("TORCHWITNESS_KEY_DIR", str(tmp_path / "other-keys"))
    with pytest.raises(LedgerError, match="no private key with fingerprint"):
        Ledger.open(tmp_path / "run")
    assert verify_run(tmp_path / "run").records == 1


@pytest.mark.parametrize("kind, step, data", [
    ("Bad Kind", None, {}), ("", None, {}), ("ok.kind", -1, {}), ("ok.kind", 1.5, {}), ("ok.kind", None, {"x": {1}}),
])
def test_bad_appends_raise_at_once_and_lose_nothing(tmp_path: Path, kind, step, data) -> None:
    with Ledger.open(tmp_path / "run") as ledger:
        ledger.append("before")
        with pytest.raises(InputError):
            ledger.append(kind, data, step)
        ledger.append("after")
    assert [r["kind"] for r in iter_records(tmp_path / "run")] == ["before", "after"]


def test_refuses_a_non_run_folder(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "file.txt").write_text("hello")
    with pytest.raises(InputError, match="not a torchwitness run folder"):
        Ledger.open(tmp_path / "stuff")


def test_computed_values_run_on_the_writer_thread_and_their_errors_keep_the_sequence(tmp_path: Path) -> None:
    import numpy as np

    from torchwitness.ledger.encoding import Computed, Packed, decode_array

    threads: list[str] = []

    def window() -> dict:
        threads.append(threading.current_thread().name)
        return {"top": Packed(np.arange(3, dtype=np.uint8)), "n": 3}

    def broken() -> dict:
        raise ValueError("no outputs")

    with Ledger.open(tmp_path / "run") as ledger:
        ledger.append("serve.window", {"out": Computed(window)})
        ledger.append("serve.window", {"out": Computed(broken)})
        ledger.append("note", {"after": True})
    records = list(iter_records(tmp_path / "run"))
    assert threads and threads[0] != threading.current_thread().name
    first, second, third = (r for r in records if r["kind"] in ("serve.window", "ledger.error", "note"))
    assert decode_array(first["data"]["out"]["top"]).tolist() == [0, 1, 2] and first["data"]["out"]["n"] == 3
    assert second["kind"] == "ledger.error" and "no outputs" in second["data"]["error"]
    assert third["seq"] == second["seq"] + 1
    verify_run(tmp_path / "run")
