"""Kill erasures with SIGKILL at random moments (run as a script by test_erasure_crash.py).

One process imports torchwitness once, then per trial copies the template run and forks a child that does the
work through the real CLI (``torchwitness.cli.main``), or holds the run open and performs a queued erasure from
its inbox; this process sends the child SIGKILL after a random delay drawn over the work's measured duration.
Forking after the imports makes a trial cost the work itself (milliseconds), not an interpreter start, so many
kills land inside the few milliseconds an erasure takes; half the delays are drawn over the last 40 % of the
work, where the erasure runs. ``--at`` kills deterministically instead, at the moment a
named library function is entered (patched in the child only: the library has no test hook).

Usage: python _erase_kills.py MODE TEMPLATE OUT TRIALS SEED [--at FUNCTION] -- CLI ARGS...
Prints one JSON line per trial: {"dir", "delay", "killed"}.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import torchwitness.cli
from torchwitness.ledger import erasure
from torchwitness.ledger.inbox import appending
from torchwitness.ledger.writer import Ledger


def _cli(args: list[str]) -> None:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # this process's stdout carries the trials' JSON lines
    try:
        torchwitness.cli.main(args)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    os._exit(code)


def _kill_at(function: str) -> None:
    """SIGKILL this (child) process as soon as ``function`` (``Journal.finish`` or ``Ledger.checkpoint``) is
    entered: after the records are signed but before anything is deleted, or after the intent but before the
    records are signed."""
    owner, name = {"Journal.finish": (erasure.Journal, "finish"), "Ledger.checkpoint": (Ledger, "checkpoint")}[
        function]

    def die(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, die)


def _hold(root: Path, ready: int) -> None:
    """A serving process: hold the run open, performing its inbox every 5 ms, until killed."""
    Ledger.open(root, inbox_seconds=0.005)
    os.write(ready, b"r")
    while True:
        time.sleep(1)


def _trial(mode: str, run: Path, args: list[str], delay: float | None, at: str | None) -> bool:
    """Run one trial; True if the child was killed by the SIGKILL (rather than finishing first)."""
    if mode == "inbox":
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _hold(run, ready_w)
        os.read(ready_r, 1)
        with appending(run, timeout=0.0) as target:  # queued: the holder performs it
            target.erase(values=args, reason="asked")
    else:
        pid = os.fork()
        if pid == 0:
            if at:
                _kill_at(at)
            _cli([a.replace("{run}", str(run)) for a in args])
    if delay is not None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _calibrate(mode: str, template: Path, out: Path, args: list[str]) -> float:
    """Seconds the work takes when nothing kills it (median of three): from the fork, or for a queued erasure
    from its submission until the holder has performed it."""
    times = []
    for i in range(3):
        run = out / f"calibrate-{i}"
        shutil.copytree(template, run)
        if mode == "inbox":
            times.append(_performed_in(run, args))
        else:
            start = time.perf_counter()
            _trial(mode, run, args, None, None)
            times.append(time.perf_counter() - start)
        shutil.rmtree(run)
    return sorted(times)[1]


def _performed_in(run: Path, args: list[str]) -> float:
    from torchwitness.ledger.inbox import Inbox

    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _hold(run, ready_w)
    os.read(ready_r, 1)
    start = time.perf_counter()
    with appending(run, timeout=0.0) as target:
        target.erase(values=args, reason="asked")
    inbox = Inbox.for_run(run)
    while inbox.pending():
        time.sleep(0.001)
    took = time.perf_counter() - start
    inbox.close()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return took


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--")
    head, args = argv[:split], argv[split + 1:]
    at = None
    if "--at" in head:
        at = head.pop(head.index("--at") + 1)
        head.remove("--at")
    mode, template, out, trials, seed = head[0], Path(head[1]), Path(head[2]), int(head[3]), int(head[4])
    if args[0] == "expire":  # what the command imports (torch among it), imported once before forking
        importlib.import_module("torchwitness.controls.content")
        importlib.import_module("torchwitness.probes.retained")
    rng = random.Random(seed)
    duration = None if at else _calibrate(mode, template, out, args)
    for i in range(trials):
        run = out / f"trial-{i:03d}"
        shutil.copytree(template, run)
        # Every other kill lands in the last 40 % of the work, where the erasure itself runs (after the run is
        # opened), so that more of them catch it mid-way; the rest anywhere from the start.
        delay = None if at else rng.uniform(0.0 if i % 2 else 0.7 * duration, 1.1 * duration)
        killed = _trial(mode, run, args, delay, at)
        print(json.dumps({"dir": str(run), "delay": delay, "killed": killed, "duration": duration}), flush=True)


if __name__ == "__main__":
    main()
