"""Score the auditor on the scenario suite the way issue #20's held-out suite is scored, in both sampling modes.

For each buggy scenario: a hit when an expected rule is reported as a root at WARN or worse (strict recall), a
wrong extra when another rule is a WARN-or-worse root; for each healthy control: a false alarm on any WARN or
worse; a crash on an exception or any ``watch.error`` the watch recorded. Default sampling is the library's
(the first 5 steps, every 8th until 64, then every 100th); every step is ``every_n_steps=1``.

    python benchmarks/scenario_recall.py                       # the blind scenario modules
    python benchmarks/scenario_recall.py scenarios_blind2 -v   # one module, one line per scenario
    python benchmarks/scenario_recall.py --seed 3              # another torch seed (model inits, noise)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

SCENARIOS = Path(__file__).resolve().parent.parent / "tests" / "scenarios"
BLIND = ("scenarios_blind", "scenarios_blind2", "scenarios_blind3", "scenarios_blind4", "scenarios_blind5",
         "scenarios_blind6", "scenarios_blind7", "scenarios_blind8", "scenarios_blind9",
         "scenarios_blind10", "scenarios_blind11", "scenarios_blind12", "scenarios_blind13", "scenarios_healthy14",
         "scenarios_blind15", "scenarios_healthy16", "scenarios_healthy16b", "scenarios_healthy16c",
         "scenarios_blind17", "scenarios_blind19", "scenarios_blind21", "scenarios_healthy22",
         "scenarios_blind24")
MODES = {"default": {"every_n_steps": 100, "first_steps": 5}, "every-step": {"every_n_steps": 1, "first_steps": 0}}


def score(modules: list[str], seed: int, verbose: bool) -> None:
    sys.path.insert(0, str(SCENARIOS))
    import _kit

    import torchwitness as tw
    from torchwitness.rules import Severity
    from torchwitness.run import Run

    for m in modules:
        importlib.import_module(m)
    chosen = [s for s in _kit.BUGGY + _kit.HEALTHY if s.fn.__module__ in modules]
    watches: list = []
    original = Run.watch

    def spy(self, *args, **kwargs):
        w = original(self, *args, **kwargs)
        watches.append(w)
        return w

    Run.watch = spy
    for mode, sampling in MODES.items():
        _kit.WATCH.update(sampling)
        hits = wrong = alarms = crashes = buggy = healthy = 0
        start = time.process_time()
        for s in chosen:
            watches.clear()
            torch.manual_seed(seed)
            try:
                with tw.Run(Path(tempfile.mkdtemp()) / s.name) as run:
                    s.fn(run)
                roots, errors = run.findings(), [e for w in watches for e in w.errors.values()]
            except Exception as e:  # a crash of the scenario under the watch
                roots, errors = [], [repr(e)]
            crashes += bool(errors)
            loud = {f.rule_id for f in roots if f.severity >= Severity.WARN}
            if s.expected:
                buggy += 1
                hit, extra = bool(s.expected & loud), loud - s.expected - s.tolerated
                hits, wrong = hits + hit, wrong + bool(extra)
                line = f"{'hit' if hit else 'MISS'}{' +' + ','.join(sorted(extra)) if extra else ''}"
            else:
                healthy += 1
                alarms += bool(loud)
                line = f"ALARM {','.join(sorted(loud))}" if loud else "quiet"
            if verbose or line not in ("hit", "quiet") or errors:
                print(f"[{mode}] {s.name}: {line} {errors or ''}")
        print(f"{mode}: strict recall {hits}/{buggy} ({hits / max(buggy, 1):.2f}), wrong extra root {wrong}/{buggy}, "
              f"healthy flagged {alarms}/{healthy}, crashes {crashes}, CPU {time.process_time() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(BLIND), help="scenario modules (tests/scenarios)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed set before each scenario (default 0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per scenario")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    score(args.modules, args.seed, args.verbose)


if __name__ == "__main__":
    main()
