"""Always-on, sync-free sentinels: non-finite values on the steps between audits, named with their first step.

On every step that is not audited the watch hands a few tensors to :meth:`Sentinel.note`: the batch's first
floating input, a floating target and the prediction it is compared with (as the loss call receives them), and
the gradient of the first trainable tensor (a NaN or Inf anywhere upstream of the first layer spreads into it
through the matrix products of backward). Nothing is read on the host until the next audit, which stacks the
sums into its one batched transfer (:meth:`Sentinel.drain`). A sum is NaN or infinite when any element is (or
when it overflows float32, which only values far out of any sane scale reach). The loss needs no sentinel: the
watch keeps every step's loss (a detached reference) for the same transfer.

A new tensor is not summed when it is noted: a reference is held (with its version counter) until the audit
reduces all of them at once, while they hold at most ``HOLD_BYTES``. A kernel per tensor per step costs a small
model's step several percent; a reference costs nothing. Contents that change after they were noted could not
be judged that way, so a field whose tensors turn out to be reused in place (the same gradient tensor zeroed and
filled again, a buffer the loop copies each batch into) is summed when noted from then on: seen when the same
object comes again, or, at the audit, as a version counter that moved.

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


HOLD_BYTES = 16 << 20


class Sentinel:
    """Per-step sums of the watched tensors for up to ``capacity`` steps between two audits; past that, each
    field's last sum accumulates the later steps (a fault is then dated at the first step of that tail)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(2, capacity)
        self._sums: list[torch.Tensor] = []
        self._where: list[tuple[str, int]] = []  # (field, step) of each sum
        self._last: dict[str, int] = {}  # field -> index of its latest sum
        self._held: list[tuple[torch.Tensor, int, str, int]] = []  # (tensor, its version, field, step)
        self._held_bytes = 0
        self._seen: dict[str, torch.Tensor] = {}  # field -> the tensor last noted (compared by identity)
        self._in_place: set[str] = set()  # fields whose tensors are refilled in place: summed when noted

    def note(self, field: str, step: int, t: torch.Tensor) -> None:
        """Note ``t`` for ``(field, step)``: a held reference, or one kernel (see the module docstring)."""
        if type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter):  # a DTensor's shard (FSDP)
            t = local_view(t)
        if t.requires_grad:  # a detach costs as much as the sum: only when autograd would record it
            t = t.detach()
        seen = self._seen.get(field)
        self._seen[field] = t
        if seen is None or field in self._in_place or seen is t:
            if seen is t:
                self._in_place.add(field)
            self._add(field, step, t.sum() if t.dtype == torch.float32 else _sum32(t))
            return
        size = t.nbytes
        if self._held_bytes + size > HOLD_BYTES or len(self._held) >= self.capacity * len(FIELDS):
            self._add(field, step, t.sum() if t.dtype == torch.float32 else _sum32(t))
            return
        self._held.append((t, t._version, field, step))
        self._held_bytes += size

    def _add(self, field: str, step: int, total: torch.Tensor) -> None:
        if len(self._sums) >= self.capacity * len(FIELDS) and field in self._last:
            i = self._last[field]
            self._sums[i] = self._sums[i] + total
            return
        self._last[field] = len(self._sums)
        self._sums.append(total)
        self._where.append((field, step))

    def _reduce_held(self) -> list[torch.Tensor]:
        """Sum the held tensors, those of one shape and dtype in one kernel (stacked), skipping any whose
        contents changed since they were noted (and summing that field's tensors when noted from now on).
        Returns 1-D chunks of sums, their ``(field, step)`` appended to ``_where`` in the same order."""
        by_field: dict[str, list[tuple[torch.Tensor, str, int]]] = {}
        for t, version, field, step in self._held:
            if t._version != version:
                self._in_place.add(field)
                continue
            by_field.setdefault(field, []).append((t, field, step))
        self._held, self._held_bytes = [], 0
        chunks = []
        for group in by_field.values():
            try:  # one field's tensors nearly always share a shape and device (a short last batch aside)
                chunks.append(_sums_of(group))
            except RuntimeError:
                shapes: dict[tuple, list[tuple[torch.Tensor, str, int]]] = {}
                for item in group:
                    shapes.setdefault((item[0].shape, item[0].device), []).append(item)
                parts = list(shapes.values())
                chunks += [_sums_of(part) for part in parts]
                group = [item for part in parts for item in part]
            self._where.extend((field, step) for _, field, step in group)
        return chunks

    @property
    def pending(self) -> bool:
        """Tensors were noted since the last drain."""
        return bool(self._sums or self._held)

    def drain(self) -> tuple[torch.Tensor, list[tuple[str, int]]] | None:
        """The sums noted since the last drain, as one 1-D tensor on their device for the audit's transfer, and
        the ``(field, step)`` of each; None when nothing was noted."""
        taken = self.take()
        if taken is None:
            return None
        return (taken[0][0] if len(taken[0]) == 1 else torch.cat(taken[0])), taken[1]

    def take(self) -> tuple[list[torch.Tensor], list[tuple[str, int]]] | None:
        """As :meth:`drain`, the sums as 1-D chunks (for a caller that concatenates them with its own)."""
        if not self._sums and not self._held:
            return None
        chunks = [torch.stack(self._sums)] if self._sums else []
        chunks += self._reduce_held()
        taken = chunks, self._where
        self._sums, self._where, self._last = [], [], {}
        return taken if taken[1] else None


def _sum32(t: torch.Tensor) -> torch.Tensor:
    """The float32 sum of ``t``; of a complex tensor, of both parts (either one non-finite makes it so)."""
    return (torch.view_as_real(t) if t.is_complex() else t).sum(dtype=torch.float32)


def magnitude(t: torch.Tensor) -> torch.Tensor:
    """A loss as a real number: a complex one by its modulus (non-finite when either part is), not cast with a
    warning that drops its imaginary part."""
    return t.abs() if t.is_complex() else t


def _sums_of(group: list[tuple[torch.Tensor, str, int]]) -> torch.Tensor:
    """The float32 sum of each tensor of ``group`` (one shape and device), in one kernel on their stack."""
    stacked = torch.stack([t for t, _, _ in group])
    if stacked.is_complex():
        stacked = torch.view_as_real(stacked)
    return stacked.sum(dim=tuple(range(1, stacked.ndim)), dtype=torch.float32) if stacked.ndim > 1 \
        else stacked.float()


def first_bad(values: Sequence[float], where: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Per field, the first step whose sum is non-finite (``values``: the sums :meth:`Sentinel.drain` stacked,
    fetched; ``where``: their fields and steps)."""
    out: dict[str, int] = {}
    for x, (field, step) in zip(values, where, strict=True):
        if not math.isfinite(x) and (field not in out or step < out[field]):
            out[field] = step
    return out


def floating(t: object) -> torch.Tensor | None:
    """``t`` when it is a non-empty dense floating tensor (the only kind that can hold NaN or Inf; a sparse one
    is left alone)."""
    if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and t.layout == torch.strided:
        return t
    return None
