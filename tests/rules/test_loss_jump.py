"""TW108/TW103's reading of a loss that jumps from a settled level in one step: the batch made it."""

from __future__ import annotations

import math

from torchwitness.probes.view import LossLog
from torchwitness.rules.training.numerics import loss_jump


def _log(values: list[float]) -> LossLog:
    log = LossLog()
    log.extend(enumerate(values))
    return log


def test_a_one_step_jump_from_a_settled_loss_is_found() -> None:
    log = _log([0.1] * 20 + [50.0, 60.0])
    assert loss_jump(log, 20) == (20, 0.1, 50.0)
    assert loss_jump(log, 19) == (20, 0.1, 50.0)  # a window judged around the step before


def test_a_gradual_rise_is_no_jump() -> None:
    log = _log([0.1 * 1.5 ** k for k in range(30)])  # an unstable rate: x1.5 per step, 1e5 in all
    assert all(loss_jump(log, s) is None for s in range(30))


def test_this_steps_loss_not_yet_in_the_history_counts() -> None:
    log = _log([0.2] * 12)
    assert loss_jump(log, 12, now=30.0) == (12, 0.2, 30.0)
    assert loss_jump(log, 12, now=3.0) is None  # 15x: a hard batch, not other units


def test_non_finite_or_too_short_histories_are_not_judged() -> None:
    assert loss_jump(_log([0.1, 0.1, 0.1, 50.0]), 3) is None  # fewer than 5 losses before it
    assert loss_jump(_log([0.1] * 8 + [math.nan, 0.1, 50.0]), 10) is None
    assert loss_jump(_log([0.1] * 10 + [math.inf]), 10) is None  # TW101's business
