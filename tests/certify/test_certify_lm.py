"""Certification of a real (tiny, freshly trained) GPT-2 on Tiny Shakespeare."""

from __future__ import annotations

import math

import torch

import torchwitness as tw
from torchwitness.certify import certify, verify_certificate, weights_digest
from torchwitness.ledger import iter_records, verify_run


def test_the_fixture_model_learned_something(tiny_lm):
    result = certify(tiny_lm.model, tiny_lm.copy(), tokens=tiny_lm.held_out, windows=50, window_length=64,
                     policy="lenient")
    assert result.certificate["statistics"]["totals"]["baseline_ppl"] < 0.6 * 65  # uniform over 65 chars is 65


def test_identical_subject_passes_with_ratio_exactly_one(tiny_lm):
    result = certify(tiny_lm.model, tiny_lm.copy(), tokens=tiny_lm.held_out)
    metrics = result.certificate["statistics"]["metrics"]
    assert result.verdict == "pass" and result.reasons == []
    assert metrics["ppl_ratio"]["estimate"] == 1.0 and metrics["ppl_ratio"]["interval"] == [1.0, 1.0]
    assert metrics["kl"]["estimate"] == 0.0 and metrics["top1_agreement"]["estimate"] == 1.0
    assert metrics["delta_p99"]["estimate"] == 0.0
    assert result.certificate["baseline"]["weights"] == result.certificate["subject"]["weights"]
    verify_certificate(result.certificate)


def test_zeroed_layer_fails_and_diagnostics_name_it_first(tiny_lm):
    subject = tiny_lm.copy()
    with torch.no_grad():
        subject.transformer.h[1].mlp.c_fc.weight.zero_()
    result = certify(tiny_lm.model, subject, tokens=tiny_lm.held_out)
    assert result.verdict == "fail"
    assert any("non-inferiority not shown" in r for r in result.reasons)
    layers = result.certificate["diagnostics"]["layers"]
    assert layers[0]["layer"] == "transformer.h.1.mlp.c_fc.weight"
    assert layers[0]["weight_error"] == 1.0 and layers[0]["spectral_ratio"] == 0.0
    assert layers[0]["outliers_subject"] == 0 < layers[0]["outliers_baseline"]
    assert all(d["weight_error"] == 0.0 for d in layers[1:])
    verify_certificate(result.certificate)


def test_int8_passes_and_is_recorded_signed_and_verifiable(tiny_lm, tmp_path):
    with tw.Run(tmp_path / "run") as run:
        result = certify(tiny_lm.model, edit="quant-int8", tokens=tiny_lm.held_out, run=run,
                         data_source="tinyshakespeare held-out 10%")
    assert result.verdict == "pass", result.reasons
    cert = result.certificate
    assert cert["subject"]["edit"]["bits"] == 8 and cert["subject"]["weights"] != cert["baseline"]["weights"]
    assert cert["run"]["id"] == run.run_id
    assert len(cert["statistics"]["rows"]) == 200 and cert["data"]["windows"]["length"] == 128
    m = cert["statistics"]["metrics"]["ppl_ratio"]
    assert m["interval"][0] <= m["estimate"] <= m["interval"][1] < 1.05 and m["p_value"] < 0.05
    assert all(se >= 0 for se in m["mc_error"])
    records = list(iter_records(tmp_path / "run", kinds={"edit.certificate"}))
    assert len(records) == 1 and records[0]["data"]["certificate"] == result.digest
    assert records[0]["data"]["verdict"] == "pass"
    verify_run(tmp_path / "run", deep=True)
    check = verify_certificate(cert, run=tmp_path / "run", key=run.ledger.public_key.fingerprint)
    assert "ledger record" in check.checks and check.signer == run.ledger.public_key.fingerprint


def test_failed_apply_rolls_back_bit_for_bit(tiny_lm, tmp_path):
    model = tiny_lm.copy()
    before = weights_digest(model)
    with tw.Run(tmp_path / "run") as run:
        result = certify(model, edit="quant-int2", tokens=tiny_lm.held_out, policy="strict", run=run, apply=True,
                         windows=200)
    assert result.verdict == "fail" and result.action == "rolled-back"
    assert weights_digest(model) == before == result.certificate["baseline"]["weights"]
    record = next(iter_records(tmp_path / "run", kinds={"edit.certificate"}))
    assert record["data"]["action"] == "rolled-back"


