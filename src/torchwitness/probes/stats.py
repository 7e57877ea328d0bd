"""On-device statistics: each function launches a handful of kernels and returns a small tensor, never a number.

The results go into a :class:`~torchwitness.probes.transfer.Pack`; nothing here synchronises with the device.
"""

from __future__ import annotations

import torch

# Fingerprints are masked to 52 bits so they survive the float64 transfer exactly.
_MASK52 = (1 << 52) - 1
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_WEIGHTS: dict[tuple[int, torch.device], torch.Tensor] = {}
VALUE_FIELDS = ("min", "max", "mean", "std", "zeros")
UNIT_FIELDS = ("dead", "spread", "magnitude")


def value_stats(x: torch.Tensor) -> torch.Tensor:
    """``[min, max, mean, std, exact zeros]`` of a floating tensor; ``[min, max]`` of an integer one.

    Any NaN makes min/max/mean NaN and any infinity shows in min or max, so non-finite values need no extra
    kernel.
    """
    x = x.detach()
    if not x.is_floating_point():
        mn, mx = torch.aminmax(x)
        return torch.stack([mn, mx])
    if x.dtype in _LOW_PRECISION:
        x = x.float()
    mn, mx = torch.aminmax(x)
    std, mean = torch.std_mean(x, correction=0)
    zeros = (x == 0).sum().to(x.dtype)
    return torch.stack([mn, mx, mean, std, zeros])


def unit_axis(ndim: int) -> int:
    """Which axis holds the units: features for ``(B, F)`` and ``(B, T, D)``, channels for ``(B, C, H, W)``."""
    return 1 if ndim in (2, 4, 5) else ndim - 1


def unit_stats(x: torch.Tensor) -> torch.Tensor:
    """``[dead units, mean per-unit spread over the batch, mean magnitude]`` of a ``(B, ...)`` activation.

    A unit is dead when it is exactly zero for every sample (and position) of the batch.
    """
    x = x.detach()
    if x.dtype in _LOW_PRECISION or x.dtype == torch.float64:
        x = x.float()
    axis = unit_axis(x.ndim)
    dims = tuple(d for d in range(x.ndim) if d != axis)
    dead = (x.abs().amax(dim=dims) == 0).sum().to(x.dtype)
    rows = x.reshape(x.shape[0], -1)
    spread = rows.std(dim=0, correction=0).mean()
    return torch.stack([dead, spread, rows.abs().mean()])


def _weights(n: int, device: torch.device) -> torch.Tensor:
    key = (n, device)
    w = _WEIGHTS.get(key)
    if w is None:
        g = torch.Generator().manual_seed(0x7A17)
        w = (torch.randint(1, 2**31 - 1, (n,), generator=g, dtype=torch.int64) * 2 + 1).to(device)
        _WEIGHTS[key] = w
    return w


def row_fingerprints(x: torch.Tensor, max_rows: int = 1024, max_cols: int = 65536) -> torch.Tensor:
    """A 52-bit content fingerprint per sample (row), exact: integer arithmetic on the values' bit patterns."""
    x = x.detach()
    rows = x.reshape(x.shape[0], -1)[:max_rows, :max_cols] if x.ndim > 0 else x.reshape(1, 1)
    if rows.is_floating_point():
        bits = rows.float().contiguous().view(torch.int32).to(torch.int64)
    else:
        bits = rows.to(torch.int64)
    return (bits * _weights(bits.shape[1], bits.device)).sum(dim=1) & _MASK52


def class_histogram(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of each class ``0..C-1`` plus one last bin for ids outside that range (ignore indices included).

    ``scatter_add_`` instead of ``bincount``: bincount sizes its output from the data and so synchronises.
    """
    t = labels.detach().reshape(-1).to(torch.int64)
    valid = (t >= 0) & (t < num_classes)
    idx = torch.where(valid, t, torch.full_like(t, num_classes))
    hist = torch.zeros(num_classes + 1, dtype=torch.int64, device=t.device)
    return hist.scatter_add_(0, idx, torch.ones_like(idx))


def label_moments(x: torch.Tensor, y: torch.Tensor, max_cols: int = 256) -> torch.Tensor:
    """Sufficient statistics for feature/label correlations of a ``(B, F)`` batch and ``(B, C)`` label matrix.

    Returns ``[n, sum x (F), sum x^2 (F), sum y (C), sum y^2 (C), sum x*y (F*C)]`` flattened.
    """
    x = x.detach().reshape(x.shape[0], -1)[:, :max_cols].double()
    y = y.detach().double()
    n = torch.full((1,), float(x.shape[0]), dtype=torch.float64, device=x.device)
    return torch.cat([n, x.sum(0), (x * x).sum(0), y.sum(0), (y * y).sum(0), (x.T @ y).reshape(-1)])
