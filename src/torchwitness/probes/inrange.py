"""Probes for data that lies in range and is still wrong: token ids piled onto one id or folded, image batches
scrambled by a reshape, blank samples, and the same batch fed at every step.

The on-device functions return a small tensor for the audit's transfer (no sync); :class:`SameInput` is
host bookkeeping of the first input's identity, a few attribute reads per step and no kernel.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

import torch

FOLD_BINS = 32
_BINS: dict[tuple[int, torch.device], torch.Tensor] = {}


def _bin_of_id(vocab: int, device: torch.device) -> torch.Tensor:
    key = (vocab, device)
    b = _BINS.get(key)
    if b is None:
        b = _BINS[key] = (torch.arange(vocab) * FOLD_BINS // vocab).to(device)
    return b


# Tables that look ids up: their inputs are token ids (TW211, TW212), their weights rows of a vocabulary.
EMBEDDINGS = (torch.nn.Embedding, torch.nn.EmbeddingBag)


def token_probe(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """``[top count, second count, top id, runs, rows, ends, busiest column, numel, hist (32 bins)...]``.

    The top id's count against the runner-up's says whether ids pile onto one id (a clamp, an unknown-token
    fallback); its runs along the rows, the rows holding it and those where it touches an end tell padding (one
    run per row, at an end) apart from a pile, and its busiest column tells fixed-position tokens (BOS, CLS).
    The 32-bin histogram over the table, summed over audits, shows a fold (ids wrapped into the table) as a step
    in density.
    """
    flat = ids.detach().reshape(-1).long().clamp(0, vocab - 1)  # ids outside the table are TW211's
    counts = torch.zeros(vocab, dtype=torch.float32, device=flat.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.float32))
    top = counts.topk(min(2, vocab))
    values = top.values if vocab >= 2 else torch.cat([top.values, top.values.new_zeros(1)])
    mask = ids.detach() == top.indices[0]
    if mask.ndim >= 2:
        m = mask.reshape(-1, mask.shape[-1])
        runs = (m[:, 1:] & ~m[:, :-1]).sum() + m[:, 0].sum()  # runs of the top id along the rows
        rows = m.any(1).sum()
        ends = (m[:, 0] | m[:, -1]).sum()  # rows where it touches the first or last position
        column = m.sum(0).amax()
    else:
        runs = rows = ends = column = mask.new_zeros((), dtype=torch.int64)
    hist = torch.zeros(FOLD_BINS, dtype=torch.float32, device=flat.device)
    hist.scatter_add_(0, _bin_of_id(vocab, flat.device), counts)
    head = torch.stack([values[0], values[1], top.indices[0].float(), runs.float(), rows.float(), ends.float(),
                        column.float(), counts.new_full((), float(flat.numel()))])  # a fill: no host copy
    return torch.cat([head, hist])


def neighbour_probe(x: torch.Tensor, max_rows: int = 16) -> torch.Tensor:
    """``[r1, rC, rV]`` for an ``(N, C, H, W)`` batch: the mean correlation of each pixel with its right
    neighbour, with the pixel ``C`` to its right, and with the pixel below, per sample and channel.

    A batch of ``(N, H, W, C)`` images reshaped (not permuted) to ``(N, C, H, W)`` interleaves the channels
    along each row: the pixel ``C`` to the right is the same channel of the next true pixel (``rC > r1`` when
    channels differ), and the pixel below is a third of a true row away (``rV`` collapses).
    """
    s = x.detach()[:max_rows].float()
    c = s.shape[1]
    z = s - s.mean(dim=(2, 3), keepdim=True)
    z = z / (z.square().mean(dim=(2, 3), keepdim=True).sqrt() + 1e-6)  # a flat channel is all zeros
    return torch.stack([(z[..., :-1] * z[..., 1:]).mean(), (z[..., :-c] * z[..., c:]).mean(),
                        (z[:, :, :-1] * z[:, :, 1:]).mean()])


def max_row_range(x: torch.Tensor) -> torch.Tensor:
    """The largest ``max - min`` within one sample (within one channel of one image, for ``(N, C, H, W)``
    images of 16 pixels or more: a flat fill of colour is as blank as a flat grey): 0 when every sample is
    blank."""
    per_channel = x.ndim == 4 and x.shape[2] * x.shape[3] >= 16  # not (N, C, 1, 1) features
    rows = x.detach().reshape(x.shape[0] * (x.shape[1] if per_channel else 1), -1)
    lo, hi = torch.aminmax(rows.float() if rows.dtype != torch.float32 else rows, dim=1)
    return (hi - lo).amax().reshape(1)


class SameInput:
    """How many consecutive training steps fed the very same input (same memory, unchanged since), counted on
    the host from the pointer, version counter and shape of the first tensor handed to the model, and from the
    tensor that owns that memory (the tensor itself, or the base of a view such as ``X[:64]``) being the same
    live object: a new batch often lands where the previous, freed one was, with a fresh version counter."""

    __slots__ = ("first", "key", "longest", "owner", "rows", "run", "storage_rows", "tensor_rows")

    def __init__(self) -> None:
        self.key: tuple[int, int, tuple[int, ...]] | None = None
        self.owner: weakref.ref | None = None  # a weak reference: holding the batch would change allocation
        self.run = 0  # consecutive repeats so far
        self.first = 0  # the step of the first of them
        self.longest = (0, 0)  # (repeats, first step) of the longest run
        self.rows = 0
        self.storage_rows = 0

    def holds(self, t: torch.Tensor) -> bool:
        """``t`` is the last training input, unchanged: a batch given to the model again right after its step (a
        training metric, such as the accuracy of the batch just trained on), not evaluation data."""
        owner = t._base if t._base is not None else t
        return self.owner is not None and self.owner() is owner and self.key == (t.data_ptr(), t._version, t.shape)

    def see(self, step: int, t: torch.Tensor) -> bool:
        """Note the step's first input; True when it is the very tensor of the step before, unchanged."""
        key = (t.data_ptr(), t._version, t.shape)
        owner = t._base if t._base is not None else t
        if key != self.key or self.owner is None or self.owner() is not owner:
            self.key, self.run, self.first = key, 0, step
            try:
                self.owner = weakref.ref(owner)
            except TypeError:  # a tensor subclass without weak references: judged by the key alone
                self.owner = lambda: owner
            return False
        self.run += 1
        if self.run > self.longest[0]:
            if self.longest[0] < 4 <= self.run or self.first != self.longest[1]:  # once per long run
                self.rows = t.shape[0] if t.ndim else 0
                # A fixed slice of a bigger tensor (X[:64]): the storage holds more rows than are fed. Counted in
                # elements, not by the row stride: a column-major table (pandas' to_numpy()) has a row stride of 1.
                size = t.numel() * t.element_size()
                self.storage_rows = self.rows * t.untyped_storage().nbytes() // size if size else self.rows
            self.longest = (self.run, self.first)
        return True


