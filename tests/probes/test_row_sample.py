"""The bounded training-row sample behind TW208 keeps memory flat and the overlap estimate unbiased."""

from __future__ import annotations

import numpy as np

from torchwitness.probes.view import RowSample


def test_sample_stays_bounded_and_estimates_overlap() -> None:
    rng = np.random.default_rng(0)
    fps = rng.integers(0, 2**52, size=300_000, dtype=np.int64)
    sample = RowSample(cap=20_000)
    for chunk in np.array_split(fps, 300):  # as audits arrive, 1,000 rows at a time
        sample.update(chunk.tolist())
    assert len(sample) <= 20_000 and sample.shift >= 4
    # evaluation shares 30 % of its rows with training
    shared = fps[:3_000].tolist()
    fresh = rng.integers(0, 2**52, size=7_000, dtype=np.int64).tolist()
    eval_rows = set(shared + fresh)
    estimate = sample.overlap(eval_rows) * 2**sample.shift
    assert abs(estimate - 3_000) < 600  # a hash-consistent sample: every kept shared row is found


def test_small_runs_keep_every_row() -> None:
    sample = RowSample()
    sample.update([1, 2, 3])
    sample.update([3, 4])
    assert len(sample) == 4 and sample.shift == 0 and sample.overlap({2, 4, 9}) == 2
