"""One device-to-host transfer per audited step.

Probes hand their on-device results to a :class:`Pack` under a name; :meth:`Pack.fetch` concatenates those on an
accelerator into one float64 tensor, moves it to the host once and splits it back into lists of Python numbers
(the rules read a few numbers each; numpy calls on such small arrays cost more than the arithmetic right after a
training step has evicted numpy's code from the CPU's caches). Tensors already on the CPU are read as they are.
Nothing in a probe ever calls ``.item()``, ``.tolist()``, ``bool(tensor)`` or ``.cpu()`` itself.

>>> import torch
>>> p = Pack()
>>> p.add("norm", torch.tensor(2.0)); p.add("hist", torch.tensor([3, 4]))
>>> p.fetch()
{'norm': [2.0], 'hist': [3, 4]}
"""

from __future__ import annotations

from typing import Any

import torch

_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


class Pack:
    """Named on-device tensors waiting for one batched transfer."""

    __slots__ = ("_names", "_sizes", "_tensors")

    def __init__(self) -> None:
        self._names: list[str] = []
        self._tensors: list[torch.Tensor] = []
        self._sizes: list[int] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        # Probes hand over results of detached arithmetic: skipping no-op detach/reshape calls saves ~25
        # dispatcher round trips per audited step.
        flat = tensor.detach() if tensor.requires_grad else tensor
        if flat.ndim != 1:
            flat = flat.reshape(-1)
        self._names.append(name)
        self._tensors.append(flat)
        self._sizes.append(flat.numel())

    def accumulate(self, name: str, tensor: torch.Tensor) -> None:
        """Add ``tensor`` (of the shape added under ``name`` before) to what ``name`` holds."""
        i = self._names.index(name)
        self._tensors[i] = self._tensors[i] + tensor.detach().reshape(-1)

    def __len__(self) -> int:
        return len(self._names)

    def fetch(self) -> dict[str, list[float]]:  # ints stay ints on the CPU; a float64 transfer gives floats
        """Move everything to the host in one copy per accelerator (one in practice) and empty the pack."""
        out: dict[str, list[float]] = {}
        groups: dict[Any, dict[torch.dtype, list[int]]] = {}
        for i, t in enumerate(self._tensors):
            if t.is_cpu:  # nothing to transfer: joining the tensors would only add copies
                out[self._names[i]] = cpu_list(t)
            else:
                groups.setdefault(t.device, {}).setdefault(t.dtype, []).append(i)
        for by_dtype in groups.values():
            order = [i for idx in by_dtype.values() for i in idx]
            values = to_host([[self._tensors[i] for i in idx] for idx in by_dtype.values()],
                             [self._sizes[i] for i in order])
            out.update(zip((self._names[i] for i in order), values, strict=True))
        self._names.clear()
        self._tensors.clear()
        self._sizes.clear()
        return out


def cpu_list(t: torch.Tensor) -> list[float]:
    if t.is_floating_point() and t.dtype not in _NUMPY_FLOATS:  # bfloat16, float8: no numpy dtype
        t = t.double()
    return t.numpy().tolist()


def to_host(groups: list[list[torch.Tensor]], sizes: list[int]) -> list[list[float]]:
    """The flat tensors of one device, grouped by dtype, moved to the host with one ``.cpu()`` and split again
    (``sizes``: their lengths in group order)."""
    # float64 holds every count and int64 fingerprint we pack (masked to 52 bits) exactly. Tensors are joined
    # per dtype before the one conversion: a cat that promotes each input costs twice as much.
    dtype = torch.float32 if groups[0][0].device.type == "mps" else torch.float64
    parts = [torch.cat(group).to(dtype) for group in groups]
    flat = (parts[0] if len(parts) == 1 else torch.cat(parts)).cpu().numpy().tolist()
    out, offset = [], 0
    for n in sizes:
        out.append(flat[offset:offset + n])
        offset += n
    return out
