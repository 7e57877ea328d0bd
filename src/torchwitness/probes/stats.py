"""On-device statistics: each function launches a handful of kernels and returns a small tensor, never a number.

The results go into a :class:`~torchwitness.probes.transfer.Pack`; nothing here synchronises with the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Fingerprints are masked to 52 bits so they survive the float64 transfer exactly.
_MASK52 = (1 << 52) - 1
_LOW_PRECISION = (torch.float16, torch.bfloat16)
_WEIGHTS: dict[tuple[int, torch.device], torch.Tensor] = {}
_SEGMENTS: dict[tuple[tuple[int, ...], torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
VALUE_FIELDS = ("min", "max", "mean", "std")
ACTIVATION_FIELDS = ("max_abs", "dead", "spread", "magnitude")


def value_stats(x: torch.Tensor, *, bounds: bool = False) -> torch.Tensor:
    """``[min, max, mean, L2 norm]`` of a floating tensor; ``[min, max]`` of an integer one (or when ``bounds``).

    Any NaN makes min/max/mean NaN and any infinity shows in min or max, so non-finite values need no extra
    kernel. The host, which knows the element count, turns the norm into the standard deviation
    (:func:`std_from_norm`).
    """
    x = x.detach()
    if bounds or not x.is_floating_point():
        return torch.stack(torch.aminmax(x))
    if x.dtype in _LOW_PRECISION:
        x = x.float()
    mn, mx = torch.aminmax(x)
    # Two moments from one reduction each (no squared copy), instead of torch.std_mean, whose CPU kernel is an
    # order of magnitude slower; the std is for reporting (flatness is judged exactly, by min == max).
    return torch.stack([mn, mx, x.mean(), torch.linalg.vector_norm(x)])


def std_from_norm(mean: float, norm: float, n: int) -> float:
    """The population standard deviation of ``n`` values from their mean and L2 norm."""
    rms = norm / math.sqrt(max(n, 1))
    return math.sqrt(max(rms * rms - mean * mean, 0.0)) if math.isfinite(rms) else rms


def unit_axis(ndim: int, channels_first: bool = False) -> int:
    """Which axis holds the units: features for ``(B, F)`` and ``(B, T, D)``, channels for ``(B, C, H, W)``,
    ``(B, C, D, H, W)`` and, with ``channels_first`` (a 1-D convolution's output), ``(B, C, L)``."""
    return 1 if ndim in (2, 4, 5) or (ndim == 3 and channels_first) else ndim - 1


def _unit_rows(x: torch.Tensor, max_rows: int,
               channels_first: bool = False) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
    """A ``(k, units)`` view of the first ``max_rows`` samples; positions (pixels, tokens) reduced first along
    contiguous memory into (mean x, mean |x|), because reductions across the batch axis are slow."""
    sample = x.detach()[:max_rows]
    if sample.dtype != torch.float32:
        sample = sample.float()
    if sample.ndim == 2:
        return sample
    if unit_axis(sample.ndim, channels_first) == 1:
        sample, axis = sample.flatten(2), 2
    else:
        sample, axis = sample.flatten(1, -2), 1
    return sample.mean(dim=axis), sample.abs().mean(dim=axis)


def activation_summary(acts: list[torch.Tensor], max_rows: int = 16, units: bool = True,
                       channels_first: Sequence[bool] = ()) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Statistics of many modules' outputs in a few batched kernels.

    Returns the bounds of every activation, ``[min of each, then max of each]`` (NaN when it holds one; turn
    them into peaks ``|x|`` with :func:`peaks`), and for the batched ones (``ndim >= 2``, at least two samples)
    a ``(3, m)`` tensor of ``[dead units, spread, magnitude]`` over the first ``max_rows`` samples (``None``
    with ``units=False``). A unit is dead when it is exactly zero for every sampled row and position
    (equivalently, its mean ``|x|`` is zero); spread is the mean absolute deviation of the per-sample unit
    values across samples; magnitude the mean ``|x|``. ``channels_first[i]`` marks a 3-D activation laid out
    ``(B, C, L)`` (a 1-D convolution's) rather than ``(B, T, D)``.
    """
    # aminmax per tensor: _foreach_norm(ord=inf) takes a slow path on CPU, and a sum could overflow. The peaks
    # are taken on the host from the bounds: one stack here instead of two, a negation and a maximum.
    lows, highs = zip(*(torch.aminmax(a.detach()) for a in acts), strict=True)
    bounds = torch.stack(lows + highs)  # mixed float dtypes promote
    flags = list(channels_first) + [False] * (len(acts) - len(channels_first))
    batched = [(a, cf) for a, cf in zip(acts, flags, strict=True) if a.ndim >= 2 and a.shape[0] >= 2] if units else []
    if not batched:
        return bounds, None
    k = min(a.shape[0] for a, _ in batched)
    rows = [_unit_rows(a, min(k, max_rows), cf) for a, cf in batched]
    sizes = [(r if isinstance(r, torch.Tensor) else r[0]).shape[1] for r in rows]
    if all(isinstance(r, torch.Tensor) for r in rows):  # all (B, F): the samples are the statistics' inputs
        mean = torch.cat(rows, dim=1)
        mag = mean.abs()
    else:  # positions reduced per module first; 2-D outputs contribute their raw samples to both
        mean, mag = (torch.cat([r if isinstance(r, torch.Tensor) else r[i] for r in rows], dim=1) for i in range(2))
        mag = mag.abs()  # a no-op on the reduced (non-negative) columns
    magnitude = mag.mean(dim=0)
    per_unit = torch.stack([magnitude.eq(0).to(magnitude.dtype), (mean - mean.mean(dim=0)).abs().mean(dim=0),
                            magnitude])
    lengths, scale = _segments(tuple(sizes), per_unit.device)
    # unsafe: the lengths are ours and sum to the row length; the check would read them on the host (a sync).
    return bounds, torch.segment_reduce(per_unit, "sum", lengths=lengths, axis=1, unsafe=True) * scale


def peaks(bounds: Sequence[float]) -> list[float]:
    """Peak ``|x|`` of each activation from the bounds :func:`activation_summary` returned (NaN stays NaN)."""
    n = len(bounds) // 2
    return [math.nan if math.isnan(lo) or math.isnan(hi) else max(-lo, hi)
            for lo, hi in zip(bounds[:n], bounds[n:], strict=True)]


def _segments(sizes: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment lengths and per-row scales (count, mean, mean) for :func:`activation_summary`, built once per
    layout and device: creating them from host lists at every audited step would be a host-to-device copy."""
    key = (sizes, device)
    seg = _SEGMENTS.get(key)
    if seg is None:
        inv = torch.tensor([1.0 / s for s in sizes])
        scale = torch.stack([torch.ones(len(sizes)), inv, inv])
        seg = _SEGMENTS[key] = (torch.tensor(sizes).expand(3, len(sizes)).contiguous().to(device), scale.to(device))
    return seg


def _weights(n: int, device: torch.device) -> torch.Tensor:
    key = (n, device)
    w = _WEIGHTS.get(key)
    if w is None:
        g = torch.Generator().manual_seed(0x7A17)
        w = (torch.randint(-(2**63), 2**63 - 1, (n,), generator=g, dtype=torch.int64) | 1).to(device)
        _WEIGHTS[key] = w
    return w


def row_fingerprints(x: torch.Tensor, max_rows: int = 1024, max_cols: int = 65536) -> torch.Tensor:
    """A 52-bit content fingerprint per sample (row), exact: integer arithmetic on the values' bit patterns.

    Each row's words are multiplied by fixed random odd 64-bit weights and summed, wrapping modulo 2**64 (two's
    complement, as on every torch backend); the high 52 bits are kept, since they depend on every input bit. Two
    different rows share a fingerprint only by chance (about 2**-52 per pair over the random weights; a
    single-value change shifts the sum by a non-zero multiple of an odd weight). float32 rows with an even width
    are read as int64 words of two values each: half the multiplications and no widening copy.
    """
    x = torch.view_as_real(x.detach()) if x.is_complex() else x.detach()  # a complex value's bits: both parts
    rows = x.reshape(x.shape[0], -1)[:max_rows, :max_cols] if x.ndim > 0 else x.reshape(1, 1)
    if rows.dtype == torch.float32 and rows.shape[1] % 2 == 0:
        rows = rows.contiguous()
        if rows.storage_offset() % 2:  # int64 words must start on a pair of values
            rows = rows.clone()
        words = rows.view(torch.int64)
    elif rows.is_floating_point():
        words = rows.float().contiguous().view(torch.int32).to(torch.int64)
    else:
        words = rows.to(torch.int64)
    w = _weights(words.shape[1], words.device)
    # On the CPU a matrix-vector product leaves no batch-sized temporary; CUDA has no integer mv.
    sums = torch.mv(words, w) if words.is_cpu else (words * w).sum(dim=1)
    return (sums >> 12) & _MASK52


def class_histogram(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of each class ``0..C-1``; ids outside that range (ignore indices included) are not counted, so the
    caller, who knows how many labels it passed, gets them as the remainder.

    Never ``bincount``: it sizes its output from the data and so synchronises. On the CPU ``histc`` (two kernels;
    labels are exact in float32 up to 2**24, far beyond the 4,096-class heads this is used for); elsewhere
    ``scatter_add_``, because CUDA's ``histc`` has no deterministic implementation and would fail under
    ``torch.use_deterministic_algorithms(True)``.
    """
    t = labels.detach().reshape(-1)
    if t.is_cpu:
        return torch.histc(t.float(), bins=num_classes, min=-0.5, max=num_classes - 0.5)
    return scatter_histogram(t, num_classes)


def scatter_histogram(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """:func:`class_histogram` by ``scatter_add_`` (any device)."""
    t = labels.to(torch.int64)
    idx = torch.where((t >= 0) & (t < num_classes), t, num_classes)
    hist = torch.zeros(num_classes + 1, dtype=torch.int64, device=t.device)
    return hist.scatter_add_(0, idx, torch.ones_like(idx))[:num_classes]


def label_moments(x: torch.Tensor, y: torch.Tensor, max_cols: int = 256) -> torch.Tensor:
    """Sufficient statistics for feature/label correlations of a ``(B, F)`` batch and ``(B, C)`` label matrix.

    Returns ``[n, sum x (F), sum x^2 (F), sum y (C), sum y^2 (C), sum x*y (F*C)]`` flattened.
    """
    x = x.detach().reshape(x.shape[0], -1)[:, :max_cols].double()
    y = y.detach().double()
    n = torch.full((1,), float(x.shape[0]), dtype=torch.float64, device=x.device)
    return torch.cat([n, x.sum(0), (x * x).sum(0), y.sum(0), (y * y).sum(0), (x.T @ y).reshape(-1)])


# update-to-weight ratios are estimated on the first SNAPSHOT elements of each tensor an optimizer step moves
SNAPSHOT = 8192


class ParamHeads:
    """The first ``SNAPSHOT`` elements of each parameter an optimizer step moves: live views, and buffers the
    step's starting values are copied into, both kept across audited steps (a parameter is updated in place, so
    its view stays valid until its storage is replaced). One ``_foreach_copy_`` then takes the snapshot,
    instead of four dispatcher calls per tensor."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = {}
        self._frozen: dict[int, torch.Tensor] = {}  # frozen tensors with a twin, as the last call to toward saw them

    def snapshot(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(live views, copies of their values now)``."""
        cache: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = {}
        for p in params:
            ptr = p.data_ptr()
            entry = self._cache.get(id(p))
            if entry is None or entry[0] != ptr or entry[1].dtype != p.dtype or entry[1].numel() != min(
                    p.numel(), SNAPSHOT):
                view = p.detach().reshape(-1)[:SNAPSHOT]
                entry = (ptr, view, torch.empty_like(view))
            cache[id(p)] = entry
        self._cache = cache  # only the tensors of this step: replaced parameters are let go
        views = [cache[id(p)][1] for p in params]
        copies = [cache[id(p)][2] for p in params]
        torch._foreach_copy_(copies, views)
        return views, copies

    def toward(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Per ``(frozen tensor, its trained twin)``, the cosine between the frozen tensor's move since the last
        call and the way from where it was to its twin now (NaN on its first call): near 1 for an EMA teacher
        moved towards its student (probes/update.py: twins)."""
        before, out = {}, []
        for f, s in pairs:
            now = f.detach().reshape(-1)[:SNAPSHOT]
            prev = self._frozen.get(id(f))
            if prev is None or prev.shape != now.shape:
                out.append(torch.full((), math.nan, device=now.device))
            else:
                move, way = (now - prev).float(), (s.detach().reshape(-1)[:SNAPSHOT] - prev).float()
                out.append(torch.dot(move, way) / (move.norm() * way.norm()).clamp(min=1e-30))
            before[id(f)] = now.clone()
        self._frozen = before  # only this call's tensors: replaced or unfrozen ones are let go
        return torch.stack(out)
