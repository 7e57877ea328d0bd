"""The data users have (tensors, numpy, lists, pandas and polars columns or frames) as the accumulator's tensors.

Every refusal is one sentence naming the argument and the shape or values expected. Checks that would read a value
back from an accelerator are left to the accumulator's deferred flag, so ``update`` never waits for the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from torchwitness.errors import InputError


def _module(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def is_frame(x: Any) -> bool:
    """A pandas or polars DataFrame (checked by module, so neither library is imported here)."""
    return _module(x) in ("pandas", "polars") and hasattr(x, "columns") and not hasattr(x, "dtype")


def columns(x: Any) -> dict[str, np.ndarray]:
    """``{name: values}`` from a DataFrame or a mapping of columns."""
    if is_frame(x):
        return {str(c): x[c] for c in x.columns}
    if isinstance(x, Mapping):
        return {str(k): v for k, v in x.items()}
    raise InputError(f"sensitive attributes must be a DataFrame or a mapping of column name to values, "
                     f"not {type(x).__name__}")


def as_array(x: Any, name: str) -> np.ndarray:
    """A numpy view of a column-like value (pandas/polars Series, list, tuple, array)."""
    if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray):
        x = x.to_numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name}: cannot read {type(x).__name__} as an array ({e})") from e


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """A tensor of numbers or booleans; strings and objects are refused with the argument's name."""
    if isinstance(x, torch.Tensor):
        return x
    if is_frame(x):
        raise InputError(f"{name} must be one column (a Series, array or tensor of shape [n]), not a DataFrame")
    arr = as_array(x, name)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must hold numbers (0/1 labels or predictions), not {arr.dtype} values such as "
                         f"{str(arr.ravel()[:1].tolist())[1:-1] or 'nothing'}")
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise InputError(f"{name} holds integers too large for labels or group codes (up to {int(arr.max())})")
    # polars and pandas hand out read-only views; torch warns on those and must not write through them
    return torch.from_numpy((arr if arr.flags.writeable else arr.copy()).astype(np.int64, copy=False)
                            if arr.dtype == np.uint64 else (arr if arr.flags.writeable else arr.copy()))


def decisions(preds: Any, threshold: float | None) -> torch.Tensor:
    """Hard 0/1 decisions from predictions, ``[n, 2]`` scores (arg-maxed) or, with ``threshold``, scores."""
    t = as_tensor(preds, "preds")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim == 2:
        if t.shape[1] != 2:
            raise InputError(f"preds must be [n] decisions or [n, 2] class scores of a binary task, "
                             f"got {tuple(t.shape)}")
        return t.argmax(1)
    if t.ndim != 1:
        raise InputError(f"preds must be [n] decisions or [n, 2] class scores, got {tuple(t.shape)}")
    if threshold is not None:
        return (t >= threshold).long()
    if t.is_floating_point() and t.device.type == "cpu" and t.numel() and not bool(((t == 0) | (t == 1)).all()):
        raise InputError("preds holds scores or probabilities, not 0/1 decisions: selection rates need decisions; "
                         "pass threshold= to FairnessAccumulator (e.g. 0.5) or threshold the scores yourself")
    return t


def labels(target: Any) -> torch.Tensor:
    t = as_tensor(target, "target")
    if t.ndim != 1:
        raise InputError(f"target must be [n] labels in {{0, 1}}, got shape {tuple(t.shape)}")
    return t


def check_lengths(**tensors: torch.Tensor) -> None:
    sizes = {name: int(t.shape[0]) for name, t in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise InputError("preds, target and groups must have one row each per example; got "
                         + ", ".join(f"{k} {v}" for k, v in sizes.items()))
