"""Cross-rank signals for the watch under ``torch.distributed`` (DDP and friends).

On each audited step every rank adds two on-device checksums to the step's transfer pack (so there is still one
device-to-host copy), then the ranks exchange one small float64 row each with a single ``all_gather``:

==========  ====================================================================================================
column      meaning
==========  ====================================================================================================
step        the watch's step counter
batch       a 52-bit fingerprint of the batch's row fingerprints (NaN when no input was seen)
nonfinite   NaN/Inf in this rank's own inputs or loss (gradients are shared after the all-reduce, so they
            cannot say where a NaN came from)
grad_norm   global gradient norm after the optimizer's all-reduce
params      sum of the per-tensor norms of the trainable parameters (identical on every rank under DDP)
buffers     the same over floating-point buffers (BatchNorm running statistics)
==========  ====================================================================================================

Every rank takes part in every exchange at the same point, because audited steps are a function of the step
counter, which DDP keeps in lockstep. Step counts are not exchanged at close (a rank that stepped more than its
peers would wait for them forever); each rank records ``train.steps`` and the shards are compared afterwards
(:func:`torchwitness.rules.training.distributed.uneven_steps`). Ranks fed uneven inputs through ``Join`` are not
in lockstep: don't watch those with the cross-rank probe. ``collectives`` counts what the watch added.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch

from torchwitness.probes.sharded import is_sharded, local_view

COLUMNS = ("step", "batch", "nonfinite", "grad_norm", "params", "buffers")


def _active() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class CrossRank:
    """Created by the watch only when a process group with more than one rank is initialised."""

    def __init__(self, model: torch.nn.Module) -> None:
        dist = torch.distributed
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")
        # Sharded (FSDP2/DTensor) state differs across ranks by design: only replicated tensors are compared, by
        # their local values, so no checksum hides a collective (see probes/sharded.py for sharded statistics).
        self._params = [local_view(p) for p in model.parameters() if p.requires_grad and not is_sharded(p)]
        self._buffers = [local_view(b) for b in model.buffers() if b.is_floating_point() and not is_sharded(b)]
        self.collectives = 0

    @classmethod
    def create(cls, model: torch.nn.Module) -> CrossRank | None:
        return cls(model) if _active() else None

    def pack(self, pack: Any) -> None:
        """Add the parameter and buffer checksums to this audited step's transfer pack."""
        for name, tensors in (("dist/params", self._params), ("dist/buffers", self._buffers)):
            if tensors:
                pack.add(name, torch.stack(torch._foreach_norm([t.detach() for t in tensors])).double().sum())

    def exchange(self, step: int, data: dict[str, list[float]], params: list[Any], loss_value: float | None,
                 inputs_nonfinite: bool) -> np.ndarray:
        """One ``all_gather`` of this rank's row; returns the ``[world, len(COLUMNS)]`` matrix."""
        rows = data.get("rows")
        batch = float("nan")
        if rows is not None and len(rows):
            digest = hashlib.sha256(np.array(sorted(map(int, rows)), dtype=np.int64).tobytes()).digest()
            batch = float(int.from_bytes(digest[:8], "big") >> 12)  # 52 bits: exact in float64
        norms = [p.grad_norm for p in params if p.has_grad]
        nonfinite = int(inputs_nonfinite) + int(loss_value is not None and not math.isfinite(loss_value))
        finite = [n for n in norms if math.isfinite(n)]
        row = [float(step), batch, float(nonfinite), math.sqrt(sum(n * n for n in finite)) if finite else 0.0,
               float(data["dist/params"][0]) if "dist/params" in data else 0.0,
               float(data["dist/buffers"][0]) if "dist/buffers" in data else 0.0]
        return self._gather(row)

    def _gather(self, row: list[float]) -> np.ndarray:
        mine = torch.tensor(row, dtype=torch.float64, device=self._device)
        out = [torch.empty_like(mine) for _ in range(self.world)]
        torch.distributed.all_gather(out, mine)
        self.collectives += 1
        return torch.stack(out).cpu().numpy()
