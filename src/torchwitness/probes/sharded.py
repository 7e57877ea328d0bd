"""Statistics of sharded tensors (FSDP2 ``fully_shard`` / DTensor) without gathering the full tensors.

Each rank reduces its local shard to a few partial sums on the device; ONE all_gather of those partial sums
(one small float64 vector per rank) gives every rank the statistics of the whole tensors. Replicated DTensors
(and plain tensors) count once, not once per rank.

>>> import torch
>>> local_view(torch.ones(3)).sum().item()
3.0
"""

from __future__ import annotations

from typing import Any

import torch

FIELDS = ("sumsq", "nonfinite", "max_abs", "numel")


def local_view(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this rank holds: a DTensor's local shard, else ``t`` itself."""
    local = getattr(t, "to_local", None)
    return local() if callable(local) and type(t).__name__ == "DTensor" else t


def is_sharded(t: torch.Tensor) -> bool:
    """True for a DTensor sharded on some mesh dimension (each rank holds a different part)."""
    placements = getattr(t, "placements", None)
    return placements is not None and any(p.is_shard() for p in placements)


def local_grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """This rank's L2 norm over ``grads`` as a float64 0-d tensor, on the device, no sync.

    Under DDP gradients are identical on every rank after the all-reduce, so this is the global norm; sharded
    gradients contribute their local shards only (use :func:`sharded_stats` for the global value).
    """
    local = [local_view(g).detach() for g in grads]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(local)).to(torch.float64))


def partial_sums(tensors: list[torch.Tensor], rank: int = 0) -> torch.Tensor:
    """``[len(tensors), 4]`` float64 on the device: per tensor ``sumsq, nonfinite, max_abs, numel`` of the local
    shard. A replicated tensor contributes from rank 0 only, so summing over ranks counts it once."""
    rows = []
    for t in tensors:
        v = local_view(t).detach()
        counts = rank == 0 or is_sharded(t)
        if not counts or v.numel() == 0:
            rows.append(torch.zeros(4, dtype=torch.float64, device=v.device))
            continue
        f = v.to(torch.float64)
        finite = torch.isfinite(f)
        rows.append(torch.stack([torch.where(finite, f, 0).pow(2).sum(), (~finite).sum().to(torch.float64),
                                 torch.where(finite, f.abs(), 0).max(),
                                 torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device)]))
    return torch.stack(rows) if rows else torch.zeros((0, 4), dtype=torch.float64)


def sharded_stats(tensors: list[torch.Tensor], *, group: Any = None) -> dict[str, list[float]]:
    """Global ``norm``, ``nonfinite`` count, ``max_abs`` and ``numel`` of each (possibly sharded) tensor.

    One collective: every rank's partial sums are all_gathered (sum for norms and counts, max for ``max_abs``).
    """
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    mine = partial_sums(tensors, rank)
    parts = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(parts, mine.contiguous(), group=group)
    allp = torch.stack(parts).cpu()  # one host transfer
    total = allp.sum(dim=0)
    return {"norm": total[:, 0].sqrt().tolist(), "nonfinite": total[:, 1].tolist(),
            "max_abs": allp[:, :, 2].amax(dim=0).tolist(), "numel": total[:, 3].tolist()}
