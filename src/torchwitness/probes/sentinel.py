"""Always-on, sync-free sentinels: non-finite values on the steps between audits, named with their first step.

On every step that is not audited the watch hands a few tensors to :meth:`Sentinel.note`: the batch's first
floating input, a floating target and the prediction it is compared with (as the loss call receives them), and
the gradient of the first trainable tensor (a NaN or Inf anywhere upstream of the first layer spreads into it
through the matrix products of backward). Each costs one reduction, kept on the device: a sum is NaN or
infinite when any element is (or when the sum overflows float32, which only values far out of any sane scale
do). Nothing is read on the host until the next audit, which stacks the sums into its one batched transfer
(:meth:`Sentinel.drain`). The loss needs no sentinel: the watch keeps every step's loss (a detached reference)
for the same transfer.

>>> import torch
>>> s = Sentinel(capacity=8)
>>> s.note("input", 10, torch.ones(4)); s.note("input", 12, torch.tensor([1.0, float("nan")]))
>>> values, where = s.drain()
>>> first_bad(values.tolist(), where)
{'input': 12}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from torchwitness.probes.sharded import local_view

FIELDS = ("input", "target", "pred", "grad")


class Sentinel:
    """Per-step sums of the watched tensors for up to ``capacity`` steps between two audits; past that, each
    field's last sum accumulates the later steps (a fault is then dated at the first step of that tail)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(2, capacity)
        self._sums: list[torch.Tensor] = []
        self._where: list[tuple[str, int]] = []  # (field, step) of each sum
        self._last: dict[str, int] = {}  # field -> index of its latest sum

    def note(self, field: str, step: int, t: torch.Tensor) -> None:
        """Add ``t``'s sum for ``(field, step)``: one kernel (a 0-d tensor from the caching allocator on CUDA)."""
        if type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):  # a DTensor's shard (FSDP)
            t = local_view(t)
        if t.requires_grad:  # a detach costs as much as the sum: only when autograd would record it
            t = t.detach()
        total = t.sum() if t.dtype == torch.float32 else t.sum(dtype=torch.float32)
        if len(self._sums) >= self.capacity * len(FIELDS) and field in self._last:
            i = self._last[field]
            self._sums[i] = self._sums[i] + total
            return
        self._last[field] = len(self._sums)
        self._sums.append(total)
        self._where.append((field, step))

    @property
    def pending(self) -> bool:
        """Sums were noted since the last drain."""
        return bool(self._sums)

    def drain(self) -> tuple[torch.Tensor, list[tuple[str, int]]] | None:
        """The sums noted since the last drain, stacked on their device for the audit's transfer, and the
        ``(field, step)`` of each; None when nothing was noted."""
        taken = self.take()
        return None if taken is None else (torch.stack(taken[0]), taken[1])

    def take(self) -> tuple[list[torch.Tensor], list[tuple[str, int]]] | None:
        """As :meth:`drain`, the sums unstacked (for a caller that stacks them with its own)."""
        if not self._sums:
            return None
        taken = self._sums, self._where
        self._sums, self._where, self._last = [], [], {}
        return taken


def first_bad(values: Sequence[float], where: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Per field, the first step whose sum is non-finite (``values``: the sums :meth:`Sentinel.drain` stacked,
    fetched; ``where``: their fields and steps)."""
    out: dict[str, int] = {}
    for x, (field, step) in zip(values, where, strict=True):
        if not math.isfinite(x) and (field not in out or step < out[field]):
            out[field] = step
    return out


def floating(t: object) -> torch.Tensor | None:
    """``t`` when it is a non-empty floating tensor (the only kind that can hold NaN or Inf)."""
    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
        return t
    return None
