"""Coverage of the fairness intervals: how often the 95 % interval holds the population disparity.

Each setting fixes every group's cell probabilities (label, prediction), draws each trial's confusion counts from
them, and asks whether ``[ci_low, ci_high]`` of ``fairness.eval`` contains the disparity computed from the
probabilities themselves. Settings span zero disparity, small and rare groups, 2, 4 and 12 groups (the 12 as a
2 x 2 x 3 intersection) and both demographic parity and equalized odds. Also printed: how often the test of "no
disparity at all" rejects at 5 % (its size where the truth is 0, its power elsewhere).

    python benchmarks/fairness_coverage.py [--trials 400] [--reps 1000]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from torchwitness.controls.fairness import disparities, disparity_intervals


@dataclass(frozen=True)
class Setting:
    name: str
    metric: str
    rows: tuple[int, ...]
    selection: tuple[float, ...] = ()   # P(prediction = 1), prediction independent of the label
    tpr: tuple[float, ...] = ()         # or: rates given the label (equalized odds settings)
    fpr: tuple[float, ...] = ()
    positives: float = 0.4              # P(label = 1)

    def cells(self) -> np.ndarray:
        """``[G, 2, 2]`` probabilities of (label, prediction) per group."""
        pos = self.positives
        if self.selection:
            one = [np.array([[(1 - pos) * (1 - s), (1 - pos) * s], [pos * (1 - s), pos * s]]) for s in self.selection]
        else:
            one = [np.array([[(1 - pos) * (1 - f), (1 - pos) * f], [pos * (1 - t), pos * t]])
                   for t, f in zip(self.tpr, self.fpr, strict=True)]
        return np.stack(one)


DP, EO = "demographic_parity_difference", "equalized_odds_difference"
SETTINGS = [
    Setting("DP 0.10, 2 groups x 2,000", DP, (2000, 2000), selection=(0.30, 0.40)),
    Setting("DP 0.05, 2 groups x 200", DP, (200, 200), selection=(0.30, 0.35)),
    Setting("DP 0.10, 2 groups x 60, rare positives", DP, (60, 60), selection=(0.05, 0.15)),
    Setting("DP 0.00, 2 groups x 1,000", DP, (1000, 1000), selection=(0.30, 0.30)),
    Setting("DP 0.00, 2 groups x 100 and 900", DP, (100, 900), selection=(0.20, 0.20)),
    Setting("DP 0.00, 4 groups x 300", DP, (300,) * 4, selection=(0.30,) * 4),
    Setting("DP 0.10, 4 groups x 300", DP, (300,) * 4, selection=(0.30, 0.30, 0.35, 0.40)),
    Setting("DP 0.00, 12 groups x 150 (2x2x3)", DP, (150,) * 12, selection=(0.30,) * 12),
    Setting("DP 0.10, 12 groups x 200, one differs", DP, (200,) * 12, selection=(0.30,) * 11 + (0.40,)),
    Setting("DP 0.00, 12 groups x 40 to 440, rare", DP, (*range(40, 480, 40), 400), selection=(0.08,) * 12),
    Setting("EO 0.00, 2 groups x 1,000", EO, (1000, 1000), tpr=(0.7, 0.7), fpr=(0.2, 0.2)),
    Setting("EO 0.10, 2 groups x 1,000", EO, (1000, 1000), tpr=(0.7, 0.8), fpr=(0.2, 0.2)),
    Setting("EO 0.00, 4 groups x 300", EO, (300,) * 4, tpr=(0.7,) * 4, fpr=(0.2,) * 4),
    Setting("EO 0.10, 4 groups x 500", EO, (500,) * 4, tpr=(0.7, 0.7, 0.75, 0.7), fpr=(0.2, 0.2, 0.2, 0.3)),
    Setting("EO 0.00, 12 groups x 200", EO, (200,) * 12, tpr=(0.7,) * 12, fpr=(0.2,) * 12),
]


def run(setting: Setting, trials: int, reps: int, seed: int) -> tuple[float, float, float, float]:
    """(true value, coverage, mean width, share of trials where the no-disparity test rejects at 5 %)."""
    cells = setting.cells()
    truth = disparities(cells * 1e9)[setting.metric]
    rng = np.random.default_rng(seed)
    covered = width = rejected = 0.0
    for t in range(trials):
        counts = np.stack([rng.multinomial(n, c.ravel()).reshape(2, 2)
                           for n, c in zip(setting.rows, cells, strict=True)])
        lo, hi, p = disparity_intervals(counts, reps=reps, seed=t)[setting.metric]
        covered += lo - 1e-12 <= truth <= hi + 1e-12
        width += hi - lo
        rejected += p < 0.05
    return truth, covered / trials, width / trials, rejected / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20261207)
    args = parser.parse_args()
    print(f"95 % intervals, {args.trials} trials per setting, {args.reps} permutations and draws per interval")
    print("| setting | true value | coverage | mean width | rejects 'no disparity' |\n|---|---|---|---|---|")
    start, outside = time.perf_counter(), 0
    for s in SETTINGS:
        truth, coverage, width, rejected = run(s, args.trials, args.reps, args.seed)
        outside += not 0.92 <= coverage <= 0.98
        print(f"| {s.name} | {truth:.3f} | {100 * coverage:.1f} % | {width:.3f} | {100 * rejected:.1f} % |",
              flush=True)
    print(f"{len(SETTINGS) - outside} of {len(SETTINGS)} settings within 92-98 % coverage; "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
