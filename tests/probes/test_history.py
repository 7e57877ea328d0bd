"""Run history that stays bounded on long runs: the training-row sample behind TW208 and the loss log."""

from __future__ import annotations

import numpy as np
import pytest

from torchwitness.probes.view import LossLog, RowSample


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


def test_loss_log_is_bounded_and_indexed_across_the_run() -> None:
    log = LossLog(keep=100)
    for start in range(0, 10_000, 50):
        log.extend((s, float(s)) for s in range(start, start + 50))
    assert len(log) == 10_000 and log.first == (0, 0.0) and log[9_999] == (9_999, 9_999.0)
    assert len(log._items) <= 200 and log.start >= 9_800
    assert [s for s, _ in log.recent(3)] == [9_997, 9_998, 9_999]
    with pytest.raises(IndexError, match="no longer held"):
        log[0]


def test_loss_rules_judge_a_long_run_from_the_bounded_log() -> None:
    """TW108 still fires on a divergence long after the log started dropping old losses, and TW101 on a NaN."""
    from types import SimpleNamespace

    from torchwitness.probes.config import DEFAULT_THRESHOLDS
    from torchwitness.probes.view import History, StepView
    from torchwitness.rules.training.numerics import loss_divergence, nonfinite_loss

    history = History(losses=LossLog(keep=50))
    watch = SimpleNamespace(history=history, thresholds=dict(DEFAULT_THRESHOLDS))
    found: list[str] = []
    for step in range(0, 1_000, 10):  # an audit every 10 steps
        losses = [(s, 2.0 if s < 900 else 50.0) for s in range(step, step + 10)]
        if step == 950:
            losses[3] = (953, float("nan"))
        history.losses.extend(losses)
        view = StepView(event="step", step=step + 9, watch=watch)
        found += [f.rule_id for f in loss_divergence(view)] + [f.rule_id for f in nonfinite_loss(view)]
    assert history.losses.start > 0 and found.count("TW108") == 1 and found.count("TW101") == 1
