"""Always-on, sync-free sentinels: non-finite values on the steps between audits, named with their first step.

On every step that is not audited the watch hands a few tensors to :meth:`Sentinel.note`: the batch's first
floating input, a floating target and the prediction it is compared with (as the loss call receives them), and
the gradient of the first trainable tensor (a NaN or Inf anywhere upstream of the first layer spreads into it
through the matrix products of backward). Each costs one reduction written straight into a slot of an
on-device buffer, ``(step, field)``: a sum is NaN or infinite when any element is (or when the sum overflows
float32, which only values far out of any sane scale do). Nothing is read on the host until the next audit,
which fetches the used slots with its one batched transfer (:meth:`Sentinel.drain`) and empties them. The loss
needs no sentinel: the watch keeps every step's loss (a detached reference) for the same transfer.

>>> import torch
>>> s = Sentinel(capacity=8)
>>> s.start(10)
>>> s.note("input", 10, torch.ones(4)); s.note("input", 12, torch.tensor([1.0, float("nan")]))
>>> values, base = s.drain()
>>> first_bad(values.tolist(), base)
{'input': 12}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FIELDS = ("input", "target", "pred", "grad")
_COLUMN = {name: i for i, name in enumerate(FIELDS)}


class Sentinel:
    """Per-step non-finite flags for up to ``capacity`` steps between two audits (later steps share the last
    slot, so the first step of a fault is still bounded)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(2, capacity)
        self._buf: torch.Tensor | None = None
        self._base = 0  # the step of slot 0
        self._used = 0  # slots written since the last drain (one past the highest)

    def start(self, step: int) -> None:
        """Slots count from ``step`` (the first step after an audit)."""
        self._base = step
        self._used = 0

    def note(self, field: str, step: int, t: torch.Tensor) -> None:
        """Reduce ``t`` into the slot of ``(step, field)``: one kernel, no allocation after the first call."""
        buf = self._buf
        if buf is None or buf.device != t.device:
            buf = self._buf = torch.zeros((self.capacity, len(FIELDS)), dtype=torch.float32, device=t.device)
            self._used = 0
        i = min(max(step - self._base, 0), self.capacity - 1)
        x = t.detach()
        if i == self.capacity - 1:  # the folded last slot accumulates every later step
            buf[i, _COLUMN[field]] += x.sum(dtype=torch.float32)
        else:  # written straight into the slot: one kernel
            torch.sum(x, dim=list(range(x.ndim)), dtype=torch.float32 if x.dtype != torch.float32 else None,
                      out=buf[i, _COLUMN[field]])
        self._used = max(self._used, i + 1)

    @property
    def pending(self) -> bool:
        """Slots were written since the last drain."""
        return self._used > 0

    def drain(self) -> tuple[torch.Tensor, int] | None:
        """The used slots (a copy, on the device, for the audit's transfer) and the step of the first; the buffer
        is cleared for the next interval. None when no step wrote a slot."""
        if self._buf is None or not self._used:
            return None
        used = self._buf[:self._used].clone()
        self._buf[:self._used].zero_()
        self._used = 0
        return used.reshape(-1), self._base


def first_bad(values: Sequence[float], base: int) -> dict[str, int]:
    """Per field, the first step whose slot is non-finite (``values``: what :meth:`Sentinel.drain` returned,
    fetched; ``base``: its step)."""
    out: dict[str, int] = {}
    n = len(FIELDS)
    for row in range(len(values) // n):
        for col, name in enumerate(FIELDS):
            if name not in out and not math.isfinite(values[row * n + col]):
                out[name] = base + row
    return out


def floating(t: object) -> torch.Tensor | None:
    """``t`` when it is a non-empty floating tensor (the only kind that can hold NaN or Inf)."""
    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
        return t
    return None


