"""An LLM run's token statistics become MLflow metrics, one point per generation request."""

from __future__ import annotations

import pytest
import torch

from torchwitness.integrations.mlflow_export import metric_points
from torchwitness.ledger import iter_records
from torchwitness.probes.generation import GenerationProbe
from torchwitness.report.evidence import Evidence
from torchwitness.run import Run


def test_token_statistics_are_metric_points(tmp_path, tiny_llama):
    with Run(tmp_path / "llm") as run:
        probe = GenerationProbe(run, model_name="tiny-llama")
        for prompt in ([[1, 5, 9]], [[1, 2]]):
            probe.generate(tiny_llama, torch.tensor(prompt), max_new_tokens=4, do_sample=False, eos_token_id=None)
    gens = [r["data"] for r in iter_records(tmp_path / "llm", kinds={"llm.generation"})]
    points = {(k, step): v for k, v, _, step in metric_points(Evidence.load(tmp_path / "llm"))}
    assert points[("llm.perplexity", 0)] == pytest.approx(gens[0]["stats"]["perplexity"])
    assert points[("llm.output_tokens", 1)] == gens[1]["output_tokens"] == 4
    assert {k for k, _ in points} >= {"llm.entropy_mean", "llm.top1_fraction", "llm.input_tokens", "llm.latency_s"}
