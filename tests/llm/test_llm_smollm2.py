"""Acceptance on a real model (SmolLM2-135M): token statistics equal a separate full forward pass to 1e-5,
for greedy and sampled generation, and no prompt or completion text lands in the run folder or the spans.

The model runs in float64 here. In float32, KV-cached decoding and a full forward pass compute the logits
along different kernel shapes and differ by up to ~4e-5 in the logits on SmolLM2 (measured): that is the
model's own rounding, not the probe's, so the comparison is made where it is far below the tolerance
(``generate`` still hands the probe float32 logits; the probe computes its statistics in float64).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from llm_reference import reference_stats

from torchwitness.integrations.otel_genai import otlp_json
from torchwitness.ledger import verify_run
from torchwitness.probes.agent import AgentTracer
from torchwitness.probes.generation import GenerationProbe
from torchwitness.run import Run

pytestmark = pytest.mark.slow

PROMPT = "Write one sentence about the zebra named Quillonetta who lives at 7 Ravensworth Lane."


@pytest.fixture(scope="module")
def generated(smollm2, tmp_path_factory):
    """Greedy and sampled generations inside agent steps, recorded with default (zero-retention) settings."""
    model, tok = smollm2
    model = model.double()
    run_dir = tmp_path_factory.mktemp("smol") / "run"
    text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                   add_generation_prompt=True)
    inputs = tok(text, return_tensors="pt")
    outs = {}
    with Run(run_dir) as run:
        probe = GenerationProbe(run, model_name="smollm2-135m", tokenizer=tok, keep_tokens=True)
        tracer = AgentTracer(run)
        with tracer.agent("writer", input=PROMPT):
            for mode, kwargs in (("greedy", {"do_sample": False}),
                                 ("sampled", {"do_sample": True, "temperature": 0.8, "top_p": 0.95})):
                torch.manual_seed(0)
                with tracer.model_call("smollm2-135m", input=PROMPT) as chat:
                    seq = probe.generate(model, **inputs, prompt=PROMPT, max_new_tokens=24, **kwargs)
                    chat.output = tok.decode(seq[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
                outs[mode] = (seq, probe.last[0], chat.output)
    return run_dir, model, inputs, outs


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_statistics_equal_a_separate_full_forward(generated, mode):
    _, model, inputs, outs = generated
    seq, record, _ = outs[mode]
    n_prompt = inputs["input_ids"].shape[1]
    n = record["output_tokens"]
    with torch.no_grad():
        logits = model(seq).logits[0, n_prompt - 1:n_prompt - 1 + n].numpy()
    ref = reference_stats(logits, seq[0, n_prompt:n_prompt + n].numpy())
    for field in ("logprob", "entropy", "margin", "rank"):
        np.testing.assert_allclose(record["tokens"][field], ref[field], atol=1e-5, rtol=0, err_msg=field)
    assert record["stats"]["perplexity"] == pytest.approx(float(np.exp(-np.mean(ref["logprob"]))), rel=1e-5)
    if mode == "greedy":
        assert set(record["tokens"]["rank"]) == {1.0}


def test_no_prompt_or_completion_text_in_the_run_folder_or_spans(generated):
    run_dir, _, _, outs = generated
    verify_run(run_dir)
    needles = [PROMPT, "Quillonetta", "Ravensworth"]
    needles += [out for _, _, out in outs.values() if len(out) >= 8]
    needles += [w for _, _, out in outs.values() for w in out.split() if len(w) >= 9 and w.isalpha()]
    spans = json.dumps(otlp_json(run_dir), ensure_ascii=False)
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name == "personal.sqlite" for p in files)
    for needle in needles:
        for p in files:
            assert needle.encode() not in p.read_bytes(), f"{needle!r} found in {p}"
        assert needle not in spans


def test_the_demo_cache_holds_the_same_model(smollm2, tmp_path, monkeypatch):
    """The demo's converted copy of SmolLM2 (safetensors) has the GGUF load's weights, logits and tokenizer."""
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from torchwitness.demo import smollm2 as demo_smollm2

    model, tok = smollm2
    # another test here casts the shared model to float64 in place; float32 -> 64 -> 32 is exact (and .float()
    # is refused for a model loaded through the GGUF quantizer)
    model = copy.deepcopy(model)
    for tensor in (*model.parameters(), *model.buffers()):
        tensor.data = tensor.data.float()
    monkeypatch.setenv("TORCHWITNESS_CACHE", str(tmp_path))
    folder = demo_smollm2.cache_dir(demo_smollm2.gguf_path())
    assert folder.parent == tmp_path and folder.name.startswith("smollm2-135m-instruct-")
    demo_smollm2._save(model, tok, tmp_path / "copy")
    cached = AutoModelForCausalLM.from_pretrained(tmp_path / "copy", dtype="float32").eval()
    cached_tok = AutoTokenizer.from_pretrained(tmp_path / "copy")
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    assert torch.equal(cached_tok(PROMPT, return_tensors="pt")["input_ids"], ids)
    assert cached_tok.chat_template == tok.chat_template
    original, copied = model.state_dict(), cached.state_dict()
    assert original.keys() == copied.keys() and all(torch.equal(original[k], copied[k]) for k in original)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, cached(ids).logits)