def held_in_frames(kind: type, max_frames: int = 64) -> list[Any]:
    """The objects of ``kind`` the training code holds: bound to a name in the frames on the call stack (the
    loop's locals and its module's globals), directly or in a list, tuple or dict there. A look at a few dozen
    names, where a scan of the whole heap took ~85 ms."""
    out: dict[int, Any] = {}
    seen: set[int] = set()
    frame = sys._getframe(1)
    for _ in range(max_frames):
        if frame is None:
            break
        for scope in (frame.f_locals, frame.f_globals):
            if id(scope) in seen:
                continue
            seen.add(id(scope))
            for o in list(scope.values()):
                items = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else (o,)
                for item in list(items)[:64]:
                    if issubclass(type(item), kind):
                        out[id(item)] = item
        frame = frame.f_back
    return list(out.values())


def loader_batch_sizes(max_frames: int = 64) -> set[tuple[int, int]]:
    """``(batch_size, dataset length)`` of the DataLoaders the training code holds (see :func:`held_in_frames`)."""
    from torch.utils.data import DataLoader

    out: set[tuple[int, int]] = set()
    for o in held_in_frames(DataLoader, max_frames):
        if o.batch_size:
            try:
                out.add((int(o.batch_size), len(o.dataset)))  # type: ignore[arg-type]
            except TypeError:  # an iterable dataset has no length
                continue
    return out
