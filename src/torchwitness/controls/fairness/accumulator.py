"""``FairnessAccumulator``: per-group confusion counts accumulated on the model's device, synced once per epoch."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from torchwitness.controls.fairness.groups import GroupEncoder
from torchwitness.controls.fairness.report import FairnessEval, evaluate
from torchwitness.errors import InputError


class FairnessAccumulator:
    """Streaming (group x label x prediction) counts for one or several sensitive attributes.

    ``update`` is a handful of device kernels and never waits for the device; ``compute`` moves the counts to
    the host once. State is one int64 tensor, reduced by sum across ranks (torchmetrics' ``add_state`` contract).

    Example::

        enc = GroupEncoder.fit(split.sensitive)
        acc = FairnessAccumulator(enc)
        for x, y, codes in loader:              # codes = enc.encode(...) carried beside the batch
            acc.update(model(x).argmax(1), y, codes)
        result = acc.compute(epoch=0)           # a FairnessEval, ready for run.record("fairness.eval", ...)
        acc.reset()
    """

    reductions: ClassVar[dict[str, str]] = {"counts": "sum"}

    def __init__(self, encoder: GroupEncoder, *, min_group_size: int = 30, reps: int = 1000,
                 confidence: float = 0.95, seed: int = 0, device: torch.device | str | None = None) -> None:
        self.encoder = encoder
        self.min_group_size = min_group_size
        self.reps = reps
        self.confidence = confidence
        self.seed = seed
        self._radix = [int(r) for r in np.cumprod((1, *encoder.shape[::-1]))[-2::-1]]
        self._cells = int(np.prod(encoder.shape)) * 4
        self.counts = torch.zeros(self._cells, dtype=torch.int64, device=device)

    def _to(self, device: torch.device) -> None:
        if self.counts.device != device:
            self.counts = self.counts.to(device)

    def update(self, preds: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> None:
        """Add a batch: hard predictions (or ``[n, 2]`` scores, arg-maxed) and labels in {0, 1}.

        ``groups`` is either the ``[n]`` intersectional index (``encoder.flat(codes)``, computed once when the
        data are prepared: the cheapest form) or the ``[n, A]`` per-attribute codes.
        """
        if preds.ndim == 2:
            preds = preds.argmax(1)
        device = preds.device
        self._to(device)
        groups = groups.to(device, non_blocking=True)
        if groups.ndim == 2 and groups.shape[1] == len(self.encoder.shape):
            idx = groups[:, 0].long() * self._radix[0]
            for a in range(1, groups.shape[1]):
                idx.add_(groups[:, a], alpha=self._radix[a])
        elif groups.ndim == 1:
            idx = groups.long()
        else:
            raise InputError(f"groups must be [n] or [n, {len(self.encoder.shape)}], got {tuple(groups.shape)}")
        # in-place: one temporary for the whole batch, which keeps the pass near a bare bincount
        idx = idx * 4
        idx.add_(target.to(device, non_blocking=True), alpha=2).add_(preds.long())
        if device.type == "cpu":
            self.counts += torch.bincount(idx, minlength=self._cells)
        else:
            # CUDA bincount reads the maximum back to size its output (a sync); index_add_ does not
            self.counts.index_add_(0, idx, torch.ones_like(idx))

    def _reduced(self) -> torch.Tensor:
        import torch.distributed as dist

        counts = self.counts
        if dist.is_available() and dist.is_initialized():
            counts = counts.clone()
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts

    def compute(self, *, epoch: int | None = None, split: str = "eval") -> FairnessEval:
        """One device-to-host copy, then the metrics, disparities and bootstrap intervals on the host."""
        counts = self._reduced().cpu().numpy().reshape(*self.encoder.shape, 2, 2)
        return evaluate(counts, self.encoder, min_group_size=self.min_group_size, reps=self.reps,
                        confidence=self.confidence, seed=self.seed, epoch=epoch, split=split)

    def reset(self) -> None:
        self.counts.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"counts": self.counts.detach().clone(), "categories": self.encoder.categories}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if {k: tuple(v) for k, v in state["categories"].items()} != self.encoder.categories:
            raise InputError("fairness state was accumulated over different sensitive categories")
        self.counts = state["counts"].to(self.counts.device, dtype=torch.int64).clone()
