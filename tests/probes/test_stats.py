"""On-device statistics against naive reference implementations."""

from __future__ import annotations

import math

import torch

from torchwitness.probes import stats
from torchwitness.probes.transfer import Pack, to_host


def _naive_units(x: torch.Tensor, k: int) -> list[float]:
    s = x[:k].float()
    if s.ndim == 2:
        per = s
        peak = s.abs()
        mag = s.abs()
    elif stats.unit_axis(s.ndim) == 1:
        flat = s.flatten(2)
        per, peak, mag = flat.mean(2), flat.abs().amax(2), flat.abs().mean(2)
    else:
        per, peak, mag = s.mean(1), s.abs().amax(1), s.abs().mean(1)
    dead = sum(1 for u in range(per.shape[1]) if float(peak[:, u].max()) == 0.0)
    spread = float((per - per.mean(0)).abs().mean())
    return [float(dead), spread, float(mag.mean())]


def test_activation_summary_matches_naive() -> None:
    torch.manual_seed(0)
    acts = [torch.relu(torch.randn(20, 12) - 1.5), torch.randn(20, 4, 5, 5), torch.randn(20, 7, 6),
            torch.randn(3)]
    acts[1][:, :2] = 0  # two dead channels
    acts[0][:, 3] = 0
    bounds, units = stats.activation_summary(acts, max_rows=16)
    assert stats.peaks(bounds.tolist()) == [float(a.abs().max()) for a in acts]
    got = units.T.tolist()
    for a, g in zip(acts[:3], got, strict=True):
        want = _naive_units(a, 16)
        assert g[0] == want[0]
        assert abs(g[1] - want[1]) < 1e-5 and abs(g[2] - want[2]) < 1e-5


def test_nonfinite_shows_in_peak() -> None:
    x = torch.randn(8, 4)
    x[3, 1] = float("nan")
    bounds, _ = stats.activation_summary([x, torch.full((4, 2), float("inf")), torch.full((2,), -float("inf"))])
    peaks = stats.peaks(bounds.tolist())
    assert math.isnan(peaks[0]) and peaks[1] == peaks[2] == math.inf


def test_fingerprints_exact_and_order_free_across_batches() -> None:
    x = torch.randn(10, 3, 4)
    fp_all = stats.row_fingerprints(x).tolist()
    fp_part = stats.row_fingerprints(x[5:]).tolist()
    assert fp_all[5:] == fp_part
    odd = torch.cat([torch.zeros(1), x.reshape(-1)])[1:].view(10, 3, 4)  # storage offset 1: not int64-aligned
    assert stats.row_fingerprints(odd).tolist() == fp_all
    assert len(set(fp_all)) == 10
    y = x.clone()
    y[2, 0, 0] += 1e-6
    assert stats.row_fingerprints(y).tolist()[2] != fp_all[2]


def test_fingerprints_see_every_single_value_change() -> None:
    """Sign, exponent and mantissa changes in either value of a packed pair, in odd widths, and in integers."""
    torch.manual_seed(1)
    ints = torch.randint(1, 50, (6, 9))  # no 0: -0 and 2 * 0 change nothing
    for x in (torch.randn(6, 8), torch.randn(6, 7), torch.randn(6, 8).half(), ints):
        base = stats.row_fingerprints(x).tolist()
        assert len(set(base)) == 6 and all(0 <= f < 2**52 for f in base)
        for col in range(x.shape[1]):
            for change in ((lambda v: -v), (lambda v: v * 2), (lambda v: v + 1)):
                y = x.clone()
                y[3, col] = change(y[3, col])
                got = stats.row_fingerprints(y).tolist()
                assert got[3] != base[3] and got[:3] == base[:3], (x.dtype, col)


def test_class_histogram_matches_bincount() -> None:
    y = torch.randint(-1, 6, (200,))
    valid = y[(y >= 0) & (y < 5)]
    for hist in (stats.class_histogram(y, 5).tolist(), stats.scatter_histogram(y, 5).tolist()):
        assert hist == torch.bincount(valid, minlength=5).tolist() and len(y) - sum(hist) == len(y) - len(valid)


def test_value_stats() -> None:
    x = torch.tensor([[0.0, 2.0], [4.0, -2.0]])
    mn, mx, mean, norm = stats.value_stats(x).tolist()
    assert (mn, mx, mean) == (-2.0, 4.0, 1.0)
    assert abs(norm - float(x.square().sum().sqrt())) < 1e-6
    assert stats.value_stats(x, bounds=True).tolist() == [-2.0, 4.0]
    assert abs(stats.std_from_norm(mean, norm, x.numel()) - float(x.std(correction=0))) < 1e-6
    assert math.isnan(stats.std_from_norm(float("nan"), float("nan"), 4))


def test_pack_moves_everything_in_one_copy(monkeypatch) -> None:
    calls = []
    original = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    p = Pack()
    p.add("a", torch.tensor(1.5))
    p.add("b", torch.arange(4))
    p.add("c", torch.tensor([True, False]))
    out = p.fetch()
    assert len(calls) == 0  # on the CPU there is nothing to transfer (an accelerator gets one .cpu() per device)
    assert out == {"a": [1.5], "b": [0, 1, 2, 3], "c": [1.0, 0.0]}
    assert len(p) == 0


def test_accelerator_transfer_is_one_copy(monkeypatch) -> None:
    """The path an accelerator's results take (one .cpu() of a float64 join), exercised on CPU tensors."""
    calls = []
    original = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    groups = [[torch.tensor([1.5]), torch.tensor([2.0, 3.0])], [torch.arange(4), torch.tensor([2**51 + 1])]]
    assert to_host(groups, [1, 2, 4, 1]) == [[1.5], [2.0, 3.0], [0.0, 1.0, 2.0, 3.0], [float(2**51 + 1)]]
    assert len(calls) == 1


def test_channels_first_activations_count_channels_as_units() -> None:
    """A 1-D convolution's (B, C, L) output: C units reduced over L; the same tensor read as (B, T, D) has L."""
    torch.manual_seed(1)
    a = torch.relu(torch.randn(12, 6, 9))
    a[:, 2] = 0  # one dead channel, every position
    _, as_channels = stats.activation_summary([a], channels_first=[True])
    _, as_sequence = stats.activation_summary([a], channels_first=[False])
    assert as_channels.shape == (3, 1) and as_channels[0, 0].item() == 1.0  # one of 6 channels dead
    want = _naive_units(a.transpose(1, 2), 16)  # channels last: the naive reference's unit axis
    assert abs(as_channels[1, 0].item() - want[1]) < 1e-5 and abs(as_channels[2, 0].item() - want[2]) < 1e-5
    assert as_sequence[0, 0].item() == 0.0  # read as 9 positions of 6 features: no position is all zero
