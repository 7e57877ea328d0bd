from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchwitness.certify.diagnostics import invariants, mp_outliers, spectral_norms, tied_groups


def test_power_iteration_matches_the_svd():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(96, 40, generator=gen)
    b = a.clone()
    b[:, 0] *= 3  # a different top singular value
    sa, sb = spectral_norms(a, b)
    assert sa == pytest.approx(float(torch.linalg.matrix_norm(a, ord=2)), rel=1e-4)
    assert sb == pytest.approx(float(torch.linalg.matrix_norm(b, ord=2)), rel=1e-4)


def test_marchenko_pastur_outliers_match_a_direct_svd():
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(200, 80, generator=gen) * 0.1
    spikes = sum(s * torch.outer(torch.randn(200, generator=gen), torch.randn(80, generator=gen)) / math.sqrt(16000)
                 for s in (40.0, 25.0, 15.0))
    base = noise + spikes
    subj = noise.clone()
    edge = float(base.std()) * (math.sqrt(200) + math.sqrt(80))
    direct = [int((torch.linalg.svdvals(w) > edge).sum()) for w in (base, subj)]
    assert mp_outliers(base, subj) == tuple(direct)
    assert direct[0] >= 1 and direct[1] == 0  # the subject lost the structure the baseline had
    assert mp_outliers(base, None) == (direct[0], direct[0])


def test_invariants_catch_shape_dtype_nan_and_untied_weights():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

    base, subj = Tied(), Tied()
    assert tied_groups(base) == [["emb.weight", "out.weight"]]
    assert invariants(base, subj)[1] == []
    subj.out.weight = nn.Parameter(base.emb.weight.detach().clone())  # untied
    with torch.no_grad():
        subj.emb.weight[0, 0] = float("nan")
    record, bad = invariants(base, subj)
    assert record["violations"] == bad
    assert any("non-finite" in b for b in bad) and any("tied weights differ" in b for b in bad)
    assert any("parameter count" in b for b in bad)
    half = Tied().half()
    assert any("dtype" in b for b in invariants(base, half)[1])
