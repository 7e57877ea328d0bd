"""The ``train.audit`` records: one summary per audited step, batched.

Summaries are batched into one record per ``PER_RECORD`` audited steps: handing a record to the writer thread
costs a GIL round-trip, which every-step auditing of a small model would feel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchwitness.probes.view import StepView

PER_RECORD = 32


class AuditLog:
    """Collects audited steps' summaries and records them in batches through ``record`` (None: nothing kept)."""

    def __init__(self, record: Callable[[str, Any, int | None], Any] | None) -> None:
        self._record = record
        self._steps: list[dict[str, Any]] = []

    def lean(self, step: int, loss: float | None, grad_norm: float | None) -> None:
        """A lean audited step: its loss and total gradient norm."""
        self._add({"step": step, "forwards": 1, "loss": loss, "grad_norm": grad_norm, "max_update_ratio": None})

    def full(self, view: StepView) -> None:
        """An audited step judged from a window: its loss, gradient norm and largest update ratio."""
        if self._record is None:
            return
        norms = [p.grad_norm for p in view.params if p.has_grad]
        ratios = [p.update_ratio for p in view.params if p.update_ratio is not None and len(p.shape) >= 2]
        self._add({"step": view.step, "forwards": view.forwards, "loss": view.loss.value if view.loss else None,
                   "grad_norm": sum(n * n for n in norms) ** 0.5 if norms else None,
                   "max_update_ratio": max(ratios) if ratios else None})

    def _add(self, summary: dict[str, Any]) -> None:
        if self._record is not None:
            self._steps.append(summary)
            if len(self._steps) >= PER_RECORD:
                self.flush()

    def flush(self) -> None:
        if self._steps and self._record is not None:
            self._record("train.audit", {"steps": self._steps}, self._steps[-1]["step"])
        self._steps = []
