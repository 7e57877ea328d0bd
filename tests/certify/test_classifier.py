"""The classifier path: paired accuracy difference, McNemar, and the demo stage that uses it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

import torchwitness as tw
from torchwitness.certify import certify, verify_certificate
from torchwitness.certify.stats import mcnemar_exact
from torchwitness.ledger import iter_records, verify_run


@pytest.fixture(scope="module")
def classifier():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 10, generator=gen)
    w = torch.randn(10, generator=gen)
    y = ((x @ w + 0.5 * torch.randn(20_000, generator=gen)) > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(x[:8000]), y[:8000])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, x[8000:], y[8000:]


def test_identical_classifier_passes_with_zero_difference(classifier):
    model, x, y = classifier
    result = certify(model, copy.deepcopy(model), inputs=x, labels=y, policy="balanced")
    m = result.certificate["statistics"]["metrics"]
    assert result.verdict == "pass"
    assert m["accuracy_delta"]["estimate"] == 0.0 and m["accuracy_delta"]["interval"] == [0.0, 0.0]
    assert m["mcnemar"]["p_value"] == 1.0 and m["prediction_agreement"]["estimate"] == 1.0


def test_counts_and_mcnemar_match_an_independent_computation(classifier):
    model, x, y = classifier
    result = certify(model, edit="quant-int2", inputs=x, labels=y, policy="balanced")
    from torchwitness.certify.edits import apply_edit

    subject = copy.deepcopy(model)
    apply_edit(subject, "quant-int2")
    with torch.no_grad():
        right_b = (model(x).argmax(1) == y).numpy()
        right_s = (subject(x).argmax(1) == y).numpy()
    b, c = int(np.sum(right_b & ~right_s)), int(np.sum(~right_b & right_s))
    m = result.certificate["statistics"]["metrics"]
    assert (m["mcnemar"]["baseline_only"], m["mcnemar"]["subject_only"]) == (b, c)
    assert m["mcnemar"]["p_value"] == pytest.approx(mcnemar_exact(b, c))
    assert m["accuracy_delta"]["estimate"] == pytest.approx(right_s.mean() - right_b.mean(), abs=1e-12)
    assert result.certificate["data"]["clusters"] == {"count": 120, "size": 100, "examples": 12000,
                                                      "selection": "consecutive blocks in the given order"}
    verify_certificate(result.certificate)


def test_too_few_clusters_fail_closed(classifier):
    model, x, y = classifier
    result = certify(model, copy.deepcopy(model), inputs=x[:500], labels=y[:500], policy="balanced")
    assert result.verdict == "fail"
    assert result.reasons[0].startswith("insufficient evidence: 5 windows < 100 required")


def test_demo_stage_writes_both_certificates_into_the_run(classifier, tmp_path):
    from torchwitness.demo.certify import certify_stage

    model, x, y = classifier
    with tw.Run(tmp_path / "run") as run:
        verdicts = certify_stage(run, model, x, y, Console(file=open("/dev/null", "w")))  # noqa: SIM115
    assert set(verdicts) == {"quant-int8", "quant-int4"} and verdicts["quant-int8"] == "pass"
    records = list(iter_records(tmp_path / "run", kinds={"edit.certificate"}))
    assert [r["data"]["edit"] for r in records] == ["quant-int8", "quant-int4"]
    verify_run(tmp_path / "run")
    for edit in verdicts:
        check = verify_certificate(tmp_path / "run" / "certificates" / f"{edit}.json", run=tmp_path / "run")
        assert check.verdict == verdicts[edit]
