"""Thresholds of the training rules, overridable per watch: ``run.watch(..., thresholds={"grad_norm_max": 1e4})``.

Defaults are chosen so that healthy runs stay quiet: each rule fires only on a signal far outside what a working
training loop produces.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from torchwitness.errors import InputError

DEFAULT_THRESHOLDS: dict[str, float] = {
    "grad_norm_max": 1e3,  # global gradient norm above which gradients are exploding
    "vanishing_ratio": 1e-4,  # relative grad (|g|/|w|) of the first weight layer vs the last one
    "update_ratio_max": 1.0,  # |update| / |weight| of a weight matrix in one step: the learning rate is too high
    "update_ratio_min": 1e-6,  # |update| / |weight| below which every step of a weight matrix is negligible
    "update_ratio_low": 1e-4,  # ... below which, on every audited step, a loss stuck at chance is the rate's doing
    "lr_collapse": 1e-4,  # learning rate relative to its initial value at which a schedule has killed training
    "divergence_factor": 3.0,  # recent loss above this many times its early level
    "chance_margin": 0.03,  # loss within this fraction of the chance-level loss counts as "at chance"
    "chance_min_steps": 20,  # steps of history before judging a loss stuck at chance (confidence stated)
    "input_abs_max": 100.0,  # largest |input| of a normalised floating input
    "input_abs_min": 1e-2,  # a non-constant floating input peaking below this was scaled down twice
    "flat_std": 1e-7,  # range (max - min) of a flat (constant) input
    "dead_fraction": 0.5,  # share of units that are zero for the whole batch
    "min_units": 8,  # layers narrower than this are not judged for dead units
    "collapse_ratio": 1e-4,  # per-unit spread over the batch relative to magnitude
    "imbalance_ratio": 20.0,  # most / least frequent class (a minority under ~5 % of a binary task)
    "imbalance_min_labels": 40,  # labels seen before judging imbalance (and at least 20 per class)
    "tiny_batch": 8,  # batch size below which BatchNorm statistics are noise
    "leak_corr": 0.995,  # |correlation| of a feature with a label that means the label leaks into the input
    "leak_corr_regression": 0.9999,  # the same for a regression target, which strong predictors approach
    "leak_min_rows": 64,  # rows seen before a correlation is judged a leak
    "overlap_fraction": 0.05,  # share of audited training rows also seen in evaluation
    "duplicate_rows_fraction": 0.25,  # share of a batch's rows that repeat another row of the same batch
    "rounded_away_fraction": 0.5,  # share of a low-precision tensor's updates lost to rounding
    "window_min_steps": 3,  # audited steps before a window rule (unused layer, no gradient) may judge
}


def check_arguments(model: Any, optimizer: Any, loss_fn: Any, **schedule: Any) -> None:
    """Refuse, naming it, an argument of ``watch`` that could only fail later inside the training loop."""
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"watch() needs a torch.nn.Module, not {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(f"optimizer must be a torch.optim.Optimizer, not {type(optimizer).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise InputError(f"loss_fn must be a loss module or function, not {type(loss_fn).__name__}")
    for name, value in schedule.items():
        least = 0 if name == "first_steps" else 1
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise InputError(f"{name} must be a whole number >= {least}, not {value!r}")


def resolve(overrides: Mapping[str, float] | None) -> dict[str, float]:
    """Defaults updated with ``overrides``; an unknown name, or a value that is not a finite number >= 0, is
    refused naming it (a NaN bar would flag every step, or none)."""
    out = dict(DEFAULT_THRESHOLDS)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise InputError(f"thresholds must be a mapping of name to number, not {type(overrides).__name__}")
    for k, v in (overrides or {}).items():
        if k not in out:
            raise InputError(f"unknown threshold {k!r}; known: {', '.join(sorted(out))}")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise InputError(f"threshold {k!r} must be a finite number >= 0, not {v!r}")
        out[k] = float(v)
    return out
