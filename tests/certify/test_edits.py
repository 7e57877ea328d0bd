from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from torchwitness.certify.edits import (
    Edit,
    EditSession,
    apply_edit,
    editable_weights,
    prune_magnitude_,
    quantize_rtn_,
    weights_digest,
)
from torchwitness.errors import InputError


def naive_rtn(w: torch.Tensor, bits: int, group: int | None) -> torch.Tensor:
    """Row by row, group by group, with Python loops: the reference for the vectorised quantizer."""
    qmax = 2 ** (bits - 1) - 1
    out = w.clone().reshape(w.shape[0], -1)
    g = out.shape[1] if group is None else group
    for r, start in itertools.product(range(out.shape[0]), range(0, out.shape[1], g)):
        block = out[r, start:start + g]
        scale = float(block.abs().max()) / qmax or 1.0
        out[r, start:start + g] = torch.clamp(torch.round(block / scale), -qmax, qmax) * scale
    return out.reshape(w.shape)


@pytest.mark.parametrize(("bits", "group"), [(8, None), (4, None), (4, 16), (3, 7)])
def test_rtn_matches_naive_reference(bits, group):
    w = torch.randn(12, 40, generator=torch.Generator().manual_seed(bits))
    w[3] = 0  # an all-zero row stays zero
    expected = naive_rtn(w, bits, group)
    got = quantize_rtn_(w.clone(), bits, group)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    for row, ref in zip(got, w, strict=True):  # each group uses at most 2 * qmax + 1 grid levels
        assert len(torch.unique(row[: group or 40])) <= 2 ** bits - 1
        assert torch.all((row == 0) | (torch.sign(row) == torch.sign(ref)))


def test_prune_zeroes_the_smallest_half():
    w = torch.randn(10, 10, generator=torch.Generator().manual_seed(0))
    pruned = prune_magnitude_(w.clone(), 0.5)
    assert int((pruned == 0).sum()) == 50
    assert pruned.abs().max() == w.abs().max()
    assert w.abs()[pruned == 0].max() <= w.abs()[pruned != 0].min()


def test_gpt2_conv1d_is_quantized_per_output_channel_and_embeddings_are_left_alone(tiny_lm):
    model = tiny_lm.copy()
    names = [n for n, _, _ in editable_weights(model)]
    assert "transformer.wte.weight" not in names and "lm_head.weight" not in names
    assert "transformer.h.0.mlp.c_fc.weight" in names
    before = model.transformer.h[0].mlp.c_fc.weight.detach().clone()  # Conv1D: [in, out]
    wte = model.transformer.wte.weight.detach().clone()
    apply_edit(model, "quant-int8")
    after = model.transformer.h[0].mlp.c_fc.weight.detach()
    torch.testing.assert_close(after, naive_rtn(before.t(), 8, None).t(), rtol=0, atol=1e-6)
    assert torch.equal(model.transformer.wte.weight, wte)
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied


def test_rollback_restores_bit_for_bit():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    digest = weights_digest(model)
    with EditSession(model) as session:
        apply_edit(model, "prune-50")
        assert weights_digest(model) != digest
        assert session.rollback() == digest
    assert weights_digest(model) == digest


def test_leaving_a_session_without_a_decision_rolls_back():
    model = nn.Linear(4, 4)
    digest = weights_digest(model)
    with pytest.raises(RuntimeError), EditSession(model):
        apply_edit(model, "quant-int4")
        raise RuntimeError("evaluation crashed")
    assert weights_digest(model) == digest


@pytest.mark.parametrize("spec", ["quant-int9", "quant-int4-g0", "prune-100", "int8", ""])
def test_unknown_edits_are_refused(spec):
    with pytest.raises(InputError):
        Edit.parse(spec)


def test_edit_descriptions():
    assert Edit.parse("quant-int4-g32").describe()["granularity"] == "group-32"
    assert Edit.parse("prune-50").sparsity == 0.5
