"""Processes that create the default signing key at the same moment (the ranks of a torchrun job) all get the
one key that lands on disk, never a half-written file."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from torchwitness.ledger.keys import SigningKey


def _create(key_dir: str, start: mp.synchronize.Barrier, out: mp.queues.Queue) -> None:
    start.wait()
    try:
        out.put(SigningKey.load_or_create(Path(key_dir)).public.fingerprint)
    except Exception as e:  # reported to the test, which names it
        out.put(f"error: {e}")


def test_concurrent_creation_gives_every_process_the_key_on_disk(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for round_ in range(5):
        key_dir = tmp_path / f"keys{round_}"
        start, out = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_create, args=(str(key_dir), start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        got = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        on_disk = SigningKey.load(key_dir / "default.ed25519").public.fingerprint
        assert got == [on_disk] * 6, got
        assert [p.name for p in key_dir.iterdir()] == ["default.ed25519"], "no temporary file is left behind"