def test_passing_apply_keeps_the_edit(tiny_lm):
    model = tiny_lm.copy()
    result = certify(model, edit="quant-int8", tokens=tiny_lm.held_out, apply=True)
    assert result.action == "kept" and weights_digest(model) == result.certificate["subject"]["weights"]
    assert not model.training  # it was in eval mode before and stays so


def test_ppl_ratio_is_exp_of_the_mean_token_delta(tiny_lm):
    result = certify(tiny_lm.model, edit="quant-int4", tokens=tiny_lm.held_out, policy="lenient")
    cert = result.certificate
    rows = cert["statistics"]["rows"]
    delta = sum(r["nll_subject"] - r["nll_baseline"] for r in rows) / sum(r["tokens"] for r in rows)
    assert math.isclose(cert["statistics"]["metrics"]["ppl_ratio"]["estimate"], math.exp(delta), rel_tol=1e-12)
    totals = cert["statistics"]["totals"]
    assert math.isclose(totals["subject_ppl"] / totals["baseline_ppl"], math.exp(delta), rel_tol=1e-9)


def test_non_finite_subject_fails_closed(tiny_lm):
    subject = tiny_lm.copy()
    with torch.no_grad():
        subject.transformer.h[0].mlp.c_proj.weight[0, 0] = float("nan")
    result = certify(tiny_lm.model, subject, tokens=tiny_lm.held_out)
    assert result.verdict == "fail"
    assert "invariant: transformer.h.0.mlp.c_proj.weight: non-finite values" in result.reasons
    assert result.certificate["decision"]["holm"] == {"kl": False, "ppl_ratio": False, "top1_agreement": False}
    assert result.certificate["diagnostics"]["layers"][0]["layer"] == "transformer.h.0.mlp.c_proj.weight"
    verify_certificate(result.certificate)


def test_a_second_subject_reuses_the_baselines_forward(tiny_lm):
    from torchwitness.certify.diagnostics import baseline_memo
    from torchwitness.certify.evaluate import baseline_cache

    baseline_cache.clear()
    baseline_memo.clear()
    calls = []
    handle = tiny_lm.model.register_forward_hook(lambda m, *_: calls.append(m is tiny_lm.model))
    try:
        first = certify(tiny_lm.model, edit="quant-int8", tokens=tiny_lm.held_out, windows=60, threads=1)
        n = sum(calls)
        second = certify(tiny_lm.model, edit="quant-int4", tokens=tiny_lm.held_out, windows=60, threads=1)
    finally:
        handle.remove()  # the subjects are deep copies and carry the hook too: count the baseline's calls
    assert n > 1 and sum(calls) == n  # the second certify ran no baseline forward: logits and activations kept
    env = second.certificate["environment"]
    assert env["torch_threads"] == 1 and env["device"] == "cpu"
    rows = first.certificate["statistics"]["rows"], second.certificate["statistics"]["rows"]
    assert [r["nll_baseline"] for r in rows[0]] == [r["nll_baseline"] for r in rows[1]]


def test_two_threads_run_the_models_side_by_side_with_identical_results(tiny_lm):
    """With two threads the baseline and subject forwards run in parallel, one intra-op thread each, so every
    per-window value equals the one-thread run bit for bit (and the baseline cache key says one thread)."""
    from torchwitness.certify.evaluate import baseline_cache

    baseline_cache.clear()
    one = certify(tiny_lm.model, edit="quant-int4", tokens=tiny_lm.held_out, windows=60, threads=1)
    baseline_cache.clear()
    two = certify(tiny_lm.model, edit="quant-int4", tokens=tiny_lm.held_out, windows=60, threads=2)
    assert two.certificate["environment"]["torch_threads"] == 2
    assert one.certificate["statistics"]["rows"] == two.certificate["statistics"]["rows"]
    assert torch.get_num_threads() == 1  # the conftest's setting is restored
